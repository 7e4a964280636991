"""Depthwise convolution (one input channel per group), forward and backward, without columns.

x: C channels, each its own group of Fg = F/C filters; weights (F, 1, size, size);
filter f = g·Fg + k reads channel g.  Per kernel offset (i, j), the output window whose
taps fall inside the input reads a strided view of x (im2col.py's `_taps`, so the zero
padding is never materialised):

    y[.., g, k, o]   += w[g, k, i, j] · x[.., g, o·stride − padding + (i, j)]
    dW[g, k, i, j]    = Σ_(images, o) dy[.., g, k, o] · x[.., g, o·stride − padding + (i, j)]
    dx[.., g, taps]  += Σ_k w[g, k, i, j] · dy[.., g, k, o]

That is size² multiply-adds over the output per direction, where im2col + GEMM copies
size² shifted versions of the input, multiplies with a 1-row matrix per group and
scatters them back (col2im).  conv.py runs it for stride 1 and Fg <= DIRECT_FILTERS,
where it measured faster (1 thread, batch 64, CHWN, 3x3 pad 1: 32 channels at 14x14
forward 1.1 against 1.7 ms, backward 2.2 against 3.0; 16 channels at 28x28 2.0 against
3.7 and 4.8 against 5.9).  With stride 2 its strided views cost more than the GEMM's
columns (cfg/grouped.cfg's layer 3: 0.50 against 0.29 ms forward), and with many
filters per channel (a 1-channel network's first layer) the GEMM wins too.

Arrays are in a layout's axis order (layout.py): (N, C, H, W) or (C, H, W, N).
"""

from __future__ import annotations

import numpy as np

from darkbp.ops.im2col import _taps
from darkbp.ops.layout import SPATIAL_AXES, spatial_index

DIRECT_FILTERS = 2    # filters per channel up to which the direct kernel runs


def _grouped(a: np.ndarray, layout: str, groups: int) -> np.ndarray:
    """(.., F, ..) in layout order -> the view with F split into (G, Fg)."""
    axis = 1 if layout == "NCHW" else 0
    return a.reshape(a.shape[:axis] + (groups, -1) + a.shape[axis + 1:])


def _tap_index(layout: str, rows, cols) -> tuple:
    """An index of a (G, Fg)-split array: every group and filter, these rows and columns."""
    index = spatial_index(layout, rows, cols)
    axis = 1 if layout == "NCHW" else 0
    return index[:axis + 1] + (slice(None),) + index[axis + 1:]


def _weights(weights: np.ndarray, groups: int, layout: str, i: int, j: int) -> np.ndarray:
    """w[:, 0, i, j] as (G, Fg), broadcast against a (G, Fg)-split array in layout order."""
    w = weights[:, 0, i, j].reshape(groups, -1)
    return w[:, :, None, None] if layout == "NCHW" else w[:, :, None, None, None]


def depthwise_forward(xl: np.ndarray, weights: np.ndarray, stride: int, padding: int,
                      out_h: int, out_w: int, layout: str, dilation: int = 1) -> np.ndarray:
    """y (N, F, OH, OW) in layout order from x (N, C, H, W) in layout order, C groups
    (kernel taps `dilation` pixels apart)."""
    groups, size = xl.shape[1 if layout == "NCHW" else 0], weights.shape[2]
    fg = weights.shape[0] // groups
    ha, wa = SPATIAL_AXES[layout]
    shape = list(xl.shape)
    shape[ha], shape[wa] = out_h, out_w
    shape.insert(2 if layout == "NCHW" else 1, fg)             # (.., G, Fg, ..)
    y = np.zeros(shape, xl.dtype)
    x = xl[:, :, None] if layout == "NCHW" else xl[:, None]
    scratch = np.empty_like(y)
    for i, (out_rows, in_rows) in enumerate(_taps(size, stride, padding, xl.shape[ha], out_h,
                                                  dilation)):
        for j, (out_cols, in_cols) in enumerate(_taps(size, stride, padding, xl.shape[wa],
                                                      out_w, dilation)):
            target = _tap_index(layout, out_rows, out_cols)
            product = np.multiply(x[_tap_index(layout, in_rows, in_cols)],
                                  _weights(weights, groups, layout, i, j), out=scratch[target])
            y[target] += product
    split = 1 if layout == "NCHW" else 0                       # (G, Fg) back to F
    return y.reshape(y.shape[:split] + (-1,) + y.shape[split + 2:])


def depthwise_backward(dyl: np.ndarray, xl: np.ndarray, weights: np.ndarray, stride: int,
                       padding: int, layout: str, need_dx: bool = True, dilation: int = 1):
    """(dx in layout order or None, dweights (F, 1, size, size)) from dy in layout order."""
    groups, size = xl.shape[1 if layout == "NCHW" else 0], weights.shape[2]
    ha, wa = SPATIAL_AXES[layout]
    out_h, out_w = dyl.shape[ha], dyl.shape[wa]
    dy = _grouped(dyl, layout, groups)                         # (.., G, Fg, ..)
    x = xl[:, :, None] if layout == "NCHW" else xl[:, None]
    dweights = np.empty(weights.shape, dyl.dtype)
    dx = np.zeros(xl.shape, dyl.dtype) if need_dx else None
    sums = "ngkhw,ngkhw->gk" if layout == "NCHW" else "gkhwn,gkhwn->gk"
    fg = weights.shape[0] // groups
    for i, (out_rows, in_rows) in enumerate(_taps(size, stride, padding, xl.shape[ha], out_h,
                                                  dilation)):
        for j, (out_cols, in_cols) in enumerate(_taps(size, stride, padding, xl.shape[wa],
                                                      out_w, dilation)):
            taps = _tap_index(layout, in_rows, in_cols)
            dy_tap = dy[_tap_index(layout, out_rows, out_cols)]
            dweights[:, 0, i, j] = np.einsum(sums, dy_tap,
                                             np.broadcast_to(x[taps], dy_tap.shape)).reshape(-1)
            if need_dx:
                contribution = dy_tap * _weights(weights, groups, layout, i, j)
                filters = 2 if layout == "NCHW" else 1                  # the Fg axis
                dx[spatial_index(layout, in_rows, in_cols)] += (
                    contribution.sum(axis=filters) if fg > 1
                    else contribution.squeeze(axis=filters))
    return dx, dweights
