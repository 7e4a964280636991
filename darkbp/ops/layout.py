"""Memory layouts of an (N, C, H, W) batch, and moving between them.

Layers take and return arrays of shape (N, C, H, W) (a flat layer's are
(N, n, 1, 1)), but not necessarily C-contiguous.  A convolution computes in one
of two layouts (see im2col.py) and hands its output on in that layout, as a
view; max pooling keeps the layout it is given; a connected layer works in
CHWN.  So a chain of layers that compute alike passes batches on with no copy:

    "NCHW"  C-contiguous: the images one after the other
    "CHWN"  x.transpose(1, 2, 3, 0) is C-contiguous: a pixel's N values adjacent

`ordered(x, layout)` is the C-contiguous array in the layout's axis order,
(N, C, H, W) or (C, H, W, N): x's own memory when x is stored so, else a copy.
`as_nchw(a, layout)` is the inverse, always a view.
"""

from __future__ import annotations

import numpy as np

LAYOUTS = ("NCHW", "CHWN")
_PERM = {"NCHW": (0, 1, 2, 3), "CHWN": (1, 2, 3, 0)}      # NCHW axes, in layout order
_INVERSE = {"NCHW": (0, 1, 2, 3), "CHWN": (3, 0, 1, 2)}
SPATIAL_AXES = {"NCHW": (2, 3), "CHWN": (1, 2)}           # (H, W) axes in layout order
# Rows of a (C·H·W, N) -> (N, C·H·W) transpose moved per block (see `ordered`).
_BLOCK = 16


def layout_of(x: np.ndarray) -> str:
    """"CHWN" when the (N, C, H, W) array x is stored that way (and not C-contiguous), else "NCHW"."""
    if not x.flags.c_contiguous and x.transpose(1, 2, 3, 0).flags.c_contiguous:
        return "CHWN"
    return "NCHW"


def layout_shape(layout: str, n: int, c: int, h: int, w: int) -> tuple[int, ...]:
    """The shape of an (N, C, H, W) batch in `layout`'s axis order."""
    nchw = (n, c, h, w)
    return tuple(nchw[a] for a in _PERM[layout])


def spatial_index(layout: str, rows, cols) -> tuple:
    """An index applying `rows` and `cols` to the (H, W) axes of an array in `layout` order."""
    index = [slice(None)] * 4
    ha, wa = SPATIAL_AXES[layout]
    index[ha], index[wa] = rows, cols
    return tuple(index)


def stored_like(shape: tuple[int, ...], like: np.ndarray, zeros: bool = False) -> np.ndarray:
    """An (N, C, H, W) array of `shape` and like's dtype, stored in the layout `like` is:
    uninitialised, or zeros."""
    layout = layout_of(like)
    make = np.zeros if zeros else np.empty
    return as_nchw(make(layout_shape(layout, *shape), like.dtype), layout)


def as_nchw(a: np.ndarray, layout: str) -> np.ndarray:
    """The (N, C, H, W) view of an array in `layout`'s axis order."""
    return a.transpose(_INVERSE[layout])


def ordered(x: np.ndarray, layout: str) -> np.ndarray:
    """x (N, C, H, W) as a C-contiguous array in `layout`'s axis order; no copy if x is stored so."""
    a = x.transpose(_PERM[layout])
    if a.flags.c_contiguous:
        return a
    if layout == "NCHW" and layout_of(x) == "CHWN":
        # (C·H·W, N) -> (N, C·H·W) in one copy writes N rows far apart and runs up to 10x
        # slower on big maps than the opposite transpose; blocks of 16 rows: transpose each
        # (16, N) -> (N, 16), then move the 16-value runs.  Two copies, both cache friendly.
        n = x.shape[0]
        rows = x.size // n
        if rows % _BLOCK == 0 and rows > _BLOCK:
            blocks = x.transpose(1, 2, 3, 0).reshape(rows // _BLOCK, _BLOCK, n)
            runs = np.ascontiguousarray(blocks.transpose(0, 2, 1))        # (rows/16, N, 16)
            return np.ascontiguousarray(runs.transpose(1, 0, 2)).reshape(x.shape)
    if layout == "CHWN" and x.flags.c_contiguous and x.shape[0] > 1:
        # (N, C·H·W) -> (C·H·W, N) reads N values an image apart for each row it writes;
        # where an image is a multiple of 4 KB (32x32, 3x32x32 in float32) they all fall in
        # the same cache sets and the copy runs ~4x slower (1.1 ms for 64 CIFAR images).
        # Then: move the 16-value runs first, (N, rows/16, 16) -> (rows/16, N, 16), and
        # transpose each (N, 16) block.  0.26 ms; elsewhere one copy is the faster.
        n = x.shape[0]
        rows = x.size // n
        if (rows * x.itemsize) % 4096 == 0:
            runs = np.ascontiguousarray(x.reshape(n, rows // _BLOCK, _BLOCK).transpose(1, 0, 2))
            return np.ascontiguousarray(runs.transpose(0, 2, 1)).reshape(a.shape)
    return np.ascontiguousarray(a)
