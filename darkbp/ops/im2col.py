"""im2col / col2im: unfold image patches into GEMM columns, and fold them back.

Convolution (conv.py) runs on a *channel-major* copy of the batch so that the
columns of all images form one matrix and the whole batch is one GEMM:

    "CNHW"  activations (C, N, H, W),  columns (C, size, size, N, OH, OW)
    "CHWN"  activations (C, H, W, N),  columns (C, size, size, OH, OW, N)

Both column layouts reshape for free to (C·size·size, M), M = N·OH·OW, rows in
the order of Darknet's weights (channel, kernel row, kernel column).  They
differ in what is contiguous: CNHW copies rows of OW pixels, CHWN copies runs
of OW·N values (N for stride > 1).  With small feature maps (OW of a few
pixels) CHWN's long runs make im2col/col2im several times faster; with large
ones CNHW avoids transposing big outputs.  `choose_layout` picks one.

Both unfolding and folding loop over the size·size kernel offsets only; each
iteration moves a whole (C, N, OH, OW) block.
"""

from __future__ import annotations

import numpy as np

LAYOUTS = ("CNHW", "CHWN")

# Below this output width CHWN's longer contiguous runs pay for its transposes
# (bench/bench_ops.py: LeNet's 8x8 conv is ~30% faster in CHWN, its 24x24 conv
# ~3x slower, because transposing a (F·OH·OW, N) output is cache-hostile).
CHWN_MAX_OUT_W = 16


def conv_out_size(size_in: int, size: int, stride: int, padding: int) -> int:
    """Darknet's convolution output size: (in + 2·padding − size) // stride + 1."""
    return (size_in + 2 * padding - size) // stride + 1


def choose_layout(batch: int, out_w: int) -> str:
    """The channel-major layout that makes a convolution of this shape fastest."""
    return "CHWN" if batch > 1 and out_w < CHWN_MAX_OUT_W else "CNHW"


def _spatial_axes(layout: str) -> tuple[int, int]:
    """Positions of H and W in a channel-major array of `layout`."""
    return (2, 3) if layout == "CNHW" else (1, 2)


def to_channel_major(x: np.ndarray, layout: str, padding: int = 0) -> np.ndarray:
    """x (N, C, H, W) -> zero-padded (C, N, H+2p, W+2p) or (C, H+2p, W+2p, N), one copy."""
    n, c, h, w = x.shape
    p = padding
    if layout == "CNHW":
        if p == 0 and c == 1 and x.flags.c_contiguous:
            return x.reshape(1, n, h, w)  # already channel-major: no copy
        out = (np.zeros if p else np.empty)((c, n, h + 2 * p, w + 2 * p), x.dtype)
        out[:, :, p:p + h, p:p + w] = x.transpose(1, 0, 2, 3)
    else:
        out = (np.zeros if p else np.empty)((c, h + 2 * p, w + 2 * p, n), x.dtype)
        out[:, p:p + h, p:p + w, :] = x.transpose(1, 2, 3, 0)
    return out


def from_channel_major(a: np.ndarray, layout: str, padding: int = 0) -> np.ndarray:
    """Inverse of `to_channel_major`: crop `padding` and return a C-contiguous (N, C, H, W)."""
    p = padding
    if layout == "CNHW":
        if p:
            a = a[:, :, p:a.shape[2] - p, p:a.shape[3] - p]
        return np.ascontiguousarray(a.transpose(1, 0, 2, 3))
    if p:
        a = a[:, p:a.shape[1] - p, p:a.shape[2] - p, :]
    return np.ascontiguousarray(a.transpose(3, 0, 1, 2))


def _offset_view(a: np.ndarray, layout: str, i: int, j: int, stride: int,
                 out_h: int, out_w: int) -> np.ndarray:
    """The pixels that kernel offset (i, j) sees at every output position: a strided view."""
    ha, wa = _spatial_axes(layout)
    index = [slice(None)] * a.ndim
    index[ha] = slice(i, i + stride * (out_h - 1) + 1, stride)
    index[wa] = slice(j, j + stride * (out_w - 1) + 1, stride)
    return a[tuple(index)]


def im2col(xc: np.ndarray, size: int, stride: int, out_h: int, out_w: int,
           layout: str) -> np.ndarray:
    """Unfold a padded channel-major batch into columns.

    xc: (C, N, Hp, Wp) for CNHW or (C, Hp, Wp, N) for CHWN.
    Returns (C, size, size, N, OH, OW) or (C, size, size, OH, OW, N), C-contiguous.
    """
    ha, wa = _spatial_axes(layout)
    rest = list(xc.shape[1:])
    rest[ha - 1], rest[wa - 1] = out_h, out_w
    cols = np.empty((xc.shape[0], size, size, *rest), xc.dtype)
    for i in range(size):
        for j in range(size):
            cols[:, i, j] = _offset_view(xc, layout, i, j, stride, out_h, out_w)
    return cols


def col2im(dcols: np.ndarray, padded_shape: tuple[int, ...], stride: int,
           layout: str) -> np.ndarray:
    """Fold columns back, summing every patch's contribution into the padded input.

    dcols: (C, size, size, N, OH, OW) or (C, size, size, OH, OW, N) (as from im2col).
    padded_shape: the channel-major padded input shape, (C, N, Hp, Wp) or (C, Hp, Wp, N).
    Returns an array of `padded_shape`; adjoint of `im2col`.
    """
    size = dcols.shape[1]
    ha, wa = _spatial_axes(layout)
    out_h, out_w = dcols.shape[ha + 2], dcols.shape[wa + 2]
    dx = np.zeros(padded_shape, dcols.dtype)
    for i in range(size):
        for j in range(size):
            # Overlapping patches (stride < size) hit the same pixel from several
            # offsets: accumulate, one whole block per offset.
            view = _offset_view(dx, layout, i, j, stride, out_h, out_w)
            view += dcols[:, i, j]
    return dx
