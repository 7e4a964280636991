"""Grouped 2-D convolution, forward and backward, as im2col + batched GEMM.

Weights are Darknet's (F, C/G, size, size): filter f belongs to group
g = f // (F/G) and sees input channels [g·C/G, (g+1)·C/G); optional biases (F,)
are added to y.  Every product is one `np.matmul` over a leading (B, G) batch
(B = N or 1, see `_gemm_batch`), never a Python loop over images or groups:

    y[b, g]     = W[g]      @ cols[b, g]     (Fg, Kg) @ (Kg, M)  -> (Fg, M)
    dW[g]       = Σ_b dy[b, g] @ cols[b, g]ᵀ  (Fg, M)  @ (M, Kg)  -> (Fg, Kg)
    dcols[b, g] = W[g]ᵀ     @ dy[b, g]       (Kg, Fg) @ (Fg, M)  -> (Kg, M), then col2im

with Kg = C/G·size·size.  dW sums over the batch (the gradient of a summed
loss).  dx is col2im of dcols: the adjoint of im2col, i.e. the "full
convolution with the 180°-rotated kernel over the stride-dilated deltas" of the
course notes, without materialising the dilated deltas.

Without groups, biases ride in the products (Caffe's bias multiplier): the
columns get a last row of ones and W a last column of biases, so y needs no
pass of its own to add them and dW's product yields their gradient Σ dy.

A dilated kernel (`dilation` > 1) reads taps `dilation` pixels apart: only im2col/col2im
and the direct kernels move where each tap reads (im2col.py), the products stay the same.

A batch stored CHWN (every batch of more than one image) does not materialise its
columns: they run a few output rows at a time (`_chunked_forward`), and backward
remakes them chunk by chunk from the input, which is all the cache keeps; its dx is made
chunk by chunk too (`_chunked_dx`, `_chunked_col2im`).
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from darkbp.ops.depthwise import DIRECT_FILTERS, depthwise_backward, depthwise_forward
from darkbp.ops.im2col import (_windows, choose_layout, col2im, cols_shape, conv_out_size,
                               im2col)
from darkbp.ops.layout import as_nchw, layout_shape, ordered


class ConvCache(NamedTuple):
    """What conv_backward needs from conv_forward."""

    cols: np.ndarray         # (B, G, Kg (+1), M): padded input's columns (+ ones), see _gemm_batch;
                             # the input itself (layout order) for a direct depthwise conv
    x_shape: tuple           # (N, C, H, W)
    out_hw: tuple            # (OH, OW)
    layout: str              # "NCHW" or "CHWN" (see im2col.py)
    size: int
    stride: int
    padding: int
    groups: int
    keep_layout: bool        # dx in `layout` (a view) rather than C-contiguous
    biased: bool             # the forward added biases: backward returns their gradient
    ones_row: bool           # ... through a last row of ones in cols
    direct: bool = False     # depthwise.py's kernel, no columns
    chunked: bool = False    # CHWN columns made chunk by chunk from `cols` = the input (C, H, W, N)
    dilation: int = 1        # kernel taps this many pixels apart


def _check(x: np.ndarray, weights: np.ndarray, stride: int, padding: int, groups: int,
           dilation: int) -> None:
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
    if stride < 1 or padding < 0 or dilation < 1:
        raise ValueError(f"bad stride={stride}, padding={padding} or dilation={dilation}")


# A product with a small matrix (Fg·Kg at most SMALL_MATRIX) and a long (K, M) operand
# runs over column chunks of CHUNK: OpenBLAS streams such a product through memory in
# panels far bigger than the cache, chunks of 512 columns stay in it (bench/bench_ops.py,
# 1 thread: LeNet's first conv 1.3-2x faster in each of its three products, the 3x3
# convs of grouped.cfg 1.3-2.3x; LeNet's 50x500 second conv is ~5% slower chunked).
SMALL_MATRIX = 4096
CHUNK = 512


def _chunked(a: np.ndarray, count: int, width: int | None = None) -> np.ndarray:
    """(..., K, M) -> the (..., count, K, width) view of its first count·width columns
    (width: CHUNK unless given)."""
    width = width or CHUNK
    *lead, k, _ = a.shape
    *lead_strides, row, col = a.strides
    return np.lib.stride_tricks.as_strided(a, (*lead, count, k, width),
                                           (*lead_strides, width * col, row, col))


def _chunks(small: int, m: int) -> int:
    """How many column chunks a product involving a matrix of `small` values and
    (..., M) operands runs over (0: none)."""
    return m // CHUNK if small <= SMALL_MATRIX and m >= 4 * CHUNK else 0


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (G, P, K) @ b (B, G, K, M) -> (B, G, P, M), C-contiguous.

    A contraction over a length-1 axis (depthwise dcols, Fg = 1) is done as a
    broadcast product, which NumPy's matmul runs ~5x slower (no BLAS).
    """
    if a.shape[-1] == 1:
        return a * b
    m = b.shape[-1]
    count = _chunks(a.shape[-2] * a.shape[-1], m)
    if not count:
        return np.matmul(a, b)
    out = np.empty(b.shape[:-2] + (a.shape[-2], m), b.dtype)
    np.matmul(a[..., None, :, :], _chunked(b, count), out=_chunked(out, count))
    cut = count * CHUNK
    if cut < m:
        np.matmul(a, b[..., cut:], out=out[..., cut:])
    return out


