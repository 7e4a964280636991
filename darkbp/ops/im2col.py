"""im2col / col2im: unfold image patches into GEMM columns, and fold them back.

Convolution (conv.py) runs in one of two memory layouts, chosen per shape:

    "NCHW"  the input as is, columns (N, C, size, size, OH, OW): one GEMM per
            image (a batched matmul over N), whose output is already NCHW.
    "CHWN"  a transposed copy (C, H, W, N), columns (C, size, size, OH, OW, N):
            one GEMM for the whole batch; inputs and outputs are transposed.

In both, the (C, size, size) axes give the rows in the order of Darknet's
weights (channel, kernel row, kernel column), so the columns reshape for free
to (C·size·size, M).  What differs is what is contiguous: NCHW copies runs of
OW pixels, CHWN runs of OW·N values (N for stride > 1).  With small feature
maps (OW of a few pixels) CHWN's long runs make im2col/col2im several times
faster and its one big GEMM beats N small ones; with large maps NCHW avoids
the transposes (cache-hostile for a big (F·OH·OW, N) output) and its per-image
GEMMs stay in cache.  `choose_layout` picks one; bench/bench_ops.py times both.

Unfolding and folding loop over the size·size kernel offsets only; each
iteration moves one whole (N, C, OH, OW) block.
"""

from __future__ import annotations

import numpy as np

LAYOUTS = ("NCHW", "CHWN")
_PERM = {"NCHW": (0, 1, 2, 3), "CHWN": (1, 2, 3, 0)}     # NCHW axes, in layout order
_CHANNEL_AXIS = {"NCHW": 1, "CHWN": 0}

# Output width below which CHWN wins (bench/bench_ops.py and a sweep of
# MNIST-sized convs, batch 64, 1 thread: LeNet's 8x8 conv is ~30% faster in
# CHWN and its 24x24 first conv ~3x slower; 3x3 convs on 14x14 maps, stride 2
# or depthwise included, ~15-40% faster in CHWN; 20x20 and 28x28 maps are even).
CHWN_MAX_OUT_W = 16


def conv_out_size(size_in: int, size: int, stride: int, padding: int) -> int:
    """Darknet's convolution output size: (in + 2·padding − size) // stride + 1."""
    return (size_in + 2 * padding - size) // stride + 1


def choose_layout(batch: int, out_w: int, size: int, stride: int) -> str:
    """The layout that makes a convolution of this shape fastest.

    NCHW for large maps and for 1x1 stride-1 convs, which need no im2col and
    so, in NCHW, no copy at all; CHWN for small maps.
    """
    if batch == 1 or (size == 1 and stride == 1):
        return "NCHW"
    return "CHWN" if out_w < CHWN_MAX_OUT_W else "NCHW"


def layout_shape(layout: str, n: int, c: int, h: int, w: int) -> tuple[int, ...]:
    """The shape of an (N, C, H, W) batch stored in `layout`."""
    nchw = (n, c, h, w)
    return tuple(nchw[a] for a in _PERM[layout])


def _spatial_axes(layout: str) -> tuple[int, int]:
    perm = _PERM[layout]
    return perm.index(2), perm.index(3)


def to_layout(x: np.ndarray, layout: str, padding: int = 0) -> np.ndarray:
    """x (N, C, H, W) -> zero-padded by `padding` and stored in `layout`.

    One copy, or none for NCHW without padding (x itself is returned).
    """
    if layout == "NCHW" and padding == 0:
        return x
    n, c, h, w = x.shape
    p = padding
    out = (np.zeros if p else np.empty)(layout_shape(layout, n, c, h + 2 * p, w + 2 * p), x.dtype)
    ha, wa = _spatial_axes(layout)
    interior = [slice(None)] * 4
    interior[ha], interior[wa] = slice(p, p + h), slice(p, p + w)
    out[tuple(interior)] = x.transpose(_PERM[layout])
    return out


def from_layout(a: np.ndarray, layout: str, padding: int = 0) -> np.ndarray:
    """Inverse of `to_layout`: crop `padding`, return a C-contiguous (N, C, H, W)."""
    if padding:
        ha, wa = _spatial_axes(layout)
        index = [slice(None)] * 4
        index[ha] = slice(padding, a.shape[ha] - padding)
        index[wa] = slice(padding, a.shape[wa] - padding)
        a = a[tuple(index)]
    if layout == "NCHW":
        return np.ascontiguousarray(a)
    # (C, H, W, N) -> (N, C, H, W) in one copy reads a column of N per output
    # pixel and thrashes the cache (up to 10x slower on big maps); per-channel
    # (H·W, N) -> (N, H·W) transposes first, then moving whole H·W rows, is not.
    a = np.ascontiguousarray(a.transpose(0, 3, 1, 2))                  # (C, N, H, W)
    return np.ascontiguousarray(a.transpose(1, 0, 2, 3))


def _offset_view(a: np.ndarray, layout: str, i: int, j: int, stride: int,
                 out_h: int, out_w: int) -> np.ndarray:
    """The pixels that kernel offset (i, j) sees at every output position: a strided view."""
    ha, wa = _spatial_axes(layout)
    index = [slice(None)] * a.ndim
    index[ha] = slice(i, i + stride * (out_h - 1) + 1, stride)
    index[wa] = slice(j, j + stride * (out_w - 1) + 1, stride)
    return a[tuple(index)]


def _cols_shape(layout: str, shape: tuple[int, ...], size: int, out_h: int,
                out_w: int) -> tuple[int, ...]:
    """Columns of an array of `shape`: (size, size) after the channel axis, output spatial size."""
    ha, wa = _spatial_axes(layout)
    shape = list(shape)
    shape[ha], shape[wa] = out_h, out_w
    ch = _CHANNEL_AXIS[layout]
    return (*shape[:ch + 1], size, size, *shape[ch + 1:])


def im2col(xp: np.ndarray, size: int, stride: int, out_h: int, out_w: int,
           layout: str) -> np.ndarray:
    """Unfold a padded batch into columns.

    xp: (N, C, Hp, Wp) for NCHW or (C, Hp, Wp, N) for CHWN.
    Returns (N, C, size, size, OH, OW) or (C, size, size, OH, OW, N), C-contiguous.
    """
    cols = np.empty(_cols_shape(layout, xp.shape, size, out_h, out_w), xp.dtype)
    lead = (slice(None),) * (_CHANNEL_AXIS[layout] + 1)
    for i in range(size):
        for j in range(size):
            cols[(*lead, i, j)] = _offset_view(xp, layout, i, j, stride, out_h, out_w)
    return cols


def col2im(dcols: np.ndarray, padded_shape: tuple[int, ...], stride: int,
           layout: str) -> np.ndarray:
    """Fold columns back, summing every patch's contribution: the adjoint of `im2col`.

    dcols: (N, C, size, size, OH, OW) or (C, size, size, OH, OW, N).
    Returns an array of `padded_shape`, (N, C, Hp, Wp) or (C, Hp, Wp, N).
    """
    ch = _CHANNEL_AXIS[layout]
    size = dcols.shape[ch + 1]
    ha, wa = _spatial_axes(layout)
    out_h, out_w = dcols.shape[ha + 2], dcols.shape[wa + 2]
    lead = (slice(None),) * (ch + 1)
    dx = np.zeros(padded_shape, dcols.dtype)
    for i in range(size):
        for j in range(size):
            # Overlapping patches (stride < size) reach a pixel from several offsets: accumulate.
            view = _offset_view(dx, layout, i, j, stride, out_h, out_w)
            view += dcols[(*lead, i, j)]
    return dx
