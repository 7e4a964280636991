"""Darknet's max pooling, forward and backward.

Semantics (maxpool_layer.c): out = (H + padding − size)//stride + 1; window
(oh, ow) covers rows −(padding//2) + oh·stride + [0, size) and likewise for
columns; a cell outside the input counts as −∞; on ties the first maximum in
row-major window order wins, and only it receives gradient.  A window lying
wholly outside the input outputs −∞ and passes no gradient.

The max over a size×size window is taken in two separable passes, along W
then along H, each a loop over `size` offsets of whole strided views:

    rowmax[n, c, r, ow] = max_j  x[n, c, r, ow·s + j]          (first j on ties)
    y[n, c, oh, ow]     = max_i  rowmax[n, c, oh·s + i, ow]    (first i on ties)

The passes work on x as it is stored, NCHW or CHWN (layout.py), and y keeps
that layout; in CHWN every strided view moves runs of N values, not of one.

The winner is the first row holding the window maximum and, in that row, the
first column holding it: exactly the first maximum in row-major order.  Each
pass stores the index of its winner (uint8), and backward routes dy back
through the two passes.  Everything is branch-free arithmetic (masks
multiplied, not selected): NumPy's masked selects are several times slower on
data whose winners are random.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from darkbp.ops.layout import SPATIAL_AXES, as_nchw, layout_of, ordered, spatial_index


class MaxpoolCache(NamedTuple):
    """What maxpool_backward needs from maxpool_forward."""

    x_shape: tuple           # (N, C, H, W) in layout order: (N, C, H, W) or (C, H, W, N)
    padded_shape: tuple      # (N, C, Hp, Wp), layout order: the −∞-padded input the windows run over
    top: int                 # padding//2: where x starts inside the padded input
    size: int
    stride: int
    col_winner: np.ndarray   # (N, C, Hp, OW), layout order: j of each row's maximum (_max_pass)
    row_winner: np.ndarray   # (N, C, OH, OW), layout order: i of each window's maximum row
    layout: str              # x's layout, and y's and dx's


def maxpool_out_size(size_in: int, size: int, stride: int, padding: int) -> int:
    """Darknet's max-pool output size: (in + padding − size)//stride + 1."""
    return (size_in + padding - size) // stride + 1


def _window_view(a: np.ndarray, axis: int, offset: int, stride: int, count: int) -> np.ndarray:
    index = [slice(None)] * a.ndim
    index[axis] = slice(offset, offset + stride * (count - 1) + 1, stride)
    return a[tuple(index)]


def _max_pass(a: np.ndarray, axis: int, size: int, stride: int, count: int):
    """Max over `size` taps along `axis` at `count` positions; (max, index of the first max).

    The index is a bool (is it the second tap?) for size 2, else the smallest uint.
    """
    if size == 2:  # the common 2x2 pool, in two passes
        first, second = (_window_view(a, axis, j, stride, count) for j in (0, 1))
        return np.maximum(first, second), np.greater(second, first)  # strict: ties stay first
    best = _window_view(a, axis, 0, stride, count).copy()
    winner = np.zeros(best.shape, np.min_scalar_type(size - 1))
    for j in range(1, size):
        tap = _window_view(a, axis, j, stride, count)
        better = tap > best  # strict: an equal later tap does not take over
        np.maximum(best, tap, out=best)
        # j grows with the loop, so "winner = j where better" is a max: branch-free.
        np.maximum(winner, better * winner.dtype.type(j), out=winner)
    return best, winner


def _max_only(a: np.ndarray, axis: int, size: int, stride: int, count: int) -> np.ndarray:
    """The max of _max_pass, without the winners."""
    best = np.maximum(*(_window_view(a, axis, j, stride, count) for j in (0, 1))) if size > 1 \
        else _window_view(a, axis, 0, stride, count).copy()
    for j in range(2, size):
        np.maximum(best, _window_view(a, axis, j, stride, count), out=best)
    return best


