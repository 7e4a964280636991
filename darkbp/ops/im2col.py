"""im2col / col2im: unfold image patches into GEMM columns, and fold them back.

Convolution (conv.py) runs in one of two memory layouts (layout.py):

    "NCHW"  input (N, C, H, W), columns (N, C, size, size, OH, OW): one GEMM per
            image (a batched matmul over N), whose output is NCHW.
    "CHWN"  input (C, H, W, N), columns (C, size, size, OH, OW, N): one GEMM for
            the whole batch, whose output is CHWN.

In both, the (C, size, size) axes give the rows in the order of Darknet's
weights (channel, kernel row, kernel column), so the columns reshape for free
to (C·size·size, M).  What differs is what is contiguous: NCHW copies runs of
OW pixels, CHWN runs of OW·N values (N for stride > 1): with MNIST-sized maps
(OW of a few pixels) CHWN's long runs make im2col/col2im several times faster
and its one big GEMM beats N small ones.  `choose_layout` picks one;
bench/bench_ops.py times both.

Without padding, im2col copies every window at once, from one strided view of
the input: a copy per kernel offset costs ~1.4x as much at batch 64, and its
Python overhead dominates small batches.  Here zero padding is never materialised:
each kernel offset copies the part of its window that lies inside the input and
zeroes the border strips of its columns.  (conv.py's chunked CHWN path pads the
input once instead, and copies each chunk's windows from the padded input's view.)
col2im loops over the size·size kernel offsets, adding one whole block per offset
back into the input, padding left out (with stride > 1, into each stride phase of
the input apart, see _col2im_phases).

A dilated kernel (AlexeyAB's `dilation`) spaces its taps `dilation` pixels apart: kernel
offset i reads input row o·stride − padding + i·dilation.  The columns keep their shape
(size·size rows per channel); only where each offset reads moves, so dilation 1 runs
exactly the code it always did.
"""

from __future__ import annotations

import numpy as np

from darkbp.ops.layout import LAYOUTS, SPATIAL_AXES, spatial_index  # noqa: F401  (LAYOUTS: API)

_CHANNEL_AXIS = {"NCHW": 1, "CHWN": 0}
PHASE_RUNS_BELOW = 64  # col2im with stride > 1 sums by phase when runs are shorter (see there)


