"""Activations (darkbp/ops/activations.py) against Darknet's and AlexeyAB's formulas and
finite differences."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from darkbp.ops.activations import ACTIVATIONS, activation, is_activation
from tests import naive

NAMES = sorted(name for name, act in ACTIVATIONS.items() if not act.channels)  # elementwise
CHANNELS = ["normalize_channels", "normalize_channels_softmax",
            "normalize_channels_softmax_maxval"]

# Where each function is not differentiable (or its derivative jumps).
KINKS = {
    "relu": [0.0], "leaky": [0.0], "relie": [0.0], "ramp": [0.0], "elu": [0.0], "selu": [0.0],
    "hardtan": [-1.0, 1.0], "lhtan": [0.0, 1.0], "plse": [-4.0, 4.0],
    "stair": [float(k) for k in range(-7, 8)], "hard_mish": [-2.0], "relu6": [0.0, 6.0],
    "revleaky": [0.0],
}
FORMULA = {**naive.DARKNET_ACTIVATE, **naive.ALEXEYAB_ACTIVATE}


def smooth_points(name, n=160, seed=0):
    """Points in [−6.5, 6.5] at least 1e-3 away from the function's kinks."""
    x = np.random.default_rng(seed).uniform(-6.5, 6.5, n)
    for k in KINKS.get(name, []):
        x = x[np.abs(x - k) > 1e-3]
    return x


def test_registry_has_darknets_fourteen_names_and_alexeyabs():
    assert set(naive.DARKNET_ACTIVATE) == {"linear", "logistic", "relu", "leaky", "tanh", "elu",
                                           "selu", "relie", "ramp", "plse", "hardtan", "lhtan",
                                           "loggy", "stair"}
    assert set(naive.ALEXEYAB_ACTIVATE) == {"mish", "swish", "hard_mish", "gelu", "relu6",
                                            "revleaky"}
    assert set(NAMES) == set(FORMULA)
    assert set(ACTIVATIONS) == set(FORMULA) | set(CHANNELS)
    assert is_activation("leaky") and is_activation("swish") and not is_activation("sigmoid")
    assert activation("tanh") is ACTIVATIONS["tanh"]
    with pytest.raises(ValueError, match="logistic"):
        activation("sigmoid")


@pytest.mark.parametrize("name", NAMES)
def test_forward_equals_darknet_formula(name):
    x = np.concatenate([smooth_points(name), KINKS.get(name, [])])
    expected = np.array([FORMULA[name](v) for v in x], dtype=float)
    np.testing.assert_allclose(ACTIVATIONS[name].forward(x), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(naive.DARKNET_ACTIVATE))
