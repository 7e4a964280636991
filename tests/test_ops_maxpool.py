"""Darknet max pooling (darkbp/ops/maxpool.py) against the loop reference, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from darkbp.ops.layout import LAYOUTS, as_nchw, ordered
from darkbp.ops.maxpool import maxpool_backward, maxpool_forward
from tests import naive

# (N, C, H, W, size, stride, padding)
CASES = [
    (2, 3, 8, 8, 2, 2, 1),      # Darknet's default 2/2 (padding = size − 1): no padding used
    (2, 3, 7, 9, 2, 2, 1),      # odd sizes: ceil, the extra window column/row is padding
    (2, 2, 7, 7, 2, 2, 0),      # padding 0: floor
    (1, 2, 9, 8, 3, 2, 2),      # overlapping 3/2
    (2, 2, 8, 7, 3, 2, 0),
    (2, 2, 5, 6, 3, 1, 2),      # 3/1, windows centred (top padding 1)
    (2, 2, 5, 5, 1, 1, 0),      # 1/1 is the identity
    (1, 1, 6, 6, 2, 1, 1),      # 2/1 with the default padding: same size out
    (2, 2, 7, 5, 3, 3, 2),
    (1, 2, 6, 6, 2, 3, 0),      # stride > size: cells no window covers
    (2, 1, 4, 9, 4, 2, 3),      # even size with odd padding
    (1, 2, 5, 5, 5, 1, 4),
]


def check_against_naive(rng, n, c, h, w, size, stride, padding, x=None, layout="NCHW"):
    """The fast pool on x stored in `layout` equals the loop reference, forward and backward."""
    if x is None:
        x = rng.standard_normal((n, c, h, w))
    y, cache = maxpool_forward(as_nchw(ordered(x, layout), layout), size, stride, padding)
    ny, arg = naive.maxpool_forward(x, size, stride, padding)
    np.testing.assert_array_equal(y, ny)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(maxpool_backward(dy, cache), naive.maxpool_backward(x.shape, arg, dy),
                               rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}k{}s{}p{}".format(*c))
def test_maxpool_equals_naive(case):
    check_against_naive(np.random.default_rng(sum(case)), *case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}k{}s{}p{}".format(*c))
def test_maxpool_ties_equal_naive(case):
    # Few distinct values: ties everywhere, the first maximum must win as in Darknet.
    rng = np.random.default_rng(1)
    n, c, h, w = case[:4]
    check_against_naive(rng, *case, x=rng.integers(0, 3, (n, c, h, w)).astype(float))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 2), h=st.integers(1, 9), w=st.integers(1, 9),
       size=st.integers(1, 4), stride=st.integers(1, 3), padding=st.integers(0, 4),
       ties=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_maxpool_equals_naive_random_shapes(n, c, h, w, size, stride, padding, ties, seed):
    if (h + padding - size) // stride + 1 < 1 or (w + padding - size) // stride + 1 < 1:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, (n, c, h, w)).astype(float) if ties else None
    check_against_naive(rng, n, c, h, w, size, stride, padding, x=x)


def test_constant_input_gives_gradient_to_each_windows_first_cell():
    x = np.full((1, 1, 4, 6), 7.0)
    y, cache = maxpool_forward(x, 2, 2, 0)
    assert np.all(y == 7.0)
    dx = maxpool_backward(np.arange(1.0, 7.0).reshape(1, 1, 2, 3), cache)
    expected = np.zeros((4, 6))
    expected[0::2, 0::2] = np.arange(1.0, 7.0).reshape(2, 3)  # top-left of each window
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_planted_equal_maxima_first_in_row_major_order_wins():
    x = np.zeros((1, 1, 3, 3))
    # One 3x3 window. Equal maxima at (0, 2), (1, 0) and (2, 1): row-major first is (0, 2),
    # even though (1, 0) has the smaller column.
    x[0, 0, 0, 2] = x[0, 0, 1, 0] = x[0, 0, 2, 1] = 5.0
    y, cache = maxpool_forward(x, 3, 1, 0)
    dx = maxpool_backward(np.ones((1, 1, 1, 1)), cache)
    assert y[0, 0, 0, 0] == 5.0
    assert dx[0, 0, 0, 2] == 1.0 and dx.sum() == 1.0


def test_overlapping_windows_sum_gradient_on_shared_maximum():
    x = np.zeros((1, 1, 3, 5))
    x[0, 0, 1, 2] = 1.0  # the centre column is in both 3x3 windows of stride 2
    y, cache = maxpool_forward(x, 3, 2, 0)
    dx = maxpool_backward(np.array([[[[2.0, 3.0]]]]), cache)
    assert dx[0, 0, 1, 2] == 5.0 and dx.sum() == 5.0


def test_padding_cells_are_minus_infinity():
    # All inputs negative: a zero-padded pool would output 0 at the border.
    x = -1.0 - np.arange(9.0).reshape(1, 1, 3, 3)
    y, _ = maxpool_forward(x, 2, 2, 1)  # 3x3 -> 2x2, last row/column windows half outside
    np.testing.assert_array_equal(y[0, 0], [[-1.0, -3.0], [-7.0, -9.0]])


def test_window_wholly_outside_is_minus_infinity_without_gradient():
    x = np.ones((1, 1, 1, 1))
    y, cache = maxpool_forward(x, 1, 1, 2)  # top offset −1: windows at −1, 0, 1
    np.testing.assert_array_equal(y[0, 0], [[-np.inf, -np.inf, -np.inf],
                                            [-np.inf, 1.0, -np.inf],
                                            [-np.inf, -np.inf, -np.inf]])
    dx = maxpool_backward(np.ones(y.shape), cache)
    np.testing.assert_array_equal(dx, [[[[1.0]]]])


def test_maxpool_gradient_matches_finite_differences():
    rng = np.random.default_rng(4)
    x = rng.permutation(np.arange(2 * 2 * 7 * 6, dtype=float)).reshape(2, 2, 7, 6) / 10  # no ties
    r = rng.standard_normal(maxpool_forward(x, 3, 2, 2)[0].shape)
    _, cache = maxpool_forward(x, 3, 2, 2)
    numeric = naive.numeric_grad(lambda: float(np.sum(r * maxpool_forward(x, 3, 2, 2)[0])), x)
    assert naive.max_rel_error(maxpool_backward(r, cache), numeric) < 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size,stride,padding", [(2, 2, 1), (3, 2, 2), (2, 2, 0)])
def test_maxpool_preserves_dtype(dtype, size, stride, padding):
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 8)).astype(dtype)
    y, cache = maxpool_forward(x, size, stride, padding)
    dx = maxpool_backward(np.ones_like(y), cache)
    assert y.dtype == dx.dtype == dtype


def test_maxpool_rejects_empty_output():
    with pytest.raises(ValueError):
        maxpool_forward(np.zeros((1, 1, 2, 2)), 4, 1, 0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}k{}s{}p{}".format(*c))
@pytest.mark.parametrize("ties", [False, True])
def test_maxpool_keeps_a_chwn_layout_and_equals_naive(case, ties):
    rng = np.random.default_rng(2)
    n, c, h, w, size, stride, padding = case
    x = rng.integers(0, 3, (n, c, h, w)).astype(float) if ties else rng.standard_normal((n, c, h, w))
    y, cache = maxpool_forward(as_nchw(ordered(x, "CHWN"), "CHWN"), size, stride, padding)
    ny, arg = naive.maxpool_forward(x, size, stride, padding)
    np.testing.assert_array_equal(y, ny)
    assert np.shares_memory(ordered(y, "CHWN"), y)           # y is stored CHWN too
    dy = rng.standard_normal(y.shape)
    for dy_layout in LAYOUTS:
        dx = maxpool_backward(as_nchw(ordered(dy, dy_layout), dy_layout), cache)
        np.testing.assert_allclose(dx, naive.maxpool_backward(x.shape, arg, dy),
                                   rtol=1e-14, atol=1e-14)
        assert np.shares_memory(ordered(dx, "CHWN"), dx)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 3), c=st.integers(1, 2), h=st.integers(1, 9), w=st.integers(1, 9),
       size=st.integers(1, 4), stride=st.integers(1, 3), padding=st.integers(0, 4),
       ties=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_maxpool_chwn_equals_naive_random_shapes(n, c, h, w, size, stride, padding, ties, seed):
    if (h + padding - size) // stride + 1 < 1 or (w + padding - size) // stride + 1 < 1:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, (n, c, h, w)).astype(float) if ties else rng.standard_normal((n, c, h, w))
    check_against_naive(rng, n, c, h, w, size, stride, padding, x=x, layout="CHWN")


@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}k{}s{}p{}".format(*c))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_forward_without_backward_gives_the_same_output(case, layout):
    rng = np.random.default_rng(3)
    n, c, h, w, size, stride, padding = case
    x = as_nchw(ordered(rng.standard_normal((n, c, h, w)), layout), layout)
    y, cache = maxpool_forward(x, size, stride, padding, backward=False)
    assert cache is None
    np.testing.assert_array_equal(y, maxpool_forward(x, size, stride, padding)[0])
    np.testing.assert_array_equal(y, naive.maxpool_forward(x, size, stride, padding)[0])
