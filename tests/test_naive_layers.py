"""The loop references in tests/naive_layers.py: hand-computed cases and adjoint checks.

Each backward must be the exact adjoint of its forward: for a random dy, the gradient
of Σ dy·forward(x) by central differences (ε = 1e-6) equals backward(dy).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests import naive
from tests import naive_layers as nl


def grid(*shape):
    """0, 1, 2, … laid out in `shape` (float), so a value names its flat Darknet index."""
    return np.arange(float(np.prod(shape))).reshape(shape)


def assert_adjoint(forward, backward_value, x, dy):
    """backward_value == ∂(Σ dy·forward(x))/∂x by finite differences."""
    def loss():
        return float(np.sum(dy * forward()))
    numeric = naive.numeric_grad(loss, x)
    assert naive.max_rel_error(backward_value, numeric) < 1e-6


def positive(rng, shape):
    # values in [0.5, 1.5]: no gradient entry is tiny, so relative errors stay meaningful
    return rng.uniform(0.5, 1.5, shape)


# --- avgpool ----------------------------------------------------------------------------------

def test_avgpool_by_hand():
    x = np.array([[[[1., 2.], [3., 4.]], [[0., 0.], [0., 8.]]]])
    # (1+2+3+4)/4 = 2.5 and 8/4 = 2
    np.testing.assert_array_equal(nl.avgpool_forward(x), [[[[2.5]], [[2.0]]]])
    dx = nl.avgpool_backward(x.shape, np.array([[[[4.]], [[8.]]]]))
    # each of the 4 cells gets dy/4
    np.testing.assert_array_equal(dx, [[[[1., 1.], [1., 1.]], [[2., 2.], [2., 2.]]]])


def test_avgpool_adjoint():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 3, 4))
    dy = positive(rng, (2, 3, 1, 1))
    assert_adjoint(lambda: nl.avgpool_forward(x), nl.avgpool_backward(x.shape, dy), x, dy)


# --- shortcut ---------------------------------------------------------------------------------

def test_shortcut_src_twice_the_size():
    prev = np.array([[[[1., 2.], [3., 4.]]]])
    src = grid(1, 1, 4, 4)          # src[j, i] = 4j + i
    # stride = 4/2 = 2, sample = 1: out[j, i] = 2·prev[j, i] + 10·src[2j, 2i]
    # src[0,0]=0, src[0,2]=2, src[2,0]=8, src[2,2]=10
    out = nl.shortcut_forward(prev, src, alpha=2.0, beta=10.0)
    np.testing.assert_array_equal(out, [[[[2., 24.], [86., 108.]]]])
    d_prev, d_src = nl.shortcut_backward(prev.shape, src.shape, np.ones((1, 1, 2, 2)), 2.0, 10.0)
    np.testing.assert_array_equal(d_prev, np.full((1, 1, 2, 2), 2.0))   # every cell covered
    expected = np.zeros((1, 1, 4, 4))
    expected[0, 0, ::2, ::2] = 10.0
    np.testing.assert_array_equal(d_src, expected)


def test_shortcut_src_half_the_size_and_fewer_channels():
    prev = np.ones((1, 2, 4, 4))
    src = np.array([[[[1., 2.], [3., 4.]]]])
    # sample = 4/2 = 2, min channels 1: only channel 0's even cells get 3·1 + src[j, i];
    # every other cell keeps prev unscaled
    out = nl.shortcut_forward(prev, src, alpha=3.0, beta=1.0)
    np.testing.assert_array_equal(out[0, 0], [[4., 1., 5., 1.],
                                              [1., 1., 1., 1.],
                                              [6., 1., 7., 1.],
                                              [1., 1., 1., 1.]])
    np.testing.assert_array_equal(out[0, 1], np.ones((4, 4)))
    d_prev, d_src = nl.shortcut_backward(prev.shape, src.shape, np.ones((1, 2, 4, 4)), 3.0, 1.0)
    # exact: 3 at the covered cells, 1 elsewhere (Darknet's backward would give 3 everywhere)
    expected = np.ones((1, 2, 4, 4))
    expected[0, 0, ::2, ::2] = 3.0
    np.testing.assert_array_equal(d_prev, expected)
    np.testing.assert_array_equal(d_src, np.ones((1, 1, 2, 2)))


def test_shortcut_mismatched_ratios_raise():
    with pytest.raises(ValueError):
        nl.shortcut_forward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 4, 2)))


@pytest.mark.parametrize("prev_shape, src_shape", [
    ((2, 3, 4, 4), (2, 3, 4, 4)),
    ((2, 2, 2, 3), (2, 3, 4, 6)),      # src twice as large, more channels
    ((1, 3, 4, 6), (1, 2, 2, 3)),      # src half as large, fewer channels
    ((1, 2, 2, 2), (1, 2, 3, 3)),      # 3 over 2: both ratios round to 1
])
def test_shortcut_adjoint(prev_shape, src_shape):
    rng = np.random.default_rng(1)
    prev, src = rng.standard_normal(prev_shape), rng.standard_normal(src_shape)
    dy = positive(rng, prev_shape)
    alpha, beta = 0.7, 1.3
    d_prev, d_src = nl.shortcut_backward(prev_shape, src_shape, dy, alpha, beta)
    assert_adjoint(lambda: nl.shortcut_forward(prev, src, alpha, beta), d_prev, prev, dy)
    assert_adjoint(lambda: nl.shortcut_forward(prev, src, alpha, beta), d_src, src, dy)


# --- route ------------------------------------------------------------------------------------

def test_route_by_hand():
    a = np.array([1., 2.]).reshape(1, 2, 1, 1)
    b = np.array([10., 20., 30., 40.]).reshape(1, 4, 1, 1)
    np.testing.assert_array_equal(nl.route_forward([a, b]).ravel(), [1, 2, 10, 20, 30, 40])
    # groups=2, group_id=1: the second half of each input's channels
    np.testing.assert_array_equal(nl.route_forward([a, b], 2, 1).ravel(), [2, 30, 40])
    da, db = nl.route_backward([a.shape, b.shape], np.array([7., 8., 9.]).reshape(1, 3, 1, 1), 2, 1)
    np.testing.assert_array_equal(da.ravel(), [0, 7])
    np.testing.assert_array_equal(db.ravel(), [0, 0, 8, 9])


@pytest.mark.parametrize("groups, group_id", [(1, 0), (2, 0), (2, 1)])
def test_route_adjoint(groups, group_id):
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((2, 2, 3, 2)), rng.standard_normal((2, 4, 3, 2))]
    dy = positive(rng, (2, (2 + 4) // groups, 3, 2))
    dxs = nl.route_backward([x.shape for x in xs], dy, groups, group_id)
    for x, dx in zip(xs, dxs):
        assert_adjoint(lambda: nl.route_forward(xs, groups, group_id), dx, x, dy)


# --- reorg ------------------------------------------------------------------------------------

# reorg_cpu with w=2, h=2, c=4, stride 2 (c/s² = 1): in_index p = 4k + 2j + i maps to
# out_index q = (2i + k%2) + 4·(2j + k//2). Listing out[p] = x[q] for p = 0..15:
#   k=0: q = 0, 2, 8, 10   k=1: 1, 3, 9, 11   k=2: 4, 6, 12, 14   k=3: 5, 7, 13, 15
SPACE_TO_DEPTH = [0, 2, 8, 10, 1, 3, 9, 11, 4, 6, 12, 14, 5, 7, 13, 15]


def test_reorg_alexeyab_1x1x4x4():
    # AlexeyAB passes the output sizes (2, 2, 4): forward flag 0, out[p] = x[q]
    x = grid(1, 1, 4, 4)
    y = nl.reorg_forward(x, 2, darknet="alexeyab")
    assert y.shape == (1, 4, 2, 2)
    np.testing.assert_array_equal(y.ravel(), SPACE_TO_DEPTH)
    # channel k holds the pixels at offset (k//2, k%2) of every 2x2 block
    np.testing.assert_array_equal(y[0, 1], [[1, 3], [9, 11]])


def test_reorg_pjreddie_needs_channels_multiple_of_stride_squared():
    # pjreddie passes the input sizes (4, 4, 1): c/s² = 0, Darknet would divide by zero
    with pytest.raises(ValueError):
        nl.reorg_forward(grid(1, 1, 4, 4), 2)


def test_reorg_pjreddie_by_hand():
    # pjreddie passes the input sizes (w=2, h=2, c=4); reverse=0 is forward flag 0,
    # out[p] = x[q] with the pairs above, into a (16, 1, 1) output
    x = grid(1, 4, 2, 2)
    y = nl.reorg_forward(x, 2)
    assert y.shape == (1, 16, 1, 1)
    np.testing.assert_array_equal(y.ravel(), SPACE_TO_DEPTH)
    # reverse=1 is forward flag 1, out[q] = x[p], into (1, 4, 4): the inverse listing
    z = nl.reorg_forward(x, 2, reverse=True)
    assert z.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(z.ravel(), [0, 4, 1, 5, 8, 12, 9, 13, 2, 6, 3, 7, 10, 14, 11, 15])
    # depth-to-space: out[2j + k//2, 2i + k%2] = x[k, j, i]
    np.testing.assert_array_equal(z[0, 0, 1::2, 0::2], x[0, 2])


@pytest.mark.parametrize("shape, stride, reverse, darknet", [
    ((2, 4, 4, 6), 2, False, "pjreddie"),
    ((2, 8, 2, 3), 2, True, "pjreddie"),
    ((1, 9, 3, 3), 3, False, "pjreddie"),
    ((2, 3, 4, 6), 2, False, "alexeyab"),
    ((1, 16, 2, 2), 2, True, "alexeyab"),
])
def test_reorg_is_a_permutation_and_backward_its_adjoint(shape, stride, reverse, darknet):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    y = nl.reorg_forward(x, stride, reverse, darknet=darknet)
    np.testing.assert_array_equal(np.sort(y.ravel()), np.sort(x.ravel()))
    np.testing.assert_array_equal(nl.reorg_backward(shape, y, stride, reverse, darknet=darknet), x)
    dy = positive(rng, y.shape)
    dx = nl.reorg_backward(shape, dy, stride, reverse, darknet=darknet)
    assert_adjoint(lambda: nl.reorg_forward(x, stride, reverse, darknet=darknet), dx, x, dy)


# --- upsample ---------------------------------------------------------------------------------

def test_upsample_stride_2():
    x = np.array([[[[1., 2.], [3., 4.]]]])
    expected = [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    np.testing.assert_array_equal(nl.upsample_forward(x, 2)[0, 0], expected)
    np.testing.assert_array_equal(nl.upsample_forward(x, 2, 0.5)[0, 0], np.array(expected) / 2)
    # backward sums each 2x2 block of dy, times scale: 4 ones → 4·0.5
    dx = nl.upsample_backward(x.shape, np.ones((1, 1, 4, 4)), 2, 0.5)
    np.testing.assert_array_equal(dx, np.full((1, 1, 2, 2), 2.0))


def test_upsample_stride_minus_2_sums_blocks():
    x = grid(1, 1, 4, 4)
    # blocks: 0+1+4+5 = 10, 2+3+6+7 = 18, 8+9+12+13 = 42, 10+11+14+15 = 50
    np.testing.assert_array_equal(nl.upsample_forward(x, -2)[0, 0], [[10, 18], [42, 50]])
    np.testing.assert_array_equal(nl.upsample_forward(x, -2, 0.25)[0, 0],
                                  [[2.5, 4.5], [10.5, 12.5]])
    dx = nl.upsample_backward(x.shape, np.array([[[[1., 2.], [3., 4.]]]]), -2)
    np.testing.assert_array_equal(dx[0, 0],
                                  [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    with pytest.raises(ValueError):
        nl.upsample_forward(grid(1, 1, 5, 4), -2)


@pytest.mark.parametrize("shape, stride, scale", [
    ((2, 2, 2, 3), 2, 1.0), ((1, 2, 2, 2), 3, 0.5),
    ((2, 2, 4, 6), -2, 1.0), ((1, 1, 6, 3), -3, 0.7),
])
def test_upsample_adjoint(shape, stride, scale):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    dy = positive(rng, nl.upsample_forward(x, stride, scale).shape)
    dx = nl.upsample_backward(shape, dy, stride, scale)
    assert_adjoint(lambda: nl.upsample_forward(x, stride, scale), dx, x, dy)


# --- local ------------------------------------------------------------------------------------

def test_local_one_filter_3x3_size_2():
    x = grid(1, 1, 3, 3)            # [[0,1,2],[3,4,5],[6,7,8]]
    # pad=0: out = (3 − 2)/1 + 1 = 2 per side, 4 locations; location loc's weights pick
    # kernel cell loc (row-major (ki, kj)), weights shape (L=4, F=1, K=4)
    weights = np.zeros((4, 1, 4))
    for loc in range(4):
        weights[loc, 0, loc] = 1.0
    biases = np.array([10., 20., 30., 40.])
    # (0,0): window at (0,0), cell (0,0) → x[0,0]=0;  (0,1): window (0,1), cell (0,1) → x[0,2]=2
    # (1,0): window (1,0), cell (1,0) → x[2,0]=6;     (1,1): window (1,1), cell (1,1) → x[2,2]=8
    y = nl.local_forward(x, weights, biases, size=2, stride=1, pad=0)
    np.testing.assert_array_equal(y, [[[[10., 22.], [36., 48.]]]])


def test_local_one_filter_3x3_size_3_pad_1():
    x = grid(1, 1, 3, 3)
    # pad=1: out = (3 − 1)/1 + 1 = 3, im2col (3 + 2 − 3)/1 + 1 = 3; weights at location loc
    # are all loc + 1, so out = (loc + 1) × the zero-padded 3x3 box sum:
    # box sums [[8, 15, 12], [21, 36, 27], [20, 33, 24]]
    weights = np.repeat(np.arange(1., 10.), 9).reshape(9, 1, 9)
    y = nl.local_forward(x, weights, np.zeros(9), size=3, stride=1, pad=1)
    box = np.array([[8, 15, 12], [21, 36, 27], [20, 33, 24]])
    np.testing.assert_array_equal(y[0, 0], box * np.arange(1, 10).reshape(3, 3))
    # two filters: biases are filter major, (F, out_h, out_w)
    flat = np.arange(18.)
    y2 = nl.local_forward(x, np.zeros(9 * 2 * 9), flat, size=3, stride=1, pad=1)
    np.testing.assert_array_equal(y2[0, 1], flat[9:].reshape(3, 3))


def test_local_pad_that_im2col_disagrees_with_raises():
    # size 5, pad 1: the layer has (7 − 1) + 1 = 7 locations per side, im2col (7 + 2 − 5) + 1 = 5
    with pytest.raises(ValueError):
        nl.local_forward(np.zeros((1, 1, 7, 7)), np.zeros(49 * 25), np.zeros(49), 5, 1, 1)


@pytest.mark.parametrize("shape, filters, size, stride, pad", [
    ((2, 2, 3, 4), 2, 3, 2, 1),
    ((1, 2, 3, 3), 3, 2, 1, 0),
])
def test_local_adjoint(shape, filters, size, stride, pad):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    out_h, out_w = nl.local_out_size(shape[2], shape[3], size, stride, pad)
    weights = rng.standard_normal((out_h * out_w, filters, shape[1] * size * size))
    biases = rng.standard_normal((filters, out_h, out_w))
    dy = positive(rng, (shape[0], filters, out_h, out_w))
    dx, dw, db = nl.local_backward(x, weights, dy, size, stride, pad)
    assert dw.shape == weights.shape and db.shape == biases.shape

    def forward():
        return nl.local_forward(x, weights, biases, size, stride, pad)
    assert_adjoint(forward, dx, x, dy)
    assert_adjoint(forward, dw, weights, dy)
    assert_adjoint(forward, db, biases, dy)


# --- crop -------------------------------------------------------------------------------------

def test_crop_by_hand():
    x = grid(1, 1, 3, 4)            # [[0,1,2,3],[4,5,6,7],[8,9,10,11]]
    np.testing.assert_array_equal(nl.crop_forward(x, 2, 2, 1, 1, flip=False, adjust=False)[0, 0],
                                  [[5, 6], [9, 10]])
    # flip: col = W − dw − j − 1 = 2 − j
    np.testing.assert_array_equal(nl.crop_forward(x, 2, 2, 1, 1, flip=True, adjust=False)[0, 0],
                                  [[6, 5], [10, 9]])
    # adjust (noadjust=0): 2·v − 1
    np.testing.assert_array_equal(nl.crop_forward(x, 2, 2, 1, 1, flip=True, adjust=True)[0, 0],
                                  [[11, 9], [19, 17]])
    dx = nl.crop_backward(x.shape, np.array([[[[1., 2.], [3., 4.]]]]), 2, 2, 1, 1, True, True)
    np.testing.assert_array_equal(dx[0, 0], [[0, 0, 0, 0], [0, 4, 2, 0], [0, 8, 6, 0]])


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("adjust", [False, True])
def test_crop_adjoint(flip, adjust):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, 4, 5))
    dy = positive(rng, (2, 2, 2, 3))
    dx = nl.crop_backward(x.shape, dy, 2, 3, 1, 2, flip, adjust)
    assert_adjoint(lambda: nl.crop_forward(x, 2, 3, 1, 2, flip, adjust), dx, x, dy)


# --- cost -------------------------------------------------------------------------------------

def test_cost_by_hand():
    pred = np.array([[0.5, 2.0, 1.0]])
    truth = np.array([[0.0, 0.0, 1.0]])          # d = t − p = −0.5, −2, 0
    # sse: ½(0.25 + 4) = 2.125, gradient p − t; Darknet reports 4.25
    np.testing.assert_array_equal(nl.cost_forward(pred, truth, "sse"), [2.125])
    np.testing.assert_array_equal(nl.cost_gradient(pred, truth, "sse"), [[0.5, 2.0, 0.0]])
    np.testing.assert_array_equal(nl.darknet_reported_cost(pred, truth, "sse"), [4.25])
    # L1: 0.5 + 2 = 2.5; Darknet's delta is −1 at d = 0 too, so the gradient there is +1
    np.testing.assert_array_equal(nl.cost_forward(pred, truth, "L1"), [2.5])
    np.testing.assert_array_equal(nl.cost_gradient(pred, truth, "L1"), [[1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(nl.darknet_delta(pred, truth, "L1"), [[-1.0, -1.0, -1.0]])
    # smooth: ½·0.25 + (2 − ½) = 1.625; Darknet reports 0.25 + (2·2 − 1) = 3.25
    np.testing.assert_array_equal(nl.cost_forward(pred, truth, "smooth"), [1.625])
    np.testing.assert_array_equal(nl.darknet_reported_cost(pred, truth, "smooth"), [3.25])
    np.testing.assert_array_equal(nl.cost_gradient(pred, truth, "smooth"), [[0.5, 1.0, 0.0]])
    # scale multiplies cost and gradient
    np.testing.assert_array_equal(nl.cost_forward(pred, truth, "sse", 3.0), [6.375])
    np.testing.assert_array_equal(nl.cost_gradient(pred, truth, "sse", 3.0), [[1.5, 6.0, 0.0]])


def test_cost_masked_by_hand():
    assert nl.SECRET_NUM == -1234
    pred = np.array([[0.5, 2.0, 1.0, 3.0]])
    truth = np.array([[0.0, 0.0, 1.0, -1234.0]])  # the last element is masked
    np.testing.assert_array_equal(nl.cost_forward(pred, truth, "masked", 2.0), [4.25])
    np.testing.assert_array_equal(nl.cost_gradient(pred, truth, "masked", 2.0),
                                  [[1.0, 4.0, 0.0, 0.0]])
    # sse on the same data counts the last element: ½(3 + 1234)²
    assert nl.cost_forward(pred, truth, "sse")[0] == 2.125 + 0.5 * 1237.0 ** 2


@pytest.mark.parametrize("kind", nl.COST_KINDS)
def test_cost_gradient_is_darknets_delta_and_exact(kind):
    rng = np.random.default_rng(7)
    # |t − p| in [0.1, 0.8] or [1.3, 2], away from the kinks at 0 and 1
    size = (3, 2, 2, 2)
    gap = np.where(rng.random(size) < 0.5,
                   rng.uniform(0.1, 0.8, size), rng.uniform(1.3, 2.0, size))
    truth = rng.standard_normal(size)
    pred = truth + np.where(rng.random(size) < 0.5, -1, 1) * gap
    if kind == "masked":
        truth[0, 0, 0, :] = nl.SECRET_NUM
    scale = 0.8
    grad = nl.cost_gradient(pred, truth, kind, scale)
    np.testing.assert_allclose(grad, -scale * nl.darknet_delta(pred, truth, kind), rtol=1e-15)
    cost = nl.cost_forward(pred, truth, kind, 1.0)
    factor = 1.0 if kind == "L1" else 2.0
    np.testing.assert_allclose(nl.darknet_reported_cost(pred, truth, kind), factor * cost,
                               rtol=1e-13)

    def loss():
        return float(np.sum(nl.cost_forward(pred, truth, kind, scale)))
    numeric = naive.numeric_grad(loss, pred)
    assert naive.max_rel_error(grad, numeric) < 1e-6


# --- dropout ----------------------------------------------------------------------------------

def test_dropout_by_hand():
    x = np.array([1., 2., 3., 4.])
    draws = np.array([0.1, 0.6, 0.5, 0.9])
    # dropped where draw < 0.5 (0.5 itself is kept); kept values × 1/(1 − 0.5) = 2
    np.testing.assert_array_equal(nl.dropout_forward(x, draws, 0.5, train=True), [0, 4, 6, 8])
    np.testing.assert_array_equal(nl.dropout_forward(x, draws, 0.5, train=False), x)
    np.testing.assert_array_equal(nl.dropout_backward(draws, np.ones(4), 0.5), [0, 2, 2, 2])


def test_dropout_adjoint():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 2, 2))
    draws = rng.random(x.shape)
    dy = positive(rng, x.shape)
    dx = nl.dropout_backward(draws, dy, 0.3)
    assert_adjoint(lambda: nl.dropout_forward(x, draws, 0.3, True), dx, x, dy)
