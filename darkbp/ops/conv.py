"""Grouped 2-D convolution, forward and backward, as im2col + one batched GEMM.

Weights are Darknet's (F, C/G, size, size): filter f belongs to group
g = f // (F/G) and sees input channels [g·C/G, (g+1)·C/G).  No bias here (the
layer adds it).  The whole batch is one matrix product per group, and the G
groups are one `np.matmul` over a leading group axis:

    y[g]      = W[g]   @ cols[g]        (Fg, Kg) @ (Kg, M)  -> (Fg, M)
    dW[g]     = dy[g]  @ cols[g]ᵀ       (Fg, M)  @ (M, Kg)  -> (Fg, Kg)
    dcols[g]  = W[g]ᵀ  @ dy[g]          (Kg, Fg) @ (Fg, M)  -> (Kg, M), then col2im

with Kg = C/G·size·size and M = N·OH·OW.  dW sums over the batch (the gradient
of a summed loss).  dx is col2im of dcols: the adjoint of im2col, i.e. the
"full convolution with the 180°-rotated kernel over the stride-dilated deltas"
of the course notes, computed without materialising the dilated deltas.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from darkbp.ops.im2col import (
    choose_layout,
    col2im,
    conv_out_size,
    from_channel_major,
    im2col,
    to_channel_major,
)


class ConvCache(NamedTuple):
    """What conv_backward needs from conv_forward."""

    cols: np.ndarray         # (G, C/G·size·size, M): the padded input's columns, M in `layout` order
    x_shape: tuple           # (N, C, H, W)
    out_hw: tuple            # (OH, OW)
    layout: str              # "CNHW" or "CHWN" (see im2col.py)
    size: int
    stride: int
    padding: int
    groups: int


def _check(x: np.ndarray, weights: np.ndarray, stride: int, padding: int, groups: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"conv input must be (N, C, H, W), got shape {x.shape}")
    if weights.ndim != 4 or weights.shape[2] != weights.shape[3]:
        raise ValueError(f"conv weights must be (F, C/groups, size, size), got {weights.shape}")
    if x.dtype != weights.dtype:
        raise ValueError(f"conv input is {x.dtype} but weights are {weights.dtype}")
    c, f = x.shape[1], weights.shape[0]
    if groups < 1 or c % groups or f % groups:
        raise ValueError(f"groups={groups} must divide channels={c} and filters={f}")
    if weights.shape[1] != c // groups:
        raise ValueError(f"weights {weights.shape} do not fit {c} channels in {groups} groups")
    if stride < 1 or padding < 0:
        raise ValueError(f"bad stride={stride} or padding={padding}")


def _rest(layout: str, n: int, h: int, w: int) -> tuple[int, int, int]:
    """The non-channel axes of a channel-major array, in `layout` order."""
    return (n, h, w) if layout == "CNHW" else (h, w, n)


def conv_forward(x: np.ndarray, weights: np.ndarray, stride: int, padding: int,
                 groups: int) -> tuple[np.ndarray, ConvCache]:
    """y = conv(x, weights), no bias.

    x: (N, C, H, W); weights: (F, C/groups, size, size), same dtype as x.
    Returns y (N, F, OH, OW) with OH = (H + 2·padding − size)//stride + 1 (same
    for W), in x's dtype, and the cache for conv_backward.
    """
    _check(x, weights, stride, padding, groups)
    n, c, h, w = x.shape
    f, cg, size, _ = weights.shape
    out_h = conv_out_size(h, size, stride, padding)
    out_w = conv_out_size(w, size, stride, padding)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"conv {size}x{size}/{stride} pad {padding} leaves no output on {h}x{w}")
    layout = choose_layout(n, out_w)

    xc = to_channel_major(x, layout, padding)
    if size == 1 and stride == 1:
        cols = xc  # a 1x1 stride-1 conv is a plain GEMM over the (padded) input
    else:
        cols = im2col(xc, size, stride, out_h, out_w, layout)
    kg = cg * size * size
    cols = cols.reshape(groups, kg, -1)                          # (G, Kg, M)
    y = np.matmul(weights.reshape(groups, f // groups, kg), cols)  # (G, Fg, M) = (F, M)
    y = from_channel_major(y.reshape(f, *_rest(layout, n, out_h, out_w)), layout)
    return y, ConvCache(cols, (n, c, h, w), (out_h, out_w), layout, size, stride, padding, groups)


def conv_backward(dy: np.ndarray, cache: ConvCache, weights: np.ndarray,
                  need_dx: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """Gradients of a loss L given dy = ∂L/∂y (N, F, OH, OW).

    Returns (dx, dweights): dx = ∂L/∂x (N, C, H, W), or None when need_dx is
    False (a network's first layer); dweights = ∂L/∂weights (F, C/G, size, size),
    summed over the batch.
    """
    n, c, h, w = cache.x_shape
    out_h, out_w = cache.out_hw
    f = weights.shape[0]
    if dy.shape != (n, f, out_h, out_w):
        raise ValueError(f"conv dy has shape {dy.shape}, expected {(n, f, out_h, out_w)}")
    g, layout, size, p = cache.groups, cache.layout, cache.size, cache.padding
    kg = cache.cols.shape[1]

    dyc = to_channel_major(dy, layout).reshape(g, f // g, -1)        # (G, Fg, M)
    dweights = np.matmul(dyc, cache.cols.transpose(0, 2, 1)).reshape(weights.shape)
    if not need_dx:
        return None, dweights

    wg = weights.reshape(g, f // g, kg)
    dcols = np.matmul(wg.transpose(0, 2, 1), dyc)                   # (G, Kg, M)
    padded = (c, *_rest(layout, n, h + 2 * p, w + 2 * p))
    if size == 1 and cache.stride == 1:
        dxc = dcols.reshape(padded)
    else:
        dcols = dcols.reshape(c, size, size, *_rest(layout, n, out_h, out_w))
        dxc = col2im(dcols, padded, cache.stride, layout)
    return from_channel_major(dxc, layout, p), dweights
