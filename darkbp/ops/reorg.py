"""The permutations of Darknet's [reorg] (pjreddie/darknet `reorg_cpu` and `flatten`, src/blas.c).

`reorg_cpu(x, w, h, c, batch, s, forward, out)`, called by pjreddie's [reorg] with the
layer's INPUT sizes, reads or writes a (C/s², H·s, W·s) array A through a (C, H, W) array B:

    B[o·C/s² + c2, j, i]  <->  A[c2, j·s + o div s, i·s + o mod s]     o < s², c2 < C/s²

`depth_to_space` is B -> A (reorg_cpu forward=1, [reorg] reverse=1), `space_to_depth`
A -> B (forward=0). The plain [reorg] (reverse=0, the YOLOv2 passthrough) is
space_to_depth of the input's memory read as A, i.e. as C/s² channels of (H·s) × (W·s)
pixels, its result's memory then read as (C·s², H/s, W/s): not the usual per-channel
space-to-depth (AlexeyAB's fork passes the output sizes and gets that one).

AlexeyAB's [reorg3d] (its reorg_layer.c) calls the same reorg_cpu with the OUTPUT sizes:
reverse=0 is then space_to_depth of x itself, and reverse=1 depth_to_space of x's memory
read as (C/s², H·s, W·s), its result's memory read as (C/s², H·s, W·s) (`reorg3d_forward`).

`flatten(x, size, layers, ...)` moves an image between channel-major (C, H·W) and
pixel-major (H·W, C) memory. All functions take (N, ...) batches in any memory layout
(reshape works on the logical C order) and return new C-contiguous arrays.
"""

from __future__ import annotations

import numpy as np


def depth_to_space(b: np.ndarray, s: int) -> np.ndarray:
    """b: (N, C, H, W), C a multiple of s² -> a: (N, C/s², H·s, W·s)."""
    n, c, h, w = b.shape
    small = c // (s * s)
    # (N, oy, ox, c2, H, W) -> (N, c2, H, oy, W, ox): channel o·C/s² + c2, o = oy·s + ox
    six = b.reshape(n, s, s, small, h, w).transpose(0, 3, 4, 1, 5, 2)
    return six.reshape(n, small, h * s, w * s)


def space_to_depth(a: np.ndarray, s: int) -> np.ndarray:
    """a: (N, C', H', W'), s dividing H' and W' -> b: (N, C'·s², H'/s, W'/s); inverse of
    depth_to_space."""
    n, small, hs, ws = a.shape
    six = a.reshape(n, small, hs // s, s, ws // s, s).transpose(0, 3, 5, 1, 2, 4)
    return six.reshape(n, small * s * s, hs // s, ws // s)


def reorg_forward(x: np.ndarray, stride: int, reverse: bool,
                  out_shape: tuple[int, int, int]) -> np.ndarray:
    """x: (N, C, H, W) -> (N, *out_shape): (C·s², H/s, W/s), or reversed (C/s², H·s, W·s)."""
    n, c, h, w = x.shape
    if reverse:
        return depth_to_space(x, stride)
    as_a = x.reshape(n, c // (stride * stride), h * stride, w * stride)
    return space_to_depth(as_a, stride).reshape((n,) + out_shape)


def reorg_backward(dy: np.ndarray, stride: int, reverse: bool,
                   in_shape: tuple[int, int, int]) -> np.ndarray:
    """dy: (N, *out_shape) -> dx: (N, *in_shape), the inverse permutation (its adjoint)."""
    n = dy.shape[0]
    if reverse:
        return space_to_depth(dy, stride)
    return depth_to_space(dy.reshape((n,) + in_shape), stride).reshape((n,) + in_shape)


def reorg3d_forward(x: np.ndarray, stride: int, reverse: bool) -> np.ndarray:
    """AlexeyAB's [reorg3d]. x: (N, C, H, W) -> (N, C·s², H/s, W/s) (space_to_depth), or
    reversed (N, C/s², H·s, W·s), C a multiple of s⁴."""
    n, c, h, w = x.shape
    s = stride
    if not reverse:
        return space_to_depth(x, s)
    as_b = x.reshape(n, c // (s * s), h * s, w * s)             # reorg_cpu's "in" array
    return depth_to_space(as_b, s).reshape(n, c // (s * s), h * s, w * s)


def reorg3d_backward(dy: np.ndarray, stride: int, reverse: bool) -> np.ndarray:
    """dy: reorg3d_forward's output shape -> dx: its input's, the inverse permutation."""
    n, c, h, w = dy.shape
    s = stride
    if not reverse:
        return depth_to_space(dy, s)
    as_a = dy.reshape(n, c // (s * s), h * s, w * s)            # reorg_cpu's "out" array
    return space_to_depth(as_a, s).reshape(n, c * s * s, h // s, w // s)


def flatten(x: np.ndarray, image: tuple[int, int, int], pixel_major: bool) -> np.ndarray:
    """x: (N, ...) holding images of C·H·W values, image = (C, H, W) -> (N, C·H·W).

    pixel_major=True moves each image from channel-major memory (C, H·W) to pixel-major
    (H·W, C) (Darknet's flatten forward=1); False is the inverse (forward=0)."""
    c, h, w = image
    rows = (c, h * w) if pixel_major else (h * w, c)
    return x.reshape((x.shape[0],) + rows).transpose(0, 2, 1).reshape(x.shape[0], -1)
