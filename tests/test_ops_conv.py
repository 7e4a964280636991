"""Grouped convolution (darkbp/ops/conv.py) against the six-loop reference and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from darkbp.ops import conv, im2col
from darkbp.ops.conv import conv_backward, conv_forward
from darkbp.ops.layout import LAYOUTS, as_nchw, ordered
from tests import naive

# (N, C, H, W, F, size, stride, padding, groups)
CASES = [
    (1, 1, 5, 5, 1, 1, 1, 0, 1),
    (2, 3, 6, 5, 4, 3, 1, 1, 1),
    (3, 2, 7, 9, 3, 3, 2, 0, 1),
    (2, 4, 8, 6, 6, 3, 1, 1, 2),
    (1, 4, 7, 7, 8, 3, 2, 1, 4),
    (2, 4, 6, 7, 4, 3, 1, 1, 4),      # depthwise
    (2, 6, 9, 8, 12, 3, 3, 2, 6),     # depthwise, two filters per channel, stride 3
    (2, 3, 9, 10, 2, 5, 1, 2, 1),
    (1, 2, 11, 8, 3, 5, 3, 1, 1),
    (2, 2, 6, 6, 4, 2, 2, 0, 2),
    (2, 3, 5, 7, 2, 2, 1, 1, 1),
    (3, 4, 5, 4, 4, 1, 1, 0, 1),      # 1x1 stride 1: no im2col
    (2, 4, 5, 6, 6, 1, 1, 2, 2),      # 1x1 stride 1 with padding
    (2, 3, 7, 6, 2, 1, 2, 0, 1),      # 1x1 stride 2
    (2, 3, 4, 5, 2, 1, 3, 1, 1),
    (1, 1, 10, 3, 2, 3, 1, 0, 1),     # tall and narrow
    (2, 2, 3, 12, 2, 3, 2, 2, 2),     # short and wide
    (2, 8, 6, 6, 8, 3, 2, 1, 8),      # depthwise, stride 2
    (4, 1, 8, 8, 3, 5, 1, 2, 1),
    (2, 2, 4, 4, 2, 5, 1, 2, 1),      # kernel larger than the input, padding makes it fit
]


@pytest.fixture(params=im2col.LAYOUTS)
def layout(request, monkeypatch):
    """Run a test under each column layout, whatever choose_layout would pick."""
    monkeypatch.setattr(conv, "choose_layout", lambda *shape: request.param)
    return request.param


def check_against_naive(rng, n, c, h, w, f, size, stride, padding, groups, dilation=1):
    x = rng.standard_normal((n, c, h, w))
    weights = rng.standard_normal((f, c // groups, size, size))
    y, cache = conv_forward(x, weights, stride, padding, groups, dilation=dilation)
    np.testing.assert_allclose(y, naive.conv_forward(x, weights, stride, padding, groups,
                                                     dilation),
                               rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, dw = conv_backward(dy, cache, weights)
    ndx, ndw = naive.conv_backward(x, weights, dy, stride, padding, groups, dilation)
    np.testing.assert_allclose(dx, ndx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, ndw, rtol=1e-12, atol=1e-12)
    assert y.flags.c_contiguous and dx.flags.c_contiguous


@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}F{}k{}s{}p{}g{}".format(*c))
def test_conv_equals_naive(case, layout):
    check_against_naive(np.random.default_rng(hash(case) % 2**32), *case)


@st.composite
def conv_shapes(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    c = groups * draw(st.integers(1, 2))
    f = groups * draw(st.integers(1, 3))
    size = draw(st.sampled_from([1, 2, 3, 5]))
    stride = draw(st.integers(1, 3))
    padding = draw(st.integers(0, 2))
    dilation = draw(st.sampled_from([1, 1, 2, 3]))
    span = dilation * (size - 1) + 1
    h = draw(st.integers(max(1, span - 2 * padding), 9 + span))
    w = draw(st.integers(max(1, span - 2 * padding), 9 + span))
    n = draw(st.integers(1, 3))
    return n, c, h, w, f, size, stride, padding, groups, dilation


@settings(max_examples=40, deadline=None)
@given(shape=conv_shapes(), seed=st.integers(0, 2**32 - 1),
       layout=st.sampled_from(im2col.LAYOUTS))
def test_conv_equals_naive_random_shapes(shape, seed, layout):
    original = conv.choose_layout
    conv.choose_layout = lambda *shape: layout
    try:
        check_against_naive(np.random.default_rng(seed), *shape)
    finally:
        conv.choose_layout = original


# Dilated kernels (AlexeyAB's `dilation`): (N, C, H, W, F, size, stride, padding, groups,
# dilation). Taps dilation pixels apart; padding below, at and above dilation·(size − 1)
# (the chunked dx runs as a convolution only up to it), stride > 1, even sizes, depthwise
# (the direct kernel), a kernel whose taps mostly fall in the padding.
DILATED = [
    (2, 1, 9, 9, 3, 3, 1, 2, 1, 2),       # AlexeyAB's pad=1: padding = (size // 2)·dilation
    (2, 3, 10, 9, 4, 3, 2, 2, 1, 2),
    (2, 2, 12, 11, 4, 5, 1, 6, 1, 3),
    (1, 2, 8, 9, 2, 3, 1, 0, 1, 2),       # no padding: the output shrinks by 2·dilation
    (2, 4, 9, 8, 4, 3, 1, 1, 2, 3),       # padding below dilation·(size − 1) = 6, groups
    (2, 2, 7, 7, 4, 3, 1, 5, 1, 2),       # padding above dilation·(size − 1) = 4
    (2, 4, 8, 8, 4, 3, 1, 2, 4, 2),       # depthwise, the direct kernel
    (2, 4, 9, 10, 8, 3, 2, 3, 4, 3),      # depthwise, two filters per channel, stride 2
    (2, 3, 7, 8, 2, 2, 1, 1, 1, 3),       # even size
    (3, 2, 5, 6, 3, 1, 1, 0, 1, 4),       # 1x1: dilation changes nothing
    (2, 1, 4, 4, 2, 3, 1, 4, 1, 4),       # taps mostly in the padding
]


def _dilated_id(case):
    return "N{}C{}H{}W{}F{}k{}s{}p{}g{}d{}".format(*case)


@pytest.mark.parametrize("case", DILATED, ids=_dilated_id)
def test_dilated_conv_equals_naive(case, layout):
    check_against_naive(np.random.default_rng(hash(case) % 2**32), *case)


@pytest.mark.parametrize("case", DILATED, ids=_dilated_id)
def test_dilated_conv_in_chunks_of_one_row_equals_naive(case, monkeypatch):
    # The chunked CHWN path with one output row a chunk, and 3-column GEMM pieces.
    monkeypatch.setattr(conv, "choose_layout", lambda *shape: "CHWN")
    monkeypatch.setattr(conv, "CHUNK_BYTES", 1)
    monkeypatch.setattr(conv, "CHUNK", 3)
    check_against_naive(np.random.default_rng(hash(case) % 2**32), *case)


@pytest.mark.parametrize("case", [
    (2, 4, 5, 6, 4, 3, 2, 1, 2, 1),
    (2, 3, 6, 5, 3, 3, 1, 1, 3, 1),
    (1, 2, 5, 5, 3, 2, 1, 0, 1, 1),
    (1, 2, 7, 6, 2, 3, 1, 2, 1, 2),
    (2, 4, 8, 7, 4, 3, 2, 3, 4, 3),
])
def test_conv_gradients_match_finite_differences(case, layout):
    n, c, h, w, f, size, stride, padding, groups, dilation = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, c, h, w))
    weights = rng.standard_normal((f, c // groups, size, size))
    y, cache = conv_forward(x, weights, stride, padding, groups, dilation=dilation)
    r = rng.standard_normal(y.shape)  # loss = Σ r·y, so dy = r

    def loss():
        return float(np.sum(r * conv_forward(x, weights, stride, padding, groups,
                                             dilation=dilation)[0]))

    dx, dw = conv_backward(r, cache, weights)
    assert naive.max_rel_error(dx, naive.numeric_grad(loss, x)) < 1e-6
    assert naive.max_rel_error(dw, naive.numeric_grad(loss, weights)) < 1e-6


def test_need_dx_false_skips_dx_only(layout):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 6, 6))
    weights = rng.standard_normal((3, 2, 3, 3))
    y, cache = conv_forward(x, weights, 1, 1, 1)
    dy = rng.standard_normal(y.shape)
    dx_none, dw = conv_backward(dy, cache, weights, need_dx=False)
    assert dx_none is None
    np.testing.assert_allclose(dw, naive.conv_backward(x, weights, dy, 1, 1, 1)[1], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size,stride,padding,groups", [(3, 1, 1, 1), (1, 1, 0, 2), (3, 2, 1, 4)])
def test_conv_preserves_dtype(dtype, size, stride, padding, groups, layout):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    weights = rng.standard_normal((4, 4 // groups, size, size)).astype(dtype)
    y, cache = conv_forward(x, weights, stride, padding, groups)
    dx, dw = conv_backward(np.ones_like(y), cache, weights)
    assert y.dtype == dx.dtype == dw.dtype == dtype
    if dtype == np.float32:  # float32 agrees with the float64 reference to float32 precision
        ref = naive.conv_forward(x.astype(float), weights.astype(float), stride, padding, groups)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_conv_accepts_non_contiguous_input():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 6, 5, 2)).transpose(0, 3, 1, 2)  # (3, 2, 6, 5), strided
    weights = rng.standard_normal((2, 2, 3, 3))
    y, _ = conv_forward(x, weights, 1, 1, 1)
    np.testing.assert_allclose(y, naive.conv_forward(x, weights, 1, 1, 1), rtol=1e-12, atol=1e-12)


def test_choose_layout_uses_both():
    # Which layout is faster is a benchmark question; both must be reachable.
    assert im2col.choose_layout(64) == "CHWN"
    assert im2col.choose_layout(2) == "CHWN"
    assert im2col.choose_layout(1) == "NCHW"


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,groups", [
    ((1, 4, 5, 5), (4, 2, 3, 3), 1, 0, 3),   # groups do not divide channels
    ((1, 4, 5, 5), (4, 4, 3, 3), 1, 0, 2),   # weights' channel axis is not C/groups
    ((1, 4, 5, 5), (4, 4, 3, 2), 1, 0, 1),   # non-square kernel
    ((1, 4, 2, 2), (4, 4, 3, 3), 1, 0, 1),   # no output pixel
])
def test_conv_rejects_bad_shapes(x_shape, w_shape, stride, padding, groups):
    with pytest.raises(ValueError):
        conv_forward(np.zeros(x_shape), np.zeros(w_shape), stride, padding, groups)


def test_conv_rejects_mixed_dtypes():
    with pytest.raises(ValueError, match="float32"):
        conv_forward(np.zeros((1, 1, 3, 3), np.float32), np.zeros((1, 1, 3, 3)), 1, 0, 1)


def _stored(x, layout):
    """x (N, C, H, W) with the same values, stored in `layout` (layout.py)."""
    return as_nchw(ordered(x, layout), layout)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}F{}k{}s{}p{}g{}".format(*c))
@pytest.mark.parametrize("x_layout", LAYOUTS)
def test_keep_layout_equals_naive_in_the_conv_layout(case, layout, x_layout):
    n, c, h, w, f, size, stride, padding, groups = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x = rng.standard_normal((n, c, h, w))
    weights = rng.standard_normal((f, c // groups, size, size))
    y, cache = conv_forward(_stored(x, x_layout), weights, stride, padding, groups,
                            keep_layout=True)
    np.testing.assert_allclose(y, naive.conv_forward(x, weights, stride, padding, groups),
                               rtol=1e-12, atol=1e-12)
    assert np.shares_memory(ordered(y, cache.layout), y)     # y is stored in cache.layout
    dy = rng.standard_normal(y.shape)
    for dy_layout in LAYOUTS:
        dx, dw = conv_backward(_stored(dy, dy_layout), cache, weights)
        ndx, ndw = naive.conv_backward(x, weights, dy, stride, padding, groups)
        np.testing.assert_allclose(dx, ndx, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dw, ndw, rtol=1e-12, atol=1e-12)
        assert np.shares_memory(ordered(dx, cache.layout), dx)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}F{}k{}s{}p{}g{}".format(*c))
def test_column_chunked_products_equal_naive(case, layout, monkeypatch):
    # Chunks of 3 columns, so that every small case runs the chunked products,
    # remainders included.
    monkeypatch.setattr(conv, "CHUNK", 3)
    check_against_naive(np.random.default_rng(hash(case) % 2**32), *case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}F{}k{}s{}p{}g{}".format(*c))
def test_biases_are_added_and_their_gradient_returned(case, layout):
    # Without groups the biases ride in the GEMMs (a row of ones); with groups or no
    # im2col they are added apart: both must give conv + bias and Σ dy.
    n, c, h, w, f, size, stride, padding, groups = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x = rng.standard_normal((n, c, h, w))
    weights = rng.standard_normal((f, c // groups, size, size))
    biases = rng.standard_normal(f)
    for keep_layout in (False, True):
        y, cache = conv_forward(x, weights, stride, padding, groups, keep_layout, biases)
        expected = naive.conv_forward(x, weights, stride, padding, groups)
        np.testing.assert_allclose(y, expected + biases[:, None, None], rtol=1e-12, atol=1e-12)
        dy = rng.standard_normal(y.shape)
        ndx, ndw = naive.conv_backward(x, weights, dy, stride, padding, groups)
        dx, dw, db = conv_backward(dy, cache, weights)
        np.testing.assert_allclose(dx, ndx, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dw, ndw, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)
        none, dw, db = conv_backward(dy, cache, weights, need_dx=False)
        assert none is None
        np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)


def test_biases_with_chunked_products(monkeypatch):
    monkeypatch.setattr(conv, "CHUNK", 3)
    rng = np.random.default_rng(11)
    x, weights, biases = rng.standard_normal((3, 2, 7, 6)), rng.standard_normal((4, 2, 3, 3)), \
        rng.standard_normal(4)
    y, cache = conv_forward(x, weights, 1, 1, 1, biases=biases)
    np.testing.assert_allclose(y, naive.conv_forward(x, weights, 1, 1, 1) + biases[:, None, None],
                               rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    _, _, db = conv_backward(dy, cache, weights)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)


def test_conv_rejects_bad_biases():
    with pytest.raises(ValueError, match="biases"):
        conv_forward(np.zeros((1, 1, 3, 3)), np.zeros((2, 1, 3, 3)), 1, 0, 1, biases=np.zeros(3))
    with pytest.raises(ValueError, match="biases"):
        conv_forward(np.zeros((1, 1, 3, 3)), np.zeros((2, 1, 3, 3)), 1, 0, 1,
                     biases=np.zeros(2, np.float32))


def test_buffers_keep_the_columns_memory_between_calls():
    """One image (NCHW) keeps its columns in the layer's buffers; a batch (CHWN) keeps a
    chunk's columns in the thread's buffer, whichever layer runs, and caches its input."""
    rng = np.random.default_rng(12)
    weights = rng.standard_normal((3, 2, 3, 3))
    for n in (1, 4):
        buffers, kept = {}, None
        for dtype, biases in ((np.float64, None), (np.float64, None), (np.float32, None),
                              (np.float32, rng.standard_normal(3))):
            x = rng.standard_normal((n, 2, 6, 5)).astype(dtype)
            w = weights.astype(dtype)
            b = None if biases is None else biases.astype(dtype)
            y, cache = conv_forward(x, w, 1, 0, 1, biases=b, buffers=buffers)
            expected = naive.conv_forward(x.astype(float), weights, 1, 0, 1)
            if biases is not None:
                expected += biases[:, None, None]
            np.testing.assert_allclose(y, expected, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                       atol=1e-5 if dtype == np.float32 else 1e-12)
            assert cache.chunked == (n > 1)
            if n == 1:
                assert np.shares_memory(cache.cols, buffers["cols"])
                if kept is not None and kept.dtype == dtype and kept.shape == buffers["cols"].shape:
                    assert buffers["cols"] is kept             # it fits: reused
                kept = buffers["cols"]
            else:
                assert "cols" not in buffers
                assert cache.cols.shape == (2, 6, 5, n) and np.array_equal(
                    cache.cols, x.transpose(1, 2, 3, 0))       # the input, not padded
                scratch = conv._scratch.raw
                if kept is not None:
                    assert scratch is kept                     # 1 MB fits every chunk here
                kept = scratch


@pytest.mark.parametrize("chunk_bytes, small_k_bytes", [(1, 1 << 19), (3000, 1 << 19),
                                                       (1 << 20, 2000)],
                         ids=["one row", "a few rows", "few columns beside the filters"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}F{}k{}s{}p{}g{}".format(*c))
def test_chunked_columns_equal_naive(case, chunk_bytes, small_k_bytes, monkeypatch):
    """CHWN convolutions run a few output rows at a time: any chunk size, a last chunk of
    fewer rows, dx as a convolution (Fg <= Cg, stride 1) or through col2im."""
    monkeypatch.setattr(conv, "choose_layout", lambda *shape: "CHWN")
    monkeypatch.setattr(conv, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(conv, "SMALL_K_BYTES", small_k_bytes)
    check_against_naive(np.random.default_rng(sum(case) + chunk_bytes), *case)


@pytest.mark.parametrize("piece", [2, 3])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}F{}k{}s{}p{}g{}".format(*c))
def test_chunks_in_pieces_of_a_few_columns_equal_naive(case, piece, monkeypatch):
    """Products with few rows run over pieces of PIECE columns: pieces of 2 or 3 columns, so
    that every small case runs them, a last shorter piece included."""
    monkeypatch.setattr(conv, "choose_layout", lambda *shape: "CHWN")
    monkeypatch.setattr(conv, "PIECE", piece)
    monkeypatch.setattr(conv, "SMALL_GEMM", 0)
    check_against_naive(np.random.default_rng(sum(case) + piece), *case)


def test_chunked_dx_through_col2im_never_holds_every_column():
    """More filters than channels: dx is Wᵀ·dy folded back by col2im, a chunk of output rows
    at a time, so a backward never allocates the whole dcols (C·9 rows by every output
    pixel of the batch: 4.7 MB here, where dx is 0.5 MB)."""
    import tracemalloc

    rng = np.random.default_rng(1)
    stride = 1
    x = as_nchw(ordered(rng.standard_normal((8, 4, 64, 32)), "CHWN"), "CHWN")
    weights = rng.standard_normal((16, 4, 3, 3))
    y, cache = conv_forward(x, weights, stride, 1, 1, keep_layout=True)
    assert cache.chunked and not conv._dx_as_convolution(cache, 4, 16)
    dy = as_nchw(ordered(rng.standard_normal(y.shape), "CHWN"), "CHWN")  # as layers pass it
    dcols_bytes = 4 * 9 * dy[:, 0].size * 8
    conv_backward(dy, cache, weights)                 # the thread's chunk buffer, grown once
    tracemalloc.start()
    try:
        dx, dw = conv_backward(dy, cache, weights)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    ndx, ndw = naive.conv_backward(np.asarray(x), weights, dy, stride, 1, 1)
    np.testing.assert_allclose(dx, ndx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, ndw, rtol=1e-12, atol=1e-12)
    assert peak < dcols_bytes / 2, (peak, dcols_bytes)


def test_few_columns_beside_the_filters_make_smaller_chunks():
    # 3x3 over 3 channels into 16 filters (a first layer): 2,048 columns of 28 + 16 values
    # fill SMALL_K_BYTES; 16 channels into 16 filters (K = 144 >= 4·16) fill CHUNK_BYTES.
    assert conv._chunk_rows(28, 16, 32, 32, 64, 4) == 1
    assert conv._chunk_rows(28, 16, 32, 32, 16, 4) == 5
    assert conv._chunk_rows(145, 16, 28, 28, 16, 4) == 4
    assert conv._chunk_rows(28, 4, 32, 32, 64, 4) == 4    # few filters: the columns' 1 MB


@pytest.mark.parametrize("case", [c for c in CASES if c[6] > 1],
                         ids=lambda c: "N{}C{}H{}W{}F{}k{}s{}p{}g{}".format(*c))
@pytest.mark.parametrize("phases", [False, True])
def test_strided_col2im_with_and_without_phases(case, phases, layout, monkeypatch):
    # Whether col2im sums by stride phase depends on the batch (run length): force each way.
    monkeypatch.setattr(im2col, "PHASE_RUNS_BELOW", 10**9 if phases else 0)
    check_against_naive(np.random.default_rng(hash(case) % 2**32), *case)


# (N, C, H, W, F, size, padding): one input channel per group, stride 1, 1 or 2 filters each
DIRECT_CASES = [(2, 4, 6, 7, 4, 3, 1), (3, 3, 5, 5, 6, 3, 0), (2, 2, 7, 6, 4, 5, 2),
                (1, 5, 4, 4, 5, 3, 1), (2, 1, 6, 5, 2, 3, 1), (4, 3, 3, 8, 3, 2, 1)]


@pytest.mark.parametrize("case", DIRECT_CASES)
def test_depthwise_direct_kernel_equals_naive(case, layout):
    n, c, h, w, f, size, padding = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((n, c, h, w))
    weights = rng.standard_normal((f, 1, size, size))
    biases = rng.standard_normal(f)
    y, cache = conv_forward(x, weights, 1, padding, c, biases=biases)
    assert cache.direct
    np.testing.assert_allclose(y, naive.conv_forward(x, weights, 1, padding, c)
                               + biases[:, None, None], rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = conv_backward(dy, cache, weights)
    ndx, ndw = naive.conv_backward(x, weights, dy, 1, padding, c)
    np.testing.assert_allclose(dx, ndx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, ndw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)
    none, dw_only, _ = conv_backward(dy, cache, weights, need_dx=False)
    assert none is None
    np.testing.assert_array_equal(dw_only, dw)


def test_direct_kernel_only_where_it_is_faster():
    x = np.ones((2, 4, 6, 6))
    assert not conv_forward(x, np.ones((4, 1, 3, 3)), 2, 1, 4)[1].direct       # stride 2
    assert not conv_forward(x, np.ones((12, 1, 3, 3)), 1, 1, 4)[1].direct      # 3 per channel
    assert not conv_forward(x, np.ones((4, 1, 1, 1)), 1, 0, 4)[1].direct       # 1x1: no im2col
    assert not conv_forward(x, np.ones((4, 2, 3, 3)), 1, 1, 2)[1].direct       # 2 per group
