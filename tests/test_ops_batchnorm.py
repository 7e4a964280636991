"""Batch norm (darkbp/ops/batchnorm.py) against loops, the full Jacobian and finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.ops.batchnorm import batchnorm_backward, batchnorm_forward
from tests import naive

SHAPES = [(2, 3, 5), (4, 2, 1), (1, 3, 6), (3, 1, 4)]  # (N, C, P): conv-like, connected-like


def make(shape, seed=0):
    rng = np.random.default_rng(seed)
    spread, centre = rng.uniform(0.5, 3, (1, shape[1], 1)), rng.standard_normal((1, shape[1], 1))
    x = rng.standard_normal(shape) * spread + centre
    scales = rng.uniform(0.5, 2, shape[1])
    return rng, x, scales


@pytest.mark.parametrize("shape", SHAPES)
def test_training_forward_and_rolling_update_equal_loops(shape):
    rng, x, scales = make(shape)
    rolling_mean, rolling_var = rng.standard_normal(shape[1]), rng.uniform(0.5, 2, shape[1])
    old_mean, old_var = rolling_mean.copy(), rolling_var.copy()
    y, _ = batchnorm_forward(x, scales, rolling_mean, rolling_var, train=True)
    ny, mean, _, var_unbiased = naive.batchnorm_forward_train(x, scales)
    np.testing.assert_allclose(y, ny, rtol=1e-12, atol=1e-12)
    # Darknet: rolling = .99·rolling + .01·batch statistic, with the unbiased variance.
    np.testing.assert_allclose(rolling_mean, 0.99 * old_mean + 0.01 * mean, rtol=1e-13)
    np.testing.assert_allclose(rolling_var, 0.99 * old_var + 0.01 * var_unbiased, rtol=1e-13)


@pytest.mark.parametrize("shape", SHAPES)
def test_training_backward_equals_full_jacobian(shape):
    rng, x, scales = make(shape, seed=1)
    y, cache = batchnorm_forward(x, scales, np.zeros(shape[1]), np.ones(shape[1]), train=True)
    dy = rng.standard_normal(shape)
    dx, dscales = batchnorm_backward(dy, cache)
    ndx, ndscales = naive.batchnorm_backward_train(x, scales, dy)
    np.testing.assert_allclose(dx, ndx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dscales, ndscales, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("train", [True, False])
def test_backward_matches_finite_differences(train):
    rng, x, scales = make((3, 2, 4), seed=2)
    rolling_mean, rolling_var = rng.standard_normal(2), rng.uniform(0.5, 2, 2)
    r = rng.standard_normal(x.shape)

    def loss():  # rolling statistics copied: the loss must not move them
        return float(np.sum(r * batchnorm_forward(x, scales, rolling_mean.copy(),
                                                  rolling_var.copy(), train)[0]))

    _, cache = batchnorm_forward(x, scales, rolling_mean.copy(), rolling_var.copy(), train)
    dx, dscales = batchnorm_backward(r, cache)
    assert naive.max_rel_error(dx, naive.numeric_grad(loss, x)) < 1e-6
    assert naive.max_rel_error(dscales, naive.numeric_grad(loss, scales)) < 1e-6


def test_evaluation_uses_rolling_statistics_and_updates_nothing():
    rng, x, scales = make((2, 3, 4), seed=3)
    rolling_mean, rolling_var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    before = rolling_mean.copy(), rolling_var.copy()
    y, _ = batchnorm_forward(x, scales, rolling_mean, rolling_var, train=False)
    expected = scales[:, None] * (x - before[0][:, None]) / np.sqrt(before[1][:, None] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-13)
    np.testing.assert_array_equal(rolling_mean, before[0])
    np.testing.assert_array_equal(rolling_var, before[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_preserves_dtype(dtype, train):
    rng, x, scales = make((4, 3, 5), seed=4)
    x, scales = x.astype(dtype), scales.astype(dtype)
    rolling_mean, rolling_var = np.zeros(3, dtype), np.ones(3, dtype)
    y, cache = batchnorm_forward(x, scales, rolling_mean, rolling_var, train)
    dx, dscales = batchnorm_backward(np.ones_like(y), cache)
    assert y.dtype == dx.dtype == dscales.dtype == rolling_mean.dtype == rolling_var.dtype == dtype


def test_training_rejects_a_single_value_per_channel():
    with pytest.raises(ValueError, match="more than one value"):
        batchnorm_forward(np.ones((1, 3, 1)), np.ones(3), np.zeros(3), np.ones(3), train=True)


def test_rejects_mismatched_parameter_dtype():
    with pytest.raises(ValueError, match="float32"):
        batchnorm_forward(np.ones((2, 3, 1), np.float32), np.ones(3), np.zeros(3), np.ones(3), True)
