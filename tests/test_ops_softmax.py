"""Grouped softmax, cross-entropy and their gradient (darkbp/ops/softmax.py)."""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.ops.softmax import cross_entropy, softmax_cross_entropy_backward, softmax_forward
from tests import naive

GROUPS_T = [(1, 1.0), (2, 1.0), (3, 0.5), (4, 2.5), (1, -1.5)]


@pytest.mark.parametrize("groups,temperature", GROUPS_T)
def test_softmax_equals_loops(groups, temperature):
    x = np.random.default_rng(groups).standard_normal((3, 12)) * 3
    p = softmax_forward(x, groups, temperature)
    np.testing.assert_allclose(p, naive.softmax(x, groups, temperature), rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(p.reshape(3, groups, -1).sum(axis=2), 1.0, rtol=1e-14)


def test_softmax_is_stable_for_huge_inputs():
    x = np.array([[1000.0, 1001.0, 999.0, -1000.0]], dtype=np.float32)
    p = softmax_forward(x)
    assert np.all(np.isfinite(p))
    e = np.exp(np.array([-1.0, 0.0, -2.0]))
    np.testing.assert_allclose(p[0, :3], e / e.sum(), rtol=1e-6)


def test_cross_entropy_equals_loops_and_guards_log_zero():
    rng = np.random.default_rng(0)
    p = softmax_forward(rng.standard_normal((4, 6)))
    truth = np.eye(6)[[0, 3, 5, 2]]
    np.testing.assert_allclose(cross_entropy(p, truth), naive.cross_entropy(p, truth), rtol=1e-14)
    # p = 0 under truth = 0: contributes exactly 0, not nan.
    p0 = np.array([[0.0, 1.0], [0.25, 0.75]])
    np.testing.assert_array_equal(cross_entropy(p0, np.array([[0.0, 1.0], [0.0, 1.0]])),
                                  [0.0, -np.log(0.75)])
    # p underflowed to 0 under a true class: large but finite.
    loss = cross_entropy(p0, np.array([[1.0, 0.0], [1.0, 0.0]]))
    assert np.isfinite(loss[0]) and loss[0] > 700


@pytest.mark.parametrize("groups,temperature", GROUPS_T)
@pytest.mark.parametrize("truth_kind", ["one-hot", "soft, unnormalised"])
def test_gradient_matches_finite_differences(groups, temperature, truth_kind):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 12))
    if truth_kind == "one-hot":
        truth = np.zeros((3, groups, 12 // groups))
        hot = rng.integers(0, 12 // groups, (3, groups))
        truth[np.arange(3)[:, None], np.arange(groups), hot] = 1
        truth = truth.reshape(3, 12)
    else:  # group sums other than 1: Darknet's p − truth would be wrong here
        truth = rng.uniform(0, 0.6, (3, 12))

    def loss():
        return float(np.sum(cross_entropy(softmax_forward(x, groups, temperature), truth)))

    dx = softmax_cross_entropy_backward(softmax_forward(x, groups, temperature), truth,
                                        groups, temperature)
    assert naive.max_rel_error(dx, naive.numeric_grad(loss, x)) < 1e-6
    if truth_kind == "one-hot":  # Darknet's formula holds when each group's truth sums to 1
        p = softmax_forward(x, groups, temperature)
        np.testing.assert_allclose(dx, (p - truth) / temperature, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_preserves_dtype(dtype):
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(dtype)
    truth = np.eye(8)[[1, 6]]  # float64 truth must not upcast float32 results
    p = softmax_forward(x, 2, np.float64(0.5))
    assert p.dtype == dtype
    assert cross_entropy(p, truth).dtype == dtype
    assert softmax_cross_entropy_backward(p, truth, 2, np.float64(0.5)).dtype == dtype


def test_softmax_rejects_groups_that_do_not_divide():
    with pytest.raises(ValueError):
        softmax_forward(np.zeros((1, 10)), groups=3)