def _won(winner: np.ndarray, j: int) -> np.ndarray:
    """Where tap j won, as bools."""
    if winner.dtype == bool:
        return winner if j else ~winner
    return winner == j


def _max_pass_backward(dbest: np.ndarray, winner: np.ndarray, shape: tuple, axis: int,
                       size: int, stride: int) -> np.ndarray:
    """Send each position's gradient to the tap that won it; sums where taps overlap."""
    count = dbest.shape[axis]
    # Windows that tile the axis exactly write every cell once: nothing to zero first.
    tiled = stride == size and stride * count == shape[axis]
    da = (np.empty if tiled else np.zeros)(shape, dbest.dtype)
    for j in range(size):
        view = _window_view(da, axis, j, stride, count)
        if stride >= size:  # windows do not overlap: each input cell is written once
            np.multiply(dbest, _won(winner, j), out=view)
        else:
            view += dbest * _won(winner, j)
    return da


def maxpool_forward(x: np.ndarray, size: int, stride: int, padding: int,
                    backward: bool = True) -> tuple[np.ndarray, MaxpoolCache | None]:
    """y = Darknet max pool of x.

    x: (N, C, H, W). Returns y (N, C, OH, OW), OH = (H + padding − size)//stride + 1
    (same for W), in x's dtype and layout (C-contiguous unless x is stored CHWN),
    and the cache for maxpool_backward; with backward=False, the winners are
    not looked for and the cache is None.
    """
    if x.ndim != 4:
        raise ValueError(f"maxpool input must be (N, C, H, W), got shape {x.shape}")
    if size < 1 or stride < 1 or padding < 0:
        raise ValueError(f"bad maxpool size={size} stride={stride} padding={padding}")
    n, c, h, w = x.shape
    out_h = maxpool_out_size(h, size, stride, padding)
    out_w = maxpool_out_size(w, size, stride, padding)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"maxpool {size}x{size}/{stride} padding {padding} "
                         f"leaves no output on {h}x{w}")

    layout = layout_of(x)
    xl = ordered(x, layout)
    ha, wa = SPATIAL_AXES[layout]
    top = padding // 2
    span_h = (out_h - 1) * stride + size  # rows the windows cover, from −top
    span_w = (out_w - 1) * stride + size
    if top == 0 and span_h <= h and span_w <= w:
        xp = xl  # every window lies inside the input: no −∞ padding needed
    else:
        shape = list(xl.shape)
        shape[ha], shape[wa] = span_h, span_w
        xp = np.full(shape, -np.inf, x.dtype)
        keep_h, keep_w = max(0, min(h, span_h - top)), max(0, min(w, span_w - top))
        xp[spatial_index(layout, slice(top, top + keep_h), slice(top, top + keep_w))] = \
            xl[spatial_index(layout, slice(keep_h), slice(keep_w))]

    if not backward:
        return as_nchw(_max_only(_max_only(xp, wa, size, stride, out_w), ha, size, stride,
                                 out_h), layout), None
    rowmax, col_winner = _max_pass(xp, wa, size, stride, out_w)   # (N, C, Hp, OW)
    y, row_winner = _max_pass(rowmax, ha, size, stride, out_h)    # (N, C, OH, OW)
    return as_nchw(y, layout), MaxpoolCache(xl.shape, xp.shape, top, size, stride, col_winner,
                                            row_winner, layout)


