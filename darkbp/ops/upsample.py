"""Darknet's [upsample] kernels (upsample_cpu, pjreddie/darknet src/blas.c): nearest-neighbour
enlargement and block sums, each the adjoint of the other.

    nearest(x, s, scale):   (N, C, H, W) -> (N, C, H·s, W·s), each value copied to an s×s block
    block_sum(y, s, scale): (N, C, H·s, W·s) -> (N, C, H, W), each s×s block summed

both times scale. [upsample] stride=s > 0 is nearest forward, block_sum backward; a
negative stride (Darknet's "downsample") the other way round. Inputs may be in any
memory layout: splitting an axis in two is always a view, so no copy is made.
"""

from __future__ import annotations

import numpy as np

from darkbp.ops.layout import stored_like


def nearest(x: np.ndarray, s: int, scale: float) -> np.ndarray:
    """x: (N, C, H, W) -> (N, C, H·s, W·s): y[n, c, j, i] = scale·x[n, c, j div s, i div s],
    stored as x is (see layout.py)."""
    n, c, h, w = x.shape
    y = stored_like((n, c, h * s, w * s), x)
    # (N, C, H, 1, W, 1) broadcast over the block's (s, s) axes of y seen as (N, C, H, s, W, s)
    np.multiply(x[:, :, :, None, :, None], x.dtype.type(scale),
                out=y.reshape(n, c, h, s, w, s))
    return y


def block_sum(y: np.ndarray, s: int, scale: float) -> np.ndarray:
    """y: (N, C, H·s, W·s) -> (N, C, H, W): x[n, c, j, i] = scale·Σ y's s×s block at (j, i)."""
    n, c, hs, ws = y.shape
    x = y.reshape(n, c, hs // s, s, ws // s, s).sum(axis=(3, 5))
    x *= x.dtype.type(scale)
    return x