def test_backward_equals_darknet_gradient_of_output(name):
    # Darknet evaluates its gradients at the output y; they must agree with ours,
    # at the kinks too (darkbp takes Darknet's one-sided value there).
    x = np.concatenate([smooth_points(name), KINKS.get(name, [])])
    act = ACTIVATIONS[name]
    y = act.forward(x)
    dy = np.random.default_rng(1).uniform(0.5, 2, x.shape)
    expected = np.array([naive.DARKNET_GRADIENT_OF_OUTPUT[name](v) for v in y], dtype=float) * dy
    np.testing.assert_allclose(act.backward(x, y, dy), expected, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("name", sorted(naive.ALEXEYAB_GRADIENT))
def test_backward_equals_alexeyabs_gradient(name):
    # AlexeyAB's backward evaluates these from the kept input (mish, hard_mish) or from
    # the output and the kept sigmoid (swish): the true derivative, as ours. Beyond ±20
    # (mish's softplus threshold) its formula cancels (1 − e^{−softplus(x)} with softplus
    # ≈ 1e-9), hence an absolute tolerance on these O(1) factors.
    x = np.concatenate([smooth_points(name), KINKS.get(name, []), [-25.0, -20.0, 0.0, 20.0, 25.0]])
    act = ACTIVATIONS[name]
    y = act.forward(x)
    dy = np.random.default_rng(1).uniform(0.5, 2, x.shape)
    expected = np.array([naive.ALEXEYAB_GRADIENT[name](a, b) for a, b in zip(x, y)]) * dy
    np.testing.assert_allclose(act.backward(x, y, dy), expected, rtol=1e-10, atol=1e-13)


def test_gelu_backward_is_its_true_derivative_not_alexeyabs_gradient_of_the_output():
    # AlexeyAB's gelu_gradient is the derivative of its tanh form (with .0356774 for the
    # forward's .035677: 1e-5 relative in the cubic term), but its backward evaluates it at
    # the output y = gelu(x) (gradient_array(l.output, ...)); darkbp evaluates it at x.
    x = smooth_points("gelu")
    act = ACTIVATIONS["gelu"]
    y = act.forward(x)
    ours = act.backward(x, y, np.ones_like(x))
    at_x = np.array([naive.ALEXEYAB_GELU_GRADIENT(v) for v in x])
    at_y = np.array([naive.ALEXEYAB_GELU_GRADIENT(v) for v in y])
    np.testing.assert_allclose(ours, at_x, rtol=0, atol=2e-5)
    assert np.abs(ours - at_y).max() > 0.1
    assert np.abs(ours - at_y)[x > 3].max() < 1e-2     # y ≈ x where gelu is nearly linear


def test_mish_keeps_its_digits_far_below_zero():
    # log(1 + eˣ) rounds to 0 in float32 for x < −17 (AlexeyAB's CPU mish gives 0 there);
    # tanh(softplus(x)) ≈ eˣ, so mish(x) ≈ x·eˣ.
    x = np.array([-19.0, -25.0, -60.0], dtype=np.float32)
    np.testing.assert_allclose(ACTIVATIONS["mish"].forward(x), x * np.exp(x.astype(float)),
                               rtol=1e-6)
    np.testing.assert_array_equal(ACTIVATIONS["mish"].forward(np.float32([21.0, 1e4])),
                                  [21.0, 1e4])


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_finite_differences(name):
    # Elementwise functions: central differences of each element's own f, so that
    # the round-off of a summed loss does not swamp small derivatives. ε = 1e-4:
    # saturated tails (tanh'(6) ≈ 2e-5 beside f ≈ 1) need the round-off 1e-16/ε
    # small, and the truncation error ε²·f'''/6 stays ≈ 1e-8 relative; the points
    # keep 1e-3 from the kinks, so linear pieces are differenced exactly.
    x = smooth_points(name, n=120, seed=2)
    r = np.random.default_rng(3).standard_normal(x.shape)
    act, eps = ACTIVATIONS[name], 1e-4
    numeric = r * (act.forward(x + eps) - act.forward(x - eps)) / (2 * eps)
    assert naive.max_rel_error(act.backward(x, act.forward(x), r), numeric) < 1e-6


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_preserves_dtype(name, dtype):
    x = np.linspace(-5.3, 5.3, 24).astype(dtype).reshape(2, 3, 4)
    act = ACTIVATIONS[name]
    y = act.forward(x)
    dx = act.backward(x, y, np.ones_like(x))
    assert y.dtype == dx.dtype == dtype
    assert y.shape == dx.shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_forward_leaves_input_alone(name):
    x = np.linspace(-3, 3, 13)
    before = x.copy()
    ACTIVATIONS[name].forward(x)
    np.testing.assert_array_equal(x, before)


def test_extreme_inputs_stay_finite_and_quiet():
    x = np.array([-1e4, -100.0, 100.0, 1e4], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in NAMES:
            act = ACTIVATIONS[name]
            y = act.forward(x)
            assert np.all(np.isfinite(y)), name
            assert np.all(np.isfinite(act.backward(x, y, np.ones_like(x)))), name
    np.testing.assert_array_equal(ACTIVATIONS["logistic"].forward(x), [0, 0, 1, 1])
    np.testing.assert_array_equal(ACTIVATIONS["tanh"].forward(x), [-1, -1, 1, 1])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_apply_equals_forward(name, dtype):
    x = np.concatenate([smooth_points(name), KINKS.get(name, [])]).astype(dtype)
    expected = ACTIVATIONS[name].forward(x.copy())
    y = ACTIVATIONS[name].apply(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, expected)
    if ACTIVATIONS[name].in_place is not None:
        assert y is x


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_over_equals_backward(name, dtype):
    x = np.concatenate([smooth_points(name), KINKS.get(name, [])]).astype(dtype)
    act = ACTIVATIONS[name]
    y = act.forward(x)
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    expected = act.backward(x, y, dy.copy())
    dx = act.backward_over(x, y, dy)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, expected)
    if act.backward_in_place is not None:
        assert dx is dy


# --- per pixel across channels ---------------------------------------------------------

def channel_inputs(shape=(2, 5, 3, 4), seed=0, dtype=np.float64):
    """x (N, C, H, W) in [−4, 4], every value 1e-3 or more from 0 (normalize_channels' kinks)
    and every pixel's top two channels 1e-3 or more apart (the maxval shift's)."""
    x = np.random.default_rng(seed).uniform(-4, 4, shape)
    x[np.abs(x) < 1e-3] = 0.5
    act = ACTIVATIONS["normalize_channels_softmax_maxval"]
    assert ACTIVATIONS["normalize_channels"].margin(x) > 1e-3 and act.margin(x) > 1e-3
    return x.astype(dtype)


@pytest.mark.parametrize("name", CHANNELS)
def test_channel_forward_equals_alexeyabs_loops(name):
    x = channel_inputs()
    expected = naive.normalize_channels(x, softmax="softmax" in name, max_val="maxval" in name)
    np.testing.assert_allclose(ACTIVATIONS[name].forward(x), expected, rtol=1e-12, atol=1e-15)
    # the (A, F, B) view a [convolutional] tail hands over, and a CHWN-strided batch
    np.testing.assert_allclose(ACTIVATIONS[name].forward(x.reshape(2, 5, 12)),
                               expected.reshape(2, 5, 12), rtol=1e-12, atol=1e-15)
    chwn = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    np.testing.assert_allclose(ACTIVATIONS[name].forward(chwn), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", CHANNELS)
def test_channel_backward_matches_finite_differences(name):
    # The full Jacobian per pixel: central differences of L = Σ r·y for every input value.
    x, act = channel_inputs(shape=(2, 4, 2, 3), seed=1), ACTIVATIONS[name]
    r = np.random.default_rng(2).standard_normal(x.shape)
    numeric = naive.numeric_grad(lambda: float((r * act.forward(x)).sum()), x, eps=1e-4)
    assert naive.max_rel_error(act.backward(x, act.forward(x), r), numeric) < 1e-6


def test_maxval_differs_from_the_plain_softmax_only_through_eps():
    # e^{x−m}/(eps + Σe^{x−m}) = eˣ/(eps·eᵐ + Σeˣ): the same as the plain one where m = 0.
    x = channel_inputs(seed=3)
    plain, maxval = ACTIVATIONS["normalize_channels_softmax"], ACTIVATIONS[CHANNELS[2]]
    x0 = x - x.max(axis=1, keepdims=True)
    np.testing.assert_allclose(maxval.forward(x), plain.forward(x0), rtol=1e-12)
    assert 1e-9 < np.abs(maxval.forward(x) - plain.forward(x)).max() < 1e-3


@pytest.mark.parametrize("name", CHANNELS)
def test_alexeyabs_cpu_channel_gradient_is_not_the_derivative(name):
    # gradient_array_normalize_channels(_softmax): dx = dy·Σ_c y·dy, not the Jacobian's
    # product; darkbp's is the derivative (the finite-difference test above).
    x, act = channel_inputs(), ACTIVATIONS[name]
    y = act.forward(x)
    dy = np.random.default_rng(4).standard_normal(x.shape)
    cpu = naive.normalize_channels_gradient_cpu(y, dy, softmax="softmax" in name)
    assert naive.max_rel_error(act.backward(x, y, dy), cpu) > 0.5


@pytest.mark.parametrize("name", CHANNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channel_activation_keeps_dtype_shape_and_input(name, dtype):
    x = channel_inputs(dtype=dtype)
    before = x.copy()
    act = ACTIVATIONS[name]
    y = act.forward(x)
    dx = act.backward_over(x, y, np.ones_like(x))
    assert y.dtype == dx.dtype == dtype and y.shape == dx.shape == x.shape
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(act.apply(x.copy()), y)


def test_channel_activations_stay_finite_and_quiet_at_extremes():
    x = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=np.float32).reshape(1, 5, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in CHANNELS:
            for v in (x, -x, x - 1e4, np.full_like(x, -1e4)):
                act = ACTIVATIONS[name]
                y = act.forward(v)
                assert np.all(np.isfinite(y)) and np.all(np.isfinite(act.backward(v, y, y))), name
    # eˣ/(1e-4 + Σeˣ) where every eˣ is far below 1e-4: ≈ 0, not 1/C
    assert ACTIVATIONS["normalize_channels_softmax"].forward(np.full_like(x, -1e4)).max() == 0
    np.testing.assert_allclose(ACTIVATIONS[CHANNELS[2]].forward(np.full_like(x, -1e4)),
                               np.full_like(x, 1 / (5 + 1e-4)), rtol=1e-6)