def maxpool_backward(dy: np.ndarray, cache: MaxpoolCache) -> np.ndarray:
    """dx (N, C, H, W), in the forward's layout: each dy goes to its window's first
    maximum, summed over windows.  dy may be stored in any layout."""
    layout = cache.layout
    ha, wa = SPATIAL_AXES[layout]
    expected = as_nchw(cache.row_winner, layout).shape
    if dy.shape != expected:
        raise ValueError(f"maxpool dy has shape {dy.shape}, expected {expected}")
    dyl = ordered(dy, layout)
    drowmax = _max_pass_backward(dyl, cache.row_winner, cache.col_winner.shape, ha,
                                 cache.size, cache.stride)
    dxp = _max_pass_backward(drowmax, cache.col_winner, cache.padded_shape, wa,
                             cache.size, cache.stride)
    if cache.padded_shape == cache.x_shape and cache.top == 0:
        return as_nchw(dxp, layout)
    h, w = cache.x_shape[ha], cache.x_shape[wa]
    hp, wp = cache.padded_shape[ha], cache.padded_shape[wa]
    dx = np.zeros(cache.x_shape, dy.dtype)
    t = cache.top
    keep_h, keep_w = max(0, min(h, hp - t)), max(0, min(w, wp - t))
    dx[spatial_index(layout, slice(keep_h), slice(keep_w))] = \
        dxp[spatial_index(layout, slice(t, t + keep_h), slice(t, t + keep_w))]
    return as_nchw(dx, layout)


# ---------------------------------------------------------------------- across channels
# AlexeyAB's maxpool_depth (forward_maxpool_layer): per pixel, output channel g is the max
# of input channels g, g + out_channels, g + 2·out_channels, ... (strided groups, not
# contiguous blocks), the first (lowest channel) on ties.  With the channels padded by −∞
# to a multiple of out_channels they split into (groups, out_channels) for free.

class DepthCache(NamedTuple):
    """What maxpool_depth_backward needs from maxpool_depth_forward."""

    x_shape: tuple           # layout order
    winner: np.ndarray       # (N, 1, OC, H, W) or (1, OC, H, W, N): the group that won
    layout: str


def _channel_axis(layout: str) -> int:
    return 1 if layout == "NCHW" else 0


def maxpool_depth_forward(x: np.ndarray, out_channels: int,
                          backward: bool = True) -> tuple[np.ndarray, DepthCache | None]:
    """y (N, out_channels, H, W), y[:, g] = max_k x[:, g + k·out_channels], from x
    (N, C, H, W) in any layout (y keeps it); out_channels <= C."""
    layout = layout_of(x)
    xl = ordered(x, layout)
    axis = _channel_axis(layout)
    c = xl.shape[axis]
    groups = -(-c // out_channels)
    if groups * out_channels != c:                       # the last group is short: pad it
        shape = list(xl.shape)
        shape[axis] = groups * out_channels
        padded = np.full(shape, -np.inf, xl.dtype)
        padded[(slice(None),) * axis + (slice(0, c),)] = xl
        xl = padded
    split = xl.reshape(xl.shape[:axis] + (groups, out_channels) + xl.shape[axis + 1:])
    if not backward:
        return as_nchw(split.max(axis=axis), layout), None
    winner = split.argmax(axis=axis)[(slice(None),) * axis + (None,)]   # first max on ties
    y = np.take_along_axis(split, winner, axis=axis).squeeze(axis)
    return as_nchw(y, layout), DepthCache(ordered(x, layout).shape, winner, layout)


def maxpool_depth_backward(dy: np.ndarray, cache: DepthCache) -> np.ndarray:
    """dx (N, C, H, W), in the forward's layout: each dy to the channel that won its pixel."""
    layout = cache.layout
    axis = _channel_axis(layout)
    dyl = ordered(dy, layout)
    c = cache.x_shape[axis]
    out_channels = dyl.shape[axis]
    groups = -(-c // out_channels)
    shape = cache.x_shape[:axis] + (groups, out_channels) + cache.x_shape[axis + 1:]
    dsplit = np.zeros(shape, dyl.dtype)
    np.put_along_axis(dsplit, cache.winner, np.expand_dims(dyl, axis), axis=axis)
    dxl = dsplit.reshape(cache.x_shape[:axis] + (groups * out_channels,) +
                         cache.x_shape[axis + 1:])
    if groups * out_channels != c:
        dxl = np.ascontiguousarray(dxl[(slice(None),) * axis + (slice(0, c),)])
    return as_nchw(dxl, layout)
