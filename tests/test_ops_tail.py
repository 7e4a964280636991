"""The fused batch norm + bias + activation (darkbp/ops/tail.py) against its unfused steps.

The reference is the chain the fused kernel replaces, each step already checked against
loops and Darknet (tests/test_ops_batchnorm.py, tests/test_ops_activations.py):
batchnorm_forward, + biases, the activation; and backward the activation's, the bias sum,
batchnorm_backward.  Forcing small blocks runs every path with several blocks per pass,
and a pass split over two threads that exchange their sums must give the whole pass.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from darkbp.ops import tail
from darkbp.ops.activations import ACTIVATIONS
from darkbp.ops.batchnorm import batchnorm_backward, batchnorm_forward
from darkbp.ops.tail import bn_tail_backward, bn_tail_forward, fusable
from tests import naive

FUSED = [name for name, act in ACTIVATIONS.items() if fusable(act)]
SHAPES = [(2, 3, 5), (4, 5, 1), (1, 7, 6), (3, 1, 4), (6, 4, 3)]  # (A, F, B)


def test_the_common_activations_are_fused():
    assert {"leaky", "relu", "linear"} <= set(FUSED)
    assert not fusable(ACTIVATIONS["elu"])          # its derivative needs the input


@pytest.mark.parametrize("name", [n for n, a in ACTIVATIONS.items() if a.from_output])
def test_from_output_activations_differentiate_from_y_alone(name):
    act = ACTIVATIONS[name]
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(200) * 3, [0.0, -1.0, 1.0, 4.0, -4.0]])
    y, dy = act.forward(x), rng.standard_normal(x.size)
    np.testing.assert_array_equal(act.backward(y, y, dy), act.backward(x, y, dy))


def test_elu_is_not_from_output():
    act = ACTIVATIONS["elu"]
    x = np.array([-2.0, -0.5])
    y, dy = act.forward(x), np.ones(2)
    assert not np.allclose(act.backward(y, y, dy), act.backward(x, y, dy))


def make(shape, seed):
    rng = np.random.default_rng(seed)
    f = shape[1]
    z = rng.standard_normal(shape) * rng.uniform(0.5, 3, (1, f, 1)) + rng.standard_normal((1, f, 1))
    params = dict(scales=rng.uniform(0.5, 2, f), biases=rng.standard_normal(f),
                  rolling_mean=rng.standard_normal(f), rolling_variance=rng.uniform(0.5, 2, f))
    return rng, z, params


def unfused(z, p, act, train):
    mean, var = p["rolling_mean"].copy(), p["rolling_variance"].copy()
    y, cache = batchnorm_forward(z.copy(), p["scales"], mean, var, train)
    y += p["biases"][:, None]
    return act.forward(y), y, cache, mean, var


@pytest.fixture(params=[1 << 20, 7], ids=["one block", "blocks of 7 values"])
def block(request, monkeypatch):
    monkeypatch.setattr(tail, "BLOCK", request.param)
    return request.param


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("shape", SHAPES)
def test_training_equals_the_unfused_steps(name, shape, block):
    act = ACTIVATIONS[name]
    rng, z, p = make(shape, seed=len(name) + shape[0])
    y_ref, pre, cache_ref, mean_ref, var_ref = unfused(z, p, act, True)
    mean, var = p["rolling_mean"].copy(), p["rolling_variance"].copy()
    y, cache = bn_tail_forward(z.copy(), p["scales"], p["biases"], mean, var, act, True)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-13)
    np.testing.assert_allclose(var, var_ref, rtol=1e-13)

    dy = rng.standard_normal(shape)
    dpre = act.backward(pre, y_ref, dy)
    dz_ref, dscales_ref = batchnorm_backward(dpre.copy(), cache_ref)
    dz, dbiases, dscales = bn_tail_backward(dy.copy(), cache)
    np.testing.assert_allclose(dz, dz_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dbiases, dpre.sum(axis=(0, 2)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dscales, dscales_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_evaluation_equals_the_unfused_steps_and_updates_nothing(shape, block):
    act = ACTIVATIONS["leaky"]
    _, z, p = make(shape, seed=3)
    y_ref = unfused(z, p, act, False)[0]
    mean, var = p["rolling_mean"].copy(), p["rolling_variance"].copy()
    y, cache = bn_tail_forward(z.copy(), p["scales"], p["biases"], mean, var, act, False)
    assert cache is None
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(mean, p["rolling_mean"])
    np.testing.assert_array_equal(var, p["rolling_variance"])


def test_backward_matches_finite_differences():
    act = ACTIVATIONS["leaky"]
    rng, z, p = make((4, 3, 5), seed=5)
    r = rng.standard_normal(z.shape)

    def run(z_):
        out, cache = bn_tail_forward(z_.copy(), p["scales"], p["biases"],
                                     p["rolling_mean"].copy(), p["rolling_variance"].copy(),
                                     act, True)
        return out, cache

    y, cache = run(z)
    assert np.abs(cache.x_hat * p["scales"][:, None] + p["biases"][:, None]).min() > 1e-4
    dz, _, _ = bn_tail_backward(r.copy(), cache)
    numeric = naive.numeric_grad(lambda: float(np.sum(r * run(z)[0])), z)
    assert naive.max_rel_error(dz, numeric) < 1e-6


class _ThreadShards:
    """One thread's view of a pass split along the first axis; total() adds every
    thread's sums (one slot each), in thread order, once all have given theirs."""

    def __init__(self, index, own, images, slots, barrier):
        self.index, self.images, self.own_images = index, images, own
        self.update_state = index == 0
        self.slots, self.barrier = slots, barrier

    def total(self, sums):
        self.slots[self.index] = sums.copy()
        self.barrier.wait()
        result = np.sum(self.slots, axis=0)
        self.barrier.wait()
        return result


