"""Batch norm (darkbp/ops/batchnorm.py) against loops, the full Jacobian, finite differences,
and Darknet's own numbers (../shared/darknet-golden/bn_leaky).

Both darkbp and Darknet normalise a training batch with the unbiased variance
v = Σ(x − mean)²/(M − 1). darkbp divides by sqrt(v + 1e-5) and back-propagates the exact
gradient of that. Darknet (pjreddie, src/blas.c) divides by sqrt(v) + 1e-6 in normalize_cpu,
and its backward (mean_delta_cpu, variance_delta_cpu, normalize_delta_cpu) is the gradient
of neither: it takes sqrt(v + 1e-5) and, from ∂v/∂x, 2(x − mean)/M instead of
2(x − mean)/(M − 1). With g = scale·dy and s = sqrt(v + 1e-5), x̂ = (x − mean)/s:

    darkbp   dx = (g − Σg/M − x̂·Σ(g·x̂)/(M − 1)) / s
    Darknet  dx = (g − Σg/M − x̂·Σ(g·x̂)/M) / s        (and its x_norm uses sqrt(v) + 1e-6)

so the two differ by x̂·Σ(g·x̂)/(M(M − 1))/s, a relative 1/(M − 1) of the x̂ term: 1/7 for
bn_leaky's batch-normalised [connected] (M = 8 images), 1/511 and 1/2047 for its convs. The
forward's epsilon changes x̂ by the factor (sqrt(v) + 1e-6)/sqrt(v + 1e-5), 1 − 6e-5 to 1 − 2e-6
there. `DarknetBatchnorm` below transcribes Darknet's formulas (float32, Darknet's order of
operations and summation) with switches for darkbp's, and the tests show each effect alone.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

import darkbp.layers.affine
from darkbp.network import Network
from darkbp.ops.batchnorm import batchnorm_backward, batchnorm_forward
from darkbp.ops.conv import conv_forward
from darkbp.passes import EVAL, Noise, Pass
from darkbp.sgd import SGD
from tests import naive
from tests.golden import LEARNING_RATE, Golden, arrays, relative
from tests.test_golden import FORWARD_TOL, LOSS_TOL, WEIGHTS_TOL

SHAPES = [(2, 3, 5), (4, 2, 1), (1, 3, 6), (3, 1, 4), (2, 1, 1), (5, 4, 3)]  # (N, C, P)


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
    ny, mean, variance = naive.batchnorm_forward_train(x, scales)
    np.testing.assert_allclose(y, ny, rtol=1e-12, atol=1e-12)
    # Darknet: rolling = .99·rolling + .01·batch statistic, the same unbiased variance.
    np.testing.assert_allclose(rolling_mean, 0.99 * old_mean + 0.01 * mean, rtol=1e-13)
    np.testing.assert_allclose(rolling_var, 0.99 * old_var + 0.01 * variance, rtol=1e-13)


def test_training_normalises_to_the_unbiased_variance():
    # Σŷ² = (M − 1)·v/(v + eps), v numpy's ddof=1 variance (the biased one gives M·v/(v + eps)).
    _, x, _ = make((4, 3, 5), seed=7)
    y, _ = batchnorm_forward(x, np.ones(3), np.zeros(3), np.ones(3), train=True)
    v = x.var(axis=(0, 2), ddof=1)
    np.testing.assert_allclose((y ** 2).sum(axis=(0, 2)), 19 * v / (v + 1e-5), rtol=1e-12)


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


# --- Darknet's batch norm, transcribed --------------------------------------------------------

def _sequential_sum(rows: np.ndarray) -> np.ndarray:
    """Σ along each row one value after the other, rounded to the dtype at each step, as
    Darknet's `sum += ...` loops do (its -Ofast build does not reorder them: the golden
    layer outputs tell a sequential float sum from a pairwise or a vectorised one)."""
    return np.add.accumulate(rows, axis=1, dtype=rows.dtype)[:, -1]


class _DarknetCache(NamedTuple):
    x: np.ndarray           # (C, M) the input, each channel's values in Darknet's order
    mean: np.ndarray
    variance: np.ndarray    # unbiased
    x_norm: np.ndarray      # (C, M)
    scales: np.ndarray
    shape: tuple            # of the (A, C, B) array darkbp handed over


class DarknetBatchnorm:
    """Darknet's batch norm (pjreddie src/blas.c and src/batchnorm_layer.c) with the call
    signature of darkbp's kernel, to stand in for it in darkbp/layers/affine.py.

    forward_eps "darknet": x_norm = (x − mean)/(sqrt(v) + 1e-6) (normalize_cpu), "darkbp":
    /sqrt(v + 1e-5). divisor "M": normalize_delta_cpu's 2(x − mean)/M, "M-1": the exact
    derivative of the unbiased variance. Darknet = ("darknet", "M"); darkbp's formulas =
    ("darkbp", "M-1"). Arithmetic follows the C: float arrays, double where C promotes
    (sqrt, pow, the double constants), sums sequential in (image, pixel) order.
    """

    def __init__(self, images: int, forward_eps: str = "darknet", divisor: str = "M"):
        self.images, self.forward_eps, self.divisor = images, forward_eps, divisor

    def install(self, monkeypatch) -> None:
        # The layers' fused tail (ops/tail.py) would bypass the two functions replaced here.
        monkeypatch.setattr(darkbp.layers.affine, "fusable", lambda act: False)
        monkeypatch.setattr(darkbp.layers.affine, "batchnorm_forward", self.forward)
        monkeypatch.setattr(darkbp.layers.affine, "batchnorm_backward", self.backward)

    def _rows(self, a):
        """(A, C, B) as darkbp stores a batch -> (C, M), each row in Darknet's order."""
        n, c, b = a.shape
        if n == self.images:                                   # (N, C, P)
            rows = a.transpose(1, 0, 2)
        else:                                                  # (1, C, P·N), stored CHWN
            rows = a[0].reshape(c, b // self.images, self.images).transpose(0, 2, 1)
        return np.ascontiguousarray(rows).reshape(c, -1)

    def _unrows(self, rows, shape):
        n, c, b = shape
        if n == self.images:
            return np.ascontiguousarray(rows.reshape(c, n, b).transpose(1, 0, 2))
        out = rows.reshape(c, self.images, b // self.images).transpose(0, 2, 1)
        return np.ascontiguousarray(out).reshape(shape)

    def forward(self, x, scales, rolling_mean, rolling_variance, train, shards=None,
                pjreddie=False):
        # (pjreddie: darkbp's pass option for Darknet's inference; forward_eps decides here)
        assert shards is None
        f = x.dtype.type
        r = self._rows(x)
        m = r.shape[1]
        if train:
            mean = _sequential_sum(r) * f(1.0 / m)                        # mean_cpu
            variance = _sequential_sum(((r - mean[:, None]).astype(np.float64) ** 2)
                                       .astype(x.dtype)) * f(1.0 / (m - 1))   # variance_cpu
            rolling_mean *= f(.99)
            rolling_mean += f(.01) * mean
            rolling_variance *= f(.99)
            rolling_variance += f(.01) * variance
        else:
            mean, variance = rolling_mean, rolling_variance
        v = variance.astype(np.float64)
        if self.forward_eps == "darknet":
            denominator = np.sqrt(v) + np.float64(f(1e-6))
        else:
            denominator = np.sqrt((variance + f(1e-5)).astype(np.float64))
        x_norm = ((r - mean[:, None]) / denominator[:, None]).astype(x.dtype)
        y = x_norm * scales[:, None]                                        # scale_bias
        return self._unrows(y, x.shape), _DarknetCache(r, mean, variance, x_norm, scales, x.shape)

    def backward(self, dy, cache):
        """backward_batchnorm_layer without its backward_bias (affine.py adds the bias grads)."""
        f = dy.dtype.type
        r, mean, x_norm = cache.x, cache.mean, cache.x_norm
        m = r.shape[1]
        delta = self._rows(dy)
        dscales = _sequential_sum(delta * x_norm)                          # backward_scale_cpu
        delta = delta * cache.scales[:, None]                               # scale_bias
        v_eps = (cache.variance + f(1e-5)).astype(np.float64)
        mean_delta = (_sequential_sum(delta) * (-1.0 / np.sqrt(v_eps))).astype(dy.dtype)
        centred = r - mean[:, None]
        variance_delta = (_sequential_sum(delta * centred) * (-.5 * v_eps ** -1.5)).astype(dy.dtype)
        divisor = m if self.divisor == "M" else m - 1
        dx = (delta / np.sqrt(v_eps)[:, None]                               # normalize_delta_cpu
              + variance_delta[:, None] * 2.0 * centred / divisor
              + (mean_delta / f(m))[:, None]).astype(dy.dtype)
        return self._unrows(dx, cache.shape), dscales


def test_darkbp_backward_differs_from_darknets_rule_by_the_unbiased_factor():
    # Same forward (darkbp's epsilon) for both: only the backward's 1/M vs 1/(M − 1) differs.
    for shape in SHAPES:
        rng, x, scales = make(shape, seed=5)
        dy = rng.standard_normal(shape)
        _, cache = batchnorm_forward(x, scales, np.zeros(shape[1]), np.ones(shape[1]), True)
        dx, dscales = batchnorm_backward(dy, cache)
        rule = DarknetBatchnorm(shape[0], forward_eps="darkbp", divisor="M")
        _, theirs = rule.forward(x, scales, np.zeros(shape[1]), np.ones(shape[1]), True)
        dx_darknet, dscales_darknet = rule.backward(dy, theirs)
        m = shape[0] * shape[2]
        s = np.sqrt(x.var(axis=(0, 2), ddof=1) + 1e-5)[:, None]
        x_hat = (x - x.mean(axis=(0, 2))[:, None]) / s
        g = dy * scales[:, None]
        predicted = -x_hat * (g * x_hat).sum(axis=(0, 2))[:, None] / (m * (m - 1)) / s
        np.testing.assert_allclose(dx - dx_darknet, predicted, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(dscales, dscales_darknet, rtol=1e-12)
        # And with 1/(M − 1) the transcription is darkbp's exact gradient.
        exact = DarknetBatchnorm(shape[0], forward_eps="darkbp", divisor="M-1")
        np.testing.assert_allclose(exact.backward(dy, theirs)[0], dx, rtol=1e-10, atol=1e-13)


# --- against Darknet's bn_leaky run -----------------------------------------------------------
# Three batch-normalised leaky convs (M = 2048, 512, 512 values per channel) and a
# batch-normalised leaky [connected] (M = 8), from Darknet's init.weights (biases 0, scales 1).

BN_LAYERS = (0, 1, 3, 5)
# Darknet's own float32 sums over 2048 values of layer 0 are ~2e-6 from the exact ones (the
# float64 formula is 1.9e-6 from its layer-0 output; the sequential float32 transcription 3e-7).
DARKNET_ROUNDING = 2.5e-6
LAYER_TOL = 2 * FORWARD_TOL     # a hidden layer's output: the rounding of up to five layers


@pytest.fixture(scope="module")
def fixture():
    return Golden("bn_leaky")


def _linear_map(layer, x):
    """A BN layer's pre-normalisation output z (N, C, P) for input x, in float64."""
    n = x.shape[0]
    if layer.type == "convolutional":
        z, _ = conv_forward(x.astype(np.float64), layer.weights.astype(np.float64),
                            layer.stride, layer.padding, layer.groups)
        return np.asarray(z).reshape(n, layer.out_shape[0], -1)
    return (x.reshape(n, -1).astype(np.float64) @ layer.weights.astype(np.float64).T)[:, :, None]


def _layer_input(fixture, kind, index):
    layer_in = fixture.input if index == 0 else fixture.layer_output(kind, index - 1)
    return layer_in.reshape((fixture.batch,) + fixture.network().layers[index].in_shape)


def _run(fixture, network, ctx):
    return [y.reshape(fixture.batch, -1) for y in network.run(fixture.input, ctx, keep=True)]


def test_transcribed_darknet_forward_reproduces_its_training_pass(fixture, monkeypatch):
    DarknetBatchnorm(fixture.batch).install(monkeypatch)
    outputs = _run(fixture, fixture.network(), Pass.training(Noise(0, 0)))
    for i, y in enumerate(outputs):
        assert relative(y, fixture.layer_output("train1", i)) < LAYER_TOL, i
    assert relative(outputs[-1], fixture.f32("train_forward.f32")) < FORWARD_TOL


def test_darkbp_training_forward_is_darknets_times_the_epsilon_factor(fixture):
    # Each BN layer on Darknet's own input: leaky(x̂·1 + 0) scales with x̂, so darkbp's output is
    # Darknet's times (sqrt(v) + 1e-6)/sqrt(v + 1e-5) per channel, v the batch's unbiased variance.
    network = fixture.network()
    for i in BN_LAYERS:
        layer = network.layers[i]
        assert not layer.biases.any() and (layer.scales == 1).all() and layer.activation == "leaky"
        x = _layer_input(fixture, "train1", i)
        v = _linear_map(layer, x).var(axis=(0, 2), ddof=1)
        factor = ((np.sqrt(v) + 1e-6) / np.sqrt(v + 1e-5))[:, None]
        ours = layer.forward(x, Pass.training()).reshape(fixture.batch, layer.out_shape[0], -1)
        theirs = fixture.layer_output("train1", i).reshape(ours.shape)
        assert relative(ours, theirs) > 2 * DARKNET_ROUNDING, i        # 3.2e-5 .. 5.6e-5
        assert relative(ours, theirs * factor) < DARKNET_ROUNDING, i


def test_darkbp_training_forward_is_the_transcription_with_darkbps_epsilon(fixture, monkeypatch):
    # What is left of darkbp's 2.9e-5 from Darknet's network output once the transcription takes
    # darkbp's epsilon: nothing but rounding (float64, where rounding is ~1e-15).
    ours = _run(fixture, fixture.network(), Pass.training(Noise(0, 0)))
    assert 1e-5 < relative(ours[-1], fixture.f32("train_forward.f32")) < 1e-4
    exact = _run(fixture, fixture.network().astype(np.float64), Pass.training(Noise(0, 0)))
    DarknetBatchnorm(fixture.batch, forward_eps="darkbp").install(monkeypatch)
    transcribed = _run(fixture, fixture.network().astype(np.float64), Pass.training(Noise(0, 0)))
    for i, (a, b) in enumerate(zip(exact, transcribed)):
        assert relative(a, b) < 1e-12, i


@pytest.mark.parametrize("weights, reference", [("bn_eval.weights", "forward_bn_eval.f32"),
                                                ("init.weights", "forward.f32")])
def test_transcribed_darknet_inference_reproduces_darknets(fixture, monkeypatch, weights,
                                                           reference):
    DarknetBatchnorm(fixture.batch).install(monkeypatch)
    outputs = _run(fixture, fixture.network(weights), EVAL)
    assert relative(outputs[-1], fixture.f32(reference)) < FORWARD_TOL
    if weights == "init.weights":
        for i, y in enumerate(outputs):
            assert relative(y, fixture.layer_output("forward", i)) < LAYER_TOL, i


def test_darkbp_inference_from_bn_eval_differs_by_the_epsilon_only(fixture, monkeypatch):
    ours = fixture.network("bn_eval.weights").forward(fixture.input)
    assert 1e-5 < relative(ours, fixture.f32("forward_bn_eval.f32")) < 1e-4     # 6.2e-5
    DarknetBatchnorm(fixture.batch, forward_eps="darkbp").install(monkeypatch)
    transcribed = fixture.network("bn_eval.weights").forward(fixture.input)
    assert relative(ours, transcribed) < FORWARD_TOL


def test_darkbp_inference_from_init_is_darknets_scaled_by_the_epsilons(fixture):
    # At init every rolling variance is 0: Darknet divides by 1e-6, darkbp by sqrt(1e-5). With
    # zero biases, linear convs and connected layers, leaky and max pooling, each layer's output
    # is Darknet's times (1e-6/sqrt(1e-5))^k, k the BN layers up to it (Darknet's softmax
    # saturates to 0/1: forward.f32 tells nothing, README "bn_eval").
    network = fixture.network()
    assert all(not layer.biases.any() for layer in network.layers if hasattr(layer, "biases"))
    outputs = _run(fixture, network, EVAL)
    ratio = 1e-6 / np.sqrt(1e-5)
    for i, y in enumerate(outputs[:-1]):
        k = sum(1 for j in BN_LAYERS if j <= i)
        assert relative(y / ratio ** k, fixture.layer_output("forward", i)) < LAYER_TOL, i


def _train_step(fixture, dtype):
    """One SGD step from init.weights as the driver's (tests/golden.py Golden.replay), in dtype."""
    network: Network = fixture.network().astype(dtype)
    config = network.config
    sgd = SGD(network.layers, config.momentum, config.decay, config.batch)
    network.forward(fixture.input.astype(dtype), Pass.training(Noise(0, 0)))
    cost = float(network.cost(fixture.truth.astype(dtype)).sum())
    network.backward(fixture.truth.astype(dtype))
    sgd.step(LEARNING_RATE)
    return cost, arrays(network)


def _updates(after, before):
    return {key: after[key] - before[key] for key in after}


@pytest.fixture(scope="module")
def steps(fixture):
    """Step-1 weights of darkbp and of the transcription with each mix of formulas."""
    init = arrays(fixture.network())
    runs = {"darkbp": fixture.replay(steps=1)}
    for name, forward_eps, divisor in (("darknet", "darknet", "M"), ("epsilon", "darkbp", "M"),
                                       ("exact", "darkbp", "M-1")):
        with pytest.MonkeyPatch.context() as monkeypatch:
            DarknetBatchnorm(fixture.batch, forward_eps, divisor).install(monkeypatch)
            runs[name] = fixture.replay(steps=1)
    return init, runs


def test_transcribed_darknet_backward_reproduces_darknets_step(fixture, steps):
    _, runs = steps
    run = runs["darknet"]
    assert run.losses[0][1] == pytest.approx(fixture.losses[0][1], rel=LOSS_TOL)
    assert relative(run.train_forward, fixture.f32("train_forward.f32")) < FORWARD_TOL
    theirs = fixture.weights_after(1)
    assert theirs.keys() == run.step_weights[1].keys()
    for key, value in theirs.items():
        assert relative(run.step_weights[1][key], value) < WEIGHTS_TOL, key


def test_darkbps_rolling_statistics_after_one_step_equal_darknets(fixture, steps):
    # Layer 0's batch statistics depend on nothing darkbp computes differently: its rolling
    # mean and (unbiased) variance equal Darknet's; a biased variance would be 1/2047 = 4.9e-4 off.
    _, runs = steps
    theirs = fixture.weights_after(1)
    for key in ("0.rolling_mean", "0.rolling_variance"):
        assert relative(runs["darkbp"].step_weights[1][key], theirs[key]) < WEIGHTS_TOL, key


def test_darkbps_update_differs_from_darknets_by_the_backward_factor(fixture, steps):
    """Updates (step 1 − init), relative to each tensor's largest: darkbp's is 4-7 % off
    Darknet's on every conv tensor and the BN connected weights (the 1/(M − 1) factor); with
    darkbp's epsilon but Darknet's 1/M the transcription is within 1e-4 of Darknet (the epsilon
    alone), and its 1/M -> 1/(M − 1) accounts for the rest."""
    init, runs = steps
    darknet = _updates(fixture.weights_after(1), init)
    ours = _updates(runs["darkbp"].step_weights[1], init)
    epsilon = _updates(runs["epsilon"].step_weights[1], init)
    exact = _updates(runs["exact"].step_weights[1], init)
    for key in darknet:
        if key.endswith(("rolling_mean", "rolling_variance")):
            continue
        assert relative(epsilon[key], darknet[key]) < 1e-4, key
        if key.startswith(("0.", "1.", "3.")) or key == "5.weights":
            assert relative(ours[key], darknet[key]) > 3e-2, key
            assert relative(exact[key], epsilon[key]) > 3e-2, key


def test_transcription_with_darkbps_formulas_is_darkbps_step_in_float64(fixture, monkeypatch):
    cost, ours = _train_step(fixture, np.float64)
    init = arrays(fixture.network())
    DarknetBatchnorm(fixture.batch, forward_eps="darkbp", divisor="M-1").install(monkeypatch)
    exact_cost, exact = _train_step(fixture, np.float64)
    DarknetBatchnorm(fixture.batch).install(monkeypatch)
    _, darknet = _train_step(fixture, np.float64)
    assert exact_cost == pytest.approx(cost, rel=1e-12)
    for key in ours:
        update = ours[key] - init[key]
        assert relative(exact[key] - init[key], update) < 1e-9, key
        if key.startswith(("0.", "1.", "3.")) and key.endswith(("biases", "scales", "weights")):
            assert relative(darknet[key] - init[key], update) > 3e-2, key