def conv_out_size(size_in: int, size: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Darknet's convolution output size: (in + 2·padding − size) // stride + 1; a dilated
    kernel spans dilation·(size − 1) + 1 pixels in place of size."""
    return (size_in + 2 * padding - dilation * (size - 1) - 1) // stride + 1


def choose_layout(batch: int) -> str:
    """The layout a convolution of `batch` images runs in: CHWN, unless there is one image.

    With the layers passing CHWN batches on to each other (layout.py), CHWN is
    as fast or faster for every shape measured (bench/bench_ops.py, batch 64, 1
    thread): ~3x for 5x5 convs on 8x8 maps (im2col and col2im), ~1.3x for the
    3x3 and depthwise convs of cfg/grouped.cfg; LeNet's first conv (5x5 on
    28x28x1, where NCHW's per-image GEMMs stay in cache) is even with the
    column chunking of conv.py, and its CHWN output pools faster and needs no
    transpose for the next conv.  One image is the same memory either way.
    """
    return "NCHW" if batch == 1 else "CHWN"


def _inside(offset: int, stride: int, padding: int, size_in: int, out: int):
    """Output positions o whose tap o·stride − padding + offset falls inside [0, size_in).

    Returns (lo, hi, first): they are lo <= o < hi, and o = lo reads input index `first`.
    """
    start = offset - padding
    lo = max(0, -(start // stride))                      # ceil(−start / stride)
    hi = min(out, (size_in - 1 - start) // stride + 1)
    return lo, max(lo, hi), start + lo * stride


def cols_shape(layout: str, shape: tuple[int, ...], size: int, out_h: int,
               out_w: int) -> tuple[int, ...]:
    """Columns of an array of `shape` (in `layout` order): (size, size) after the channel
    axis, output spatial size: (N, C, size, size, OH, OW) or (C, size, size, OH, OW, N)."""
    ha, wa = SPATIAL_AXES[layout]
    shape = list(shape)
    shape[ha], shape[wa] = out_h, out_w
    ch = _CHANNEL_AXIS[layout]
    return (*shape[:ch + 1], size, size, *shape[ch + 1:])


def _taps(size: int, stride: int, padding: int, size_in: int, out: int,
          dilation: int = 1) -> list:
    """Along one axis, for each kernel offset: (the output slice whose taps fall inside
    the input, the input slice they read)."""
    taps = []
    for k in range(size):
        lo, hi, first = _inside(k * dilation, stride, padding, size_in, out)
        taps.append((slice(lo, hi), slice(first, first + stride * (hi - lo - 1) + 1, stride)))
    return taps


def _cols_index(layout: str, i, j, rows, cols) -> tuple:
    """An index into columns (see cols_shape): kernel offset (i, j), output rows and columns."""
    ch = _CHANNEL_AXIS[layout]
    return (*(slice(None),) * (ch + 1), i, j, *spatial_index(layout, rows, cols)[ch + 1:])


def _some(index: slice) -> bool:
    return index.stop > index.start


def im2col(x: np.ndarray, size: int, stride: int, padding: int, out_h: int, out_w: int,
           layout: str, out: np.ndarray | None = None, dilation: int = 1) -> np.ndarray:
    """Unfold a batch, zero-padded by `padding` on every side, into columns (kernel taps
    `dilation` pixels apart).

    x: (N, C, H, W) for NCHW or (C, H, W, N) for CHWN, C-contiguous.
    Returns (N, C, size, size, OH, OW) or (C, size, size, OH, OW, N), C-contiguous,
    or writes them into `out` (an array of that shape) and returns it.
    """
    shape = cols_shape(layout, x.shape, size, out_h, out_w)
    if out is not None and out.shape != shape:
        raise ValueError(f"im2col out has shape {out.shape}, expected {shape}")
    cols = np.empty(shape, x.dtype) if out is None else out
    if not padding:
        np.copyto(cols, _windows(x, layout, stride, shape, dilation))
        return cols
    ha, wa = SPATIAL_AXES[layout]
    rows = _taps(size, stride, padding, x.shape[ha], out_h, dilation)
    columns = _taps(size, stride, padding, x.shape[wa], out_w, dilation)
    every = slice(None)
    # The taps that fall in the padding: for kernel row i, the output rows outside
    # rows[i], at every kernel column; likewise for kernel column j.
    for i, (inside, _) in enumerate(rows):
        for outside in (slice(0, inside.start), slice(inside.stop, out_h)):
            if _some(outside):
                cols[_cols_index(layout, i, every, outside, every)] = 0
    for j, (inside, _) in enumerate(columns):
        for outside in (slice(0, inside.start), slice(inside.stop, out_w)):
            if _some(outside):
                cols[_cols_index(layout, every, j, every, outside)] = 0
    for i, (out_rows, in_rows) in enumerate(rows):
        for j, (out_cols, in_cols) in enumerate(columns):
            if _some(out_rows) and _some(out_cols):
                cols[_cols_index(layout, i, j, out_rows, out_cols)] = \
                    x[spatial_index(layout, in_rows, in_cols)]
    return cols


def _windows(x: np.ndarray, layout: str, stride: int, shape: tuple,
             dilation: int = 1) -> np.ndarray:
    """Every window of an unpadded x at once, as a read-only strided view of `shape`
    (im2col's): after the channel axis, the kernel row and column step `dilation`
    pixels, the output rows and columns `stride` pixels."""
    ha, wa = SPATIAL_AXES[layout]
    ch = _CHANNEL_AXIS[layout]
    step = x.strides
    strides = (*step[:ch + 1], step[ha] * dilation, step[wa] * dilation,
               *(step[a] * (stride if a in (ha, wa) else 1) for a in range(ch + 1, 4)))
    return np.lib.stride_tricks.as_strided(x, shape, strides, writeable=False)


def col2im(dcols: np.ndarray, x_shape: tuple[int, ...], stride: int, padding: int,
           layout: str, dilation: int = 1) -> np.ndarray:
    """Fold columns back, summing every patch's contribution: the adjoint of `im2col`.

    dcols: (N, C, size, size, OH, OW) or (C, size, size, OH, OW, N).
    Returns an array of `x_shape`, (N, C, H, W) or (C, H, W, N): what lands in
    the padding is dropped.
    """
    ch = _CHANNEL_AXIS[layout]
    size = dcols.shape[ch + 1]
    ha, wa = SPATIAL_AXES[layout]
    rows = _taps(size, stride, padding, x_shape[ha], dcols.shape[ha + 2], dilation)
    columns = _taps(size, stride, padding, x_shape[wa], dcols.shape[wa + 2], dilation)
    if stride > 1 and _run(layout, x_shape) < PHASE_RUNS_BELOW:
        return _col2im_phases(dcols, x_shape, stride, layout, rows, columns)
    # An offset whose taps cover the whole input ('same' padding: the centre)
    # initialises dx by a copy, which saves zeroing it.
    whole_rows = [i for i, (_, taps) in enumerate(rows) if taps == slice(0, x_shape[ha], 1)]
    whole_cols = [j for j, (_, taps) in enumerate(columns) if taps == slice(0, x_shape[wa], 1)]
    first = (whole_rows[0], whole_cols[0]) if whole_rows and whole_cols else None
    if first:
        i, j = first
        dx = np.array(dcols[_cols_index(layout, i, j, rows[i][0], columns[j][0])])
    else:
        dx = np.zeros(x_shape, dcols.dtype)
    for i, (out_rows, in_rows) in enumerate(rows):
        for j, (out_cols, in_cols) in enumerate(columns):
            if (i, j) != first and _some(out_rows) and _some(out_cols):
                # Overlapping patches (stride < size) reach a pixel from several offsets.
                dx[spatial_index(layout, in_rows, in_cols)] += \
                    dcols[_cols_index(layout, i, j, out_rows, out_cols)]
    return dx


def _run(layout: str, x_shape: tuple) -> int:
    """How many values lie side by side in a strided view of every stride-th column."""
    return x_shape[3] if layout == "CHWN" else 1


def _col2im_phases(dcols, x_shape, stride, layout, rows, columns) -> np.ndarray:
    """col2im for stride > 1, one stride phase of dx at a time.

    Kernel offset (i, j) adds into every stride-th row and column of dx, from
    one phase (rows r, r + stride, ...; columns c, c + stride, ...).  Adding into
    such a strided view runs NumPy's buffered iterator over short runs (N values
    in CHWN, 1 in NCHW): each phase is summed in a contiguous array of its own,
    then copied into dx once (copies do not go through ufunc buffers).  For
    grouped.cfg's 3x3/2 depthwise conv on 14x14x32: ~2x faster at batch 2 to 8,
    ~10% at 32, ~2% slower at 64 (hence PHASE_RUNS_BELOW).
    """
    ha, wa = SPATIAL_AXES[layout]
    phases = {}
    for i, (out_rows, in_rows) in enumerate(rows):
        for j, (out_cols, in_cols) in enumerate(columns):
            if not (_some(out_rows) and _some(out_cols)):
                continue
            key = (in_rows.start % stride, in_cols.start % stride)
            if key not in phases:
                shape = list(x_shape)
                shape[ha] = len(range(key[0], x_shape[ha], stride))
                shape[wa] = len(range(key[1], x_shape[wa], stride))
                phases[key] = np.zeros(shape, dcols.dtype)
            within = spatial_index(layout, _phase_slice(in_rows, stride),
                                   _phase_slice(in_cols, stride))
            phases[key][within] += dcols[_cols_index(layout, i, j, out_rows, out_cols)]
    # Phases that no tap reaches (stride > size) stay zero.
    dx = (np.empty if len(phases) == stride * stride else np.zeros)(x_shape, dcols.dtype)
    for (r, c), phase in phases.items():
        dx[spatial_index(layout, slice(r, None, stride), slice(c, None, stride))] = phase
    return dx


def _phase_slice(index: slice, stride: int) -> slice:
    """A slice of every stride-th position, as a slice of the phase holding them."""
    start = index.start // stride
    return slice(start, start + len(range(index.start, index.stop, stride)))
