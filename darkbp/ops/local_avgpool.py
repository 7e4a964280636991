"""AlexeyAB's local average pooling ([local_avgpool]), forward and backward.

Semantics (AlexeyAB/darknet src/maxpool_layer.c, forward_local_avgpool_layer): windows
laid out as [maxpool]'s, out = (H + padding − size)//stride_y + 1 (likewise W with
stride_x); window (oh, ow) covers rows −(padding//2) + oh·stride_y + [0, size) and the
columns likewise. Its output is the mean of the window's cells that lie inside the input
(cuDNN's "count exclude padding"); a window must hold at least one such cell.

    y = local_avgpool_forward(x, size, stride_y, stride_x, padding, out_shape)   # (N, C, OH, OW)
    dx = local_avgpool_backward(dy, size, stride_y, stride_x, padding, in_shape)

The window sum is a loop over the size² offsets of whole strided views of the zero-padded
input, in row-major window order, as AlexeyAB adds them (float32 sums round alike). The
backward is the exact adjoint: each window's dy / count back to each of its inside cells.
AlexeyAB's own backwards are not: its CPU gives every inside cell dy / size², its GPU gives
each input cell the mean of the dy of the outputs near it.
"""

from __future__ import annotations

import numpy as np


def _zero_padded(n: int, c: int, in_hw, out_hw, size: int, stride_y: int, stride_x: int,
                 top: int, dtype) -> np.ndarray:
    """Zeros (N, C, Hp, Wp) that hold the input at [top:top + H, top:top + W] and every
    window, the last one hanging over the far edge included."""
    (h, w), (out_h, out_w) = in_hw, out_hw
    return np.zeros((n, c, max(top + h, (out_h - 1) * stride_y + size),
                     max(top + w, (out_w - 1) * stride_x + size)), dtype)


def window_counts(in_hw: tuple[int, int], out_hw: tuple[int, int], size: int, stride_y: int,
                  stride_x: int, padding: int) -> np.ndarray:
    """(OH, OW) int: how many cells of each window lie inside the H × W input."""
    top = padding // 2

    def inside(size_in, out, stride):                    # per window along one axis
        start = np.arange(out) * stride - top
        return np.clip(start + size, 0, size_in) - np.clip(start, 0, size_in)

    (h, w), (out_h, out_w) = in_hw, out_hw
    return np.outer(inside(h, out_h, stride_y), inside(w, out_w, stride_x))


def _taps(padded: np.ndarray, size: int, stride_y: int, stride_x: int, out_h: int, out_w: int):
    """Yield the size² strided views (N, C, OH, OW) of `padded`, one per window offset, in
    row-major window order."""
    for i in range(size):
        for j in range(size):
            yield padded[:, :, i:i + stride_y * (out_h - 1) + 1:stride_y,
                         j:j + stride_x * (out_w - 1) + 1:stride_x]


def local_avgpool_forward(x: np.ndarray, size: int, stride_y: int, stride_x: int,
                          padding: int, out_hw: tuple[int, int]) -> np.ndarray:
    """x (N, C, H, W), any layout -> y (N, C, OH, OW), a new C-contiguous array."""
    n, c, h, w = x.shape
    out_h, out_w = out_hw
    top = padding // 2
    padded = _zero_padded(n, c, (h, w), out_hw, size, stride_y, stride_x, top, x.dtype)
    padded[:, :, top:top + h, top:top + w] = x
    y = np.zeros((n, c, out_h, out_w), x.dtype)
    for tap in _taps(padded, size, stride_y, stride_x, out_h, out_w):
        y += tap
    counts = window_counts((h, w), out_hw, size, stride_y, stride_x, padding)
    y /= counts.astype(x.dtype)
    return y


def local_avgpool_backward(dy: np.ndarray, size: int, stride_y: int, stride_x: int,
                           padding: int, in_shape: tuple[int, int, int]) -> np.ndarray:
    """dy (N, C, OH, OW) -> dx (N, *in_shape): each window's dy / count to its inside cells."""
    n, c, out_h, out_w = dy.shape
    _, h, w = in_shape
    top = padding // 2
    counts = window_counts((h, w), (out_h, out_w), size, stride_y, stride_x, padding)
    share = dy / counts.astype(dy.dtype)
    padded = _zero_padded(n, c, (h, w), (out_h, out_w), size, stride_y, stride_x, top,
                          dy.dtype)
    for tap in _taps(padded, size, stride_y, stride_x, out_h, out_w):
        tap += share                                     # a view into padded
    return np.ascontiguousarray(padded[:, :, top:top + h, top:top + w])