def _matmul_t_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ_B a (B, G, P, M) @ b (B, G, Q, M)ᵀ -> (G, P, Q), the products' sum over B and M."""
    m = a.shape[-1]
    count = _chunks(a.shape[-2] * b.shape[-2], m)
    if not count:
        product = np.matmul(a, b.swapaxes(-1, -2))                      # (B, G, P, Q)
        return product[0] if product.shape[0] == 1 else product.sum(axis=0)
    parts = np.matmul(_chunked(a, count), _chunked(b, count).swapaxes(-1, -2))
    total = parts.sum(axis=(0, 2))                                      # over B and chunks
    cut = count * CHUNK
    if cut < m:
        total += np.matmul(a[..., cut:], b[..., cut:].swapaxes(-1, -2)).sum(axis=0)
    return total


def _gemm_batch(layout: str, n: int) -> int:
    """B, the matmul batch: one GEMM per image in NCHW, one for the whole batch in CHWN.

    Columns are then (B, G, Kg, M) with M = OH·OW (NCHW) or OH·OW·N (CHWN), and
    y = W @ cols broadcasts the (G, Fg, Kg) weights over B.
    """
    return n if layout == "NCHW" else 1


def conv_forward(x: np.ndarray, weights: np.ndarray, stride: int, padding: int,
                 groups: int, keep_layout: bool = False, biases: np.ndarray | None = None,
                 buffers: dict | None = None, dilation: int = 1) -> tuple[np.ndarray, ConvCache]:
    """y = conv(x, weights) (+ biases per filter), kernel taps `dilation` pixels apart.

    x: (N, C, H, W), stored in any layout; weights: (F, C/groups, size, size)
    and biases (F,), same dtype as x.  Returns y (N, F, OH, OW) with OH = (H +
    2·padding − dilation·(size − 1) − 1)//stride + 1 (same for W; dilation 1:
    (H + 2·padding − size)//stride + 1) in x's dtype, and the cache for
    conv_backward.  y is C-contiguous, or with keep_layout a view of the
    output in the layout the convolution ran in (cache.layout, see layout.py),
    which saves a copy when the next layer works in that layout too; then
    conv_backward's dx is in that layout as well.  The cache may hold x
    itself (no copy): do not write into x before conv_backward.

    buffers: a dict the caller owns (one per layer, never shared between
    threads) where a single image's columns (NCHW) are kept from one call to
    the next and reused when the shape and dtype match: then the cache of a
    call is valid only until the next.  Reusing it beats allocating ~8 MB
    afresh each step (~3% on LeNet's training step, ~6% on grouped.cfg's).
    A batch's columns (CHWN) go a chunk at a time through one buffer per thread.
    """
    _check(x, weights, stride, padding, groups, dilation)
    n, c, h, w = x.shape
    f, cg, size, _ = weights.shape
    out_h = conv_out_size(h, size, stride, padding, dilation)
    out_w = conv_out_size(w, size, stride, padding, dilation)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"conv {size}x{size}/{stride} pad {padding} dilation {dilation} leaves "
                         f"no output on {h}x{w}")
    if biases is not None and (biases.shape != (f,) or biases.dtype != x.dtype):
        raise ValueError(f"conv biases are {biases.dtype} {biases.shape}, expected {x.dtype} ({f},)")
    layout = choose_layout(n)
    b, kg = _gemm_batch(layout, n), cg * size * size
    m = out_h * out_w * (n // b)
    wg = weights.reshape(groups, f // groups, kg)
    xl = ordered(x, layout)
    plain = size == 1 and stride == 1 and padding == 0
    if cg == 1 and f // groups <= DIRECT_FILTERS and stride == 1 and not plain:
        y = depthwise_forward(xl, weights, stride, padding, out_h, out_w, layout, dilation)
        cache = ConvCache(xl, (n, c, h, w), (out_h, out_w), layout, size, stride, padding,
                          groups, keep_layout, biases is not None, False, direct=True,
                          dilation=dilation)
    elif layout == "CHWN" and not plain:
        y, cache = _chunked_forward(xl, wg, biases, size, stride, padding, out_h, out_w,
                                    dilation)
        cache = cache._replace(keep_layout=keep_layout)
    else:
        ones_row = biases is not None and groups == 1 and not plain
        if plain:
            cols = xl  # a 1x1 stride-1 conv is a plain GEMM over the input
        elif ones_row:
            cols = _buffer(buffers, (b, 1, kg + 1, m), x.dtype)
            im2col(xl, size, stride, padding, out_h, out_w, layout,
                   out=_split(cols[:, 0, :kg], cols_shape(layout, xl.shape, size, out_h, out_w)),
                   dilation=dilation)
            cols[:, 0, kg] = 1
            wg = np.concatenate([wg, biases.reshape(1, f, 1)], axis=2)  # (1, F, Kg + 1)
        else:
            shape = cols_shape(layout, xl.shape, size, out_h, out_w)
            cols = im2col(xl, size, stride, padding, out_h, out_w, layout,
                          out=_buffer(buffers, shape, x.dtype), dilation=dilation)
        cols = cols.reshape(b, groups, -1, m)                          # (B, G, Kg (+1), M)
        y = _matmul(wg, cols)                                          # (B, G, Fg, M)
        cache = ConvCache(cols, (n, c, h, w), (out_h, out_w), layout, size, stride, padding,
                          groups, keep_layout, biases is not None, ones_row, dilation=dilation)
    if biases is not None and not cache.ones_row:
        per_filter = _split(y, (b, f, m))
        per_filter += biases[:, None]
    y = as_nchw(y.reshape(layout_shape(layout, n, f, out_h, out_w)), layout)
    return (y if keep_layout else ordered(y, "NCHW")), cache


def _buffer(buffers: dict | None, shape: tuple, dtype) -> np.ndarray:
    """An uninitialised array for the columns: buffers["cols"] if it fits, else a new one
    (kept there)."""
    if buffers is None:
        return np.empty(shape, dtype)
    cols = buffers.get("cols")
    if cols is None or cols.shape != shape or cols.dtype != dtype:
        cols = buffers["cols"] = np.empty(shape, dtype)
    return cols


def _split(a: np.ndarray, shape: tuple) -> np.ndarray:
    """A view of `a` with its axes split into `shape` (an error, never a copy, if impossible)."""
    view = a.view()
    view.shape = shape
    return view


def conv_backward(dy: np.ndarray, cache: ConvCache, weights: np.ndarray,
                  need_dx: bool = True) -> tuple:
    """Gradients of a loss L given dy = ∂L/∂y (N, F, OH, OW).

    dy may be stored in any layout.  Returns (dx, dweights), and dbiases (F,)
    after them when the forward added biases: dx = ∂L/∂x (N, C, H, W),
    C-contiguous or as conv_forward's y (keep_layout), or None when need_dx is
    False (a network's first layer); dweights = ∂L/∂weights (F, C/G, size,
    size) and dbiases = ∂L/∂biases, summed over the batch.
    """
    n, c, h, w = cache.x_shape
    out_h, out_w = cache.out_hw
    f = weights.shape[0]
    if dy.shape != (n, f, out_h, out_w):
        raise ValueError(f"conv dy has shape {dy.shape}, expected {(n, f, out_h, out_w)}")
    g, layout, size, p = cache.groups, cache.layout, cache.size, cache.padding
    dyl = ordered(dy, layout)
    dyc = dyl.reshape(_gemm_batch(layout, n), g, f // g, -1)            # (B, G, Fg, M)
    kg = weights.shape[1] * size * size
    if cache.direct:
        dxl, dweights = depthwise_backward(dyl, cache.cols, weights, cache.stride, p, layout,
                                           need_dx, cache.dilation)
    else:
        # dWᵀ = cols @ dyᵀ: ~15% faster in OpenBLAS than dy @ colsᵀ for these shapes.
        dweights_t = (_chunked_dweights(cache, dyc) if cache.chunked
                      else _matmul_t_sum(cache.cols, dyc))               # (G, Kg (+1), Fg)
        dweights = np.ascontiguousarray(dweights_t[:, :kg].swapaxes(-1, -2)
                                        ).reshape(weights.shape)
    dbiases = None
    if cache.ones_row:
        dbiases = dweights_t[0, kg].copy()
    elif cache.biased:
        dbiases = np.einsum("bgfm->gf", dyc).reshape(f)
    grads = (dweights,) if dbiases is None else (dweights, dbiases)
    if not need_dx:
        return (None, *grads)

    x_shape = layout_shape(layout, n, c, h, w)
    if cache.direct:
        pass                             # depthwise_backward gave dx with dweights
    elif cache.chunked and _dx_as_convolution(cache, c // g, f // g):
        dxl = _chunked_dx(dyl, cache, weights)
    elif cache.chunked:
        dxl = _chunked_col2im(dyl, cache, weights)
    else:
        wg = weights.reshape(g, f // g, kg)
        dcols = _matmul(wg.swapaxes(-1, -2), dyc)                      # (B, G, Kg, M)
        if size == 1 and cache.stride == 1 and p == 0:
            dxl = dcols.reshape(x_shape)
        else:
            dxl = col2im(dcols.reshape(cols_shape(layout, x_shape, size, out_h, out_w)),
                         x_shape, cache.stride, p, layout, cache.dilation)
    dx = as_nchw(dxl, layout)
    return ((dx if cache.keep_layout else ordered(dx, "NCHW")), *grads)


# ---------------------------------------------------------------------- CHWN, chunked
# A batch's columns are size² times its input: 38 MB for 16 channels of 32x32 at batch 64,
# more than this machine's 32 MB L3, so that the GEMM streams them from memory.  In CHWN
# the columns of consecutive output rows are consecutive columns of the GEMM, so the
# product runs a few output rows at a time, each chunk's columns made just before it (and
# made again in backward rather than kept).  Measured at 1 thread, batch 64, against
# whole columns: cfg/resnet_cifar.cfg trains 1.33x as fast (forward 130 -> 87 ms) and
# peaks at 236 instead of 483 MB; cfg/residual.cfg 1.27x; LeNet, grouped, batchnorm and
# tiny_cifar train as fast as before, and their forwards run 1.1-1.4x as fast.  Chunks of
# 1 MB measured faster than 2, 4 or 8 MB (a chunk is at least one output row).
#
# The cache keeps the input itself, not its zero-padded copy (the layer before keeps the
# input for its own backward anyway, and layers leave their inputs unchanged), and backward
# pads it again: ~0.25 ms for 16 channels of 32x32 at batch 64, against 4.7 MB a layer
# less to hold from forward to backward.  And the chunks' memory is one buffer per thread,
# shared by every layer: a chunk's columns live only until the next chunk.
#
# Where the columns are few beside the filters (a first layer: 27 values a column for 3x3
# over RGB, 16 filters), the product's output is as big as its input, and both have to stay
# in the core's 512 KB L2: chunks of at most SMALL_K_BYTES of columns and output together
# ran such products 1.9-2.5x as fast at batch 64 (3 -> 16 channels at 32x32: 1.73 -> 0.93
# ms; 1 -> 20 at 28x28: 0.79 -> 0.32 ms), and changed nothing measurable elsewhere.
CHUNK_BYTES = 1 << 20     # columns of one chunk
SMALL_K_BYTES = 1 << 19   # columns and output of one chunk, when K < 4·F
_scratch = threading.local()


def _chunk_rows(k: int, f: int, out_h: int, out_w: int, n: int, itemsize: int) -> int:
    """Output rows a chunk: k values a column, f filters, out_w·n columns a row."""
    row = out_w * n * itemsize
    rows = CHUNK_BYTES // (k * row)
    if k < 4 * f:
        rows = min(rows, SMALL_K_BYTES // ((k + f) * row))
    return max(1, min(out_h, rows))


def _padded(xl: np.ndarray, padding: int) -> np.ndarray:
    """(C, H, W, N) -> (C, H + 2p, W + 2p, N), zeros around; xl itself without padding."""
    if not padding:
        return xl
    c, h, w, n = xl.shape
    xp = np.zeros((c, h + 2 * padding, w + 2 * padding, n), xl.dtype)
    xp[:, padding:padding + h, padding:padding + w] = xl
    return xp


def _chunk_buffer(size: int, dtype) -> np.ndarray:
    """Flat memory for the columns of one chunk: this thread's, grown when too small."""
    nbytes = size * np.dtype(dtype).itemsize
    raw = getattr(_scratch, "raw", None)
    if raw is None or raw.size < nbytes:
        raw = _scratch.raw = np.empty(max(nbytes, CHUNK_BYTES), np.uint8)
    return raw[:nbytes].view(dtype)


def _column_chunks(xp: np.ndarray, size: int, stride: int, out_h: int, out_w: int,
                   groups: int, ones: bool, filters: int, dilation: int = 1):
    """For each chunk of output rows of the padded input xp (C, Hp, Wp, N): (the GEMM
    columns it is, as a slice of M; its columns (1, G, Kg (+1), Mc), with a last row of
    ones if `ones`), each in the same memory, valid until the next.  `filters`: the rows
    of the product whose output has the chunk's columns (F for y, C for dx; 0 for dW,
    whose product sums over them).  Kernel taps lie `dilation` pixels apart."""
    c, _, _, n = xp.shape
    k, per_row = c * size * size, out_w * n
    windows = _windows(xp, "CHWN", stride, (c, size, size, out_h, out_w, n), dilation)
    rows = _chunk_rows(k + ones, filters, out_h, out_w, n, xp.dtype.itemsize)
    flat = _chunk_buffer(rows * (k + ones) * per_row, xp.dtype)
    for r0 in range(0, out_h, rows):
        r1 = min(out_h, r0 + rows)
        mc = (r1 - r0) * per_row
        cols = flat[:(k + ones) * mc].reshape(k + ones, mc)
        np.copyto(cols[:k].reshape(c, size, size, r1 - r0, out_w, n), windows[:, :, :, r0:r1])
        if ones:
            cols[k] = 1
        yield slice(r0 * per_row, r1 * per_row), cols.reshape(1, groups, -1, mc)


def _chunked_product(xl, wg, size, stride, padding, out_h, out_w, ones=False, dilation=1):
    """wg (G, Fg, Kg (+1)) times the columns of xl (C, H, W, N) zero-padded by `padding`:
    (G, Fg, OH·OW·N), chunk by chunk (with `ones`, wg's last column is added: biases)."""
    groups, fg, _ = wg.shape
    xp = _padded(xl, padding)
    y = np.empty((groups, fg, out_h * out_w * xl.shape[3]), xl.dtype)
    for m, cols in _column_chunks(xp, size, stride, out_h, out_w, groups, ones, groups * fg,
                                  dilation):
        _piecewise(wg, cols[0], y[:, :, m])
    return y


# A product with few rows (filters) and more than about a million multiply-adds runs faster
# in OpenBLAS over pieces of a few columns, each small enough for its unpacked small-matrix
# path, than over a chunk's thousands of columns at once, though the chunk is in cache (1
# thread, a chunk of 2,048 to 8,192 columns, as batched products over pieces of PIECE columns
# against one product: 16 filters, K = 28: 37 -> 54 GFLOP/s; 16, K = 145: 43 -> 52; 32, K =
# 145: 59 -> 71; no gain from 64 filters on, nor for 32 with K = 289). A product already
# below SMALL_GEMM, or split in groups, ran slower in pieces (resnet_cifar's 3 -> 16 channels
# at 32x32: 0.92 -> 1.23 ms a forward; grouped.cfg's 4 groups: 0.55 -> 0.63 ms).
PIECE = 128
PIECE_ROWS = 32
SMALL_GEMM = 1 << 20


def _piecewise(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out (G, P, M) = a (G, P, K) @ b (G, K, M), over pieces of PIECE columns where there is
    one group, P is at most PIECE_ROWS and P·K·M is above SMALL_GEMM (the last, shorter
    piece apart)."""
    g, p, k = a.shape
    m = b.shape[-1]
    count = m // PIECE if g == 1 and p <= PIECE_ROWS and p * k * m > SMALL_GEMM else 0
    if count < 2:
        np.matmul(a, b, out=out)
        return
    np.matmul(a[:, None], _chunked(b, count, PIECE), out=_chunked(out, count, PIECE))
    cut = count * PIECE
    if cut < m:
        np.matmul(a, b[..., cut:], out=out[..., cut:])


def _chunked_forward(xl, wg, biases, size, stride, padding, out_h, out_w, dilation):
    """y (G, Fg, OH·OW·N) of xl (C, H, W, N), chunk by chunk, with the biases only where
    they ride in the product (the cache's ones_row); the cache holds xl."""
    c, _, _, n = xl.shape
    groups = wg.shape[0]
    ones = biases is not None and groups == 1
    if ones:
        wg = np.concatenate([wg, biases.reshape(1, -1, 1)], axis=2)
    y = _chunked_product(xl, wg, size, stride, padding, out_h, out_w, ones, dilation)
    cache = ConvCache(xl, (n, c) + xl.shape[1:3], (out_h, out_w), "CHWN", size, stride,
                      padding, groups, False, biases is not None, ones, chunked=True,
                      dilation=dilation)
    return y, cache


def _chunked_dweights(cache: ConvCache, dyc: np.ndarray) -> np.ndarray:
    """Σ over chunks of cols @ dyᵀ, the columns made again from the input:
    (G, Kg (+1), Fg) from dy (1, G, Fg, M)."""
    total = 0
    for m, cols in _column_chunks(_padded(cache.cols, cache.padding), cache.size, cache.stride,
                                  *cache.out_hw, cache.groups, cache.ones_row, 0,
                                  cache.dilation):
        total = total + _matmul_t_sum(cols, dyc[..., m])
    return total


def _dx_as_convolution(cache: ConvCache, cg: int, fg: int) -> bool:
    """Whether _chunked_dx computes dx (else Wᵀ·dy and col2im).

    With stride 1, dx is the convolution of dy, padded by dilation·(size − 1) − padding,
    with the (dilated) kernel turned by 180° and its channels and filters swapped: a
    product with Cg rows that contracts Fg·size² values, where dcols = Wᵀ·dy has
    Cg·size² rows, contracts only Fg values and is followed by size² strided adds back
    into dx.  The first is faster where Fg <= Cg (16 -> 16 at 32x32: 18 against 21 ms
    backward), the second where there are more filters than channels (16 -> 128 at 8x8:
    5.3 against 6.2 ms).
    """
    return (cache.stride == 1 and cache.padding <= cache.dilation * (cache.size - 1)
            and fg <= cg)


def _chunked_dx(dyl: np.ndarray, cache: ConvCache, weights: np.ndarray) -> np.ndarray:
    """dx (C, H, W, N) from dy (F, OH, OW, N) as that convolution (stride 1)."""
    n, c, h, w = cache.x_shape
    f, cg, size, _ = weights.shape
    groups = cache.groups
    turned = weights[:, :, ::-1, ::-1].reshape(groups, f // groups, cg, size, size)
    turned = np.ascontiguousarray(turned.transpose(0, 2, 1, 3, 4)).reshape(groups, cg, -1)
    dx = _chunked_product(dyl, turned, size, 1, cache.dilation * (size - 1) - cache.padding,
                          h, w, dilation=cache.dilation)
    return dx.reshape(c, h, w, n)


def _chunked_col2im(dyl: np.ndarray, cache: ConvCache, weights: np.ndarray) -> np.ndarray:
    """dx (C, H, W, N) from dy (F, OH, OW, N) as Wᵀ·dy and col2im, a few output rows at a
    time: each chunk's dcols (C, size, size, rows, OW, N) is added into the zero-padded dx
    while it is in cache, and no more than a chunk of them exists at once (the whole
    dcols of 16 -> 32 channels at 64x64, batch 64, would be 151 MB)."""
    n, c, h, w = cache.x_shape
    out_h, out_w = cache.out_hw
    f, cg, size, _ = weights.shape
    groups, stride, padding, dilation = cache.groups, cache.stride, cache.padding, cache.dilation
    kg = cg * size * size
    wt = np.ascontiguousarray(weights.reshape(groups, f // groups, kg).swapaxes(-1, -2))
    dy = dyl.reshape(groups, f // groups, -1)                          # (G, Fg, OH·OW·N)
    dxp = np.zeros((c, h + 2 * padding, w + 2 * padding, n), dyl.dtype)
    per_row = out_w * n
    rows = _chunk_rows(c * size * size, f, out_h, out_w, n, dyl.itemsize)
    flat = _chunk_buffer(rows * c * size * size * per_row, dyl.dtype)
    for r0 in range(0, out_h, rows):
        r1 = min(out_h, r0 + rows)
        mc = (r1 - r0) * per_row
        dcols = flat[:groups * kg * mc].reshape(groups, kg, mc)
        np.matmul(wt, dy[:, :, r0 * per_row:r1 * per_row], out=dcols)
        dcols = dcols.reshape(c, size, size, r1 - r0, out_w, n)
        for i in range(size):
            top = r0 * stride + i * dilation
            for j in range(size):
                left = j * dilation
                dxp[:, top:top + stride * (r1 - r0 - 1) + 1:stride,
                    left:left + stride * (out_w - 1) + 1:stride] += dcols[:, i, j]
    return np.ascontiguousarray(dxp[:, padding:padding + h, padding:padding + w])