@pytest.mark.parametrize("shape", [(6, 4, 5), (4, 3, 1)])
def test_a_pass_split_over_two_threads_equals_the_whole(shape, block):
    act = ACTIVATIONS["leaky"]
    rng, z, p = make(shape, seed=9)
    dy = rng.standard_normal(shape)
    mean, var = p["rolling_mean"].copy(), p["rolling_variance"].copy()
    y_all, cache = bn_tail_forward(z.copy(), p["scales"], p["biases"], mean, var, act, True)
    dz_all, dbiases_all, dscales_all = bn_tail_backward(dy.copy(), cache)

    half = shape[0] // 2
    parts = [slice(0, half), slice(half, shape[0])]
    slots, barrier = [None, None], threading.Barrier(2)
    states = [(p["rolling_mean"].copy(), p["rolling_variance"].copy()) for _ in parts]
    results = [None, None]

    def run(i):
        own = parts[i].stop - parts[i].start
        shards = _ThreadShards(i, own, shape[0], slots, barrier)
        y, c = bn_tail_forward(z[parts[i]].copy(), p["scales"], p["biases"], *states[i], act,
                               True, shards=shards)
        results[i] = (y, *bn_tail_backward(dy[parts[i]].copy(), c))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(np.concatenate([r[0] for r in results]), y_all, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(np.concatenate([r[1] for r in results]), dz_all, rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(results[0][2] + results[1][2], dbiases_all, rtol=1e-12)
    np.testing.assert_allclose(results[0][3] + results[1][3], dscales_all, rtol=1e-12)
    np.testing.assert_allclose(states[0][0], mean, rtol=1e-13)      # shard 0 updates the state
    np.testing.assert_allclose(states[0][1], var, rtol=1e-13)
    np.testing.assert_array_equal(states[1][0], p["rolling_mean"])  # shard 1 does not


def test_x_hat_buffer_is_reused_when_it_fits():
    act = ACTIVATIONS["leaky"]
    _, z, p = make((2, 3, 4), seed=1)
    buffer = np.empty_like(z)
    _, cache = bn_tail_forward(z.copy(), p["scales"], p["biases"], p["rolling_mean"].copy(),
                               p["rolling_variance"].copy(), act, True, x_hat=buffer)
    assert cache.x_hat is buffer
    _, cache = bn_tail_forward(z[:1].copy(), p["scales"], p["biases"], p["rolling_mean"].copy(),
                               p["rolling_variance"].copy(), act, True, x_hat=buffer)
    assert cache.x_hat is not buffer and cache.x_hat.shape == (1, 3, 4)


@pytest.mark.parametrize("name", FUSED)
def test_only_an_activation_whose_derivative_needs_it_keeps_the_output(name):
    """A piecewise-linear tail's output may go once the next layer has read it (backward
    makes the pre-activation again from x̂); tanh's act' is read off its output, so it stays
    (and backward still equals the unfused steps, above, either way)."""
    _, z, p = make((2, 3, 4), seed=2)
    y, cache = bn_tail_forward(z, p["scales"], p["biases"], p["rolling_mean"].copy(),
                               p["rolling_variance"].copy(), ACTIVATIONS[name], True)
    assert (cache.y is None) if name in tail.FROM_PRE_ACTIVATION else (cache.y is y)
    assert (name in tail.FROM_PRE_ACTIVATION) == (name != "tanh")


@pytest.mark.parametrize("name", sorted(tail.FROM_PRE_ACTIVATION))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_piecewise_linear_derivatives_read_the_same_off_the_pre_activation(name, dtype):
    # Every kink, both signs of zero, subnormals (0.1·t may round to 0), a wide range.
    act = ACTIVATIONS[name]
    tiny = np.finfo(dtype).smallest_subnormal
    t = np.concatenate([[0.0, -0.0, 1.0, -1.0, tiny, -tiny, 5 * tiny, -5 * tiny],
                        [6.0, -6.0], np.nextafter(np.array([0, 0, 1, 1, -1, -1, 6, 6], dtype),
                                                  np.array([1, -1, 2, 0, 0, -2, 7, 5], dtype)),
                        np.random.default_rng(0).normal(0, 3, 500)]).astype(dtype)
    dy = np.random.default_rng(1).normal(0, 1, t.size).astype(dtype)
    np.testing.assert_array_equal(act.backward(t, t, dy), act.backward(t, act.forward(t), dy))
