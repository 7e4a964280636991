"""Locally connected 2-D layer: a convolution with its own weights at every output position.

With l = oh·OW + ow an output location (L = OH·OW of them), k = (c, ki, kj) a row of
im2col's columns (K = C·size·size, Darknet's order) and cols the columns of the input
zero-padded by `pad` pixels (im2col.py, CHWN: (K, L, N)), every product is one
`np.matmul` batched over the L locations, never a Python loop over locations or images:

    y[:, l]     = W[l] @ cols[:, l] + b[:, l]       (F, K) @ (K, N)  -> (F, N)
    dW[l]       = dy[:, l] @ cols[:, l]ᵀ            (F, N) @ (N, K)  -> (F, K)
    db[:, l]    = Σ_n dy[:, l, n]
    dcols[:, l] = W[l]ᵀ @ dy[:, l]                  (K, F) @ (F, N)  -> (K, N), then col2im

Weights are (OH, OW, F, C, size, size): at each location a bank of F filters in
[convolutional]'s layout, and in C order exactly Darknet's `.weights` block (L
matrices of F × K). Biases are (F, OH, OW), one per output value, as Darknet's.

The columns are always CHWN, (C, size, size, OH, OW, N): location l's (K, N) block is
then a strided matrix BLAS takes as it is (rows L·N apart); in NCHW columns, (N, K, L),
neither of its axes is contiguous.  y and dx come back CHWN too (ops/layout.py).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from darkbp.ops.im2col import col2im, conv_out_size, im2col
from darkbp.ops.layout import as_nchw, ordered


class LocalCache(NamedTuple):
    """What local_backward needs from local_forward."""

    cols: np.ndarray         # (K, L, N): the padded input's columns
    x_shape: tuple           # (N, C, H, W)
    stride: int
    pad: int


def _check(x: np.ndarray, weights: np.ndarray, biases: np.ndarray, stride: int,
           pad: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"local input must be (N, C, H, W), got shape {x.shape}")
    if weights.ndim != 6 or weights.shape[4] != weights.shape[5]:
        raise ValueError(f"local weights must be (OH, OW, F, C, size, size), got {weights.shape}")
    out_h, out_w, f, c, size, _ = weights.shape
    if x.shape[1] != c:
        raise ValueError(f"local weights {weights.shape} do not fit {x.shape[1]} channels")
    if biases.shape != (f, out_h, out_w):
        raise ValueError(f"local biases must be {(f, out_h, out_w)}, got {biases.shape}")
    if not x.dtype == weights.dtype == biases.dtype:
        raise ValueError(f"local input, weights and biases are {x.dtype}, {weights.dtype}, "
                         f"{biases.dtype}")
    if stride < 1 or pad < 0:
        raise ValueError(f"bad stride={stride} or pad={pad}")
    _, _, h, w = x.shape
    grid = (conv_out_size(h, size, stride, pad), conv_out_size(w, size, stride, pad))
    if grid != (out_h, out_w):
        raise ValueError(f"a {size}x{size} kernel, stride {stride}, pad {pad} on {h}x{w} has "
                         f"{grid[0]}x{grid[1]} windows, the weights {out_h}x{out_w} locations")


def local_forward(x: np.ndarray, weights: np.ndarray, biases: np.ndarray, stride: int,
                  pad: int) -> tuple[np.ndarray, LocalCache]:
    """x (N, C, H, W), stored in any layout -> (y (N, F, OH, OW) stored CHWN, cache).

    weights (OH, OW, F, C, size, size), biases (F, OH, OW); x is zero-padded by `pad`
    pixels on every side and OH, OW must be the number of windows that gives.
    """
    _check(x, weights, biases, stride, pad)
    out_h, out_w, f, c, size, _ = weights.shape
    n = x.shape[0]
    locations = out_h * out_w
    cols = im2col(ordered(x, "CHWN"), size, stride, pad, out_h, out_w, "CHWN")
    cols = cols.reshape(c * size * size, locations, n)                  # (K, L, N)
    y = np.empty((f, locations, n), x.dtype)                             # (F, L, N): CHWN
    np.matmul(weights.reshape(locations, f, -1), cols.transpose(1, 0, 2),
              out=y.transpose(1, 0, 2))                                  # (L, F, K) @ (L, K, N)
    y += biases.reshape(f, locations, 1)
    return (as_nchw(y.reshape(f, out_h, out_w, n), "CHWN"),
            LocalCache(cols, x.shape, stride, pad))


def local_backward(dy: np.ndarray, cache: LocalCache, weights: np.ndarray,
                   need_dx: bool = True) -> tuple:
    """Gradients of a loss L given dy = ∂L/∂y (N, F, OH, OW), stored in any layout.

    Returns (dx, dweights, dbiases): dx = ∂L/∂x (N, C, H, W) stored CHWN, or None
    when need_dx is False; dweights (OH, OW, F, C, size, size) and dbiases
    (F, OH, OW), summed over the batch.
    """
    n, c, h, w = cache.x_shape
    out_h, out_w, f, _, size, _ = weights.shape
    if dy.shape != (n, f, out_h, out_w):
        raise ValueError(f"local dy has shape {dy.shape}, expected {(n, f, out_h, out_w)}")
    locations = out_h * out_w
    dyl = ordered(dy, "CHWN").reshape(f, locations, n)                  # (F, L, N)
    dyt = dyl.transpose(1, 0, 2)                                         # (L, F, N)
    dweights = np.matmul(dyt, cache.cols.transpose(1, 2, 0))             # (L, F, N) @ (L, N, K)
    dbiases = dyl.sum(axis=2).reshape(f, out_h, out_w)
    grads = (dweights.reshape(weights.shape), dbiases)
    if not need_dx:
        return (None, *grads)
    dcols = np.empty((c * size * size, locations, n), dy.dtype)          # (K, L, N)
    np.matmul(weights.reshape(locations, f, -1).transpose(0, 2, 1), dyt,
              out=dcols.transpose(1, 0, 2))                              # (L, K, F) @ (L, F, N)
    dx = col2im(dcols.reshape(c, size, size, out_h, out_w, n), (c, h, w, n), cache.stride,
                cache.pad, "CHWN")
    return (as_nchw(dx, "CHWN"), *grads)
