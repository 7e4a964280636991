"""Darknet's SGD: hand-computed steps, and Darknet's own sequence of BLAS calls replayed."""

import numpy as np
import pytest

from darkbp.errors import DarkbpError
from darkbp.layers.base import Layer
from darkbp.sgd import SGD
from tests.conftest import connected_layer, conv_layer


def randomised(layer, rng):
    """`layer` with random parameters and state (Darknet's file order, then the state)."""
    for name in (*layer.param_names, *layer.state_names):
        value = getattr(layer, name)
        value[...] = rng.standard_normal(value.shape)
    return layer


def random_conv(channels, filters, size, batch_normalize, rng, dtype=np.float32):
    return randomised(conv_layer(channels, filters, size, batch_normalize, dtype=dtype), rng)


def random_connected(inputs, outputs, batch_normalize, rng, dtype=np.float32):
    return randomised(connected_layer(inputs, outputs, batch_normalize, dtype), rng)


class PoolStub(Layer):
    type = "maxpool"


def network(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [random_conv(2, 3, 3, True, rng, dtype), PoolStub((3, 4, 4), (3, 2, 2)),
            random_conv(3, 2, 1, False, rng, dtype), random_connected(8, 4, True, rng, dtype),
            random_connected(4, 3, False, rng, dtype)]


def fill_grads(layers, rng):
    for layer in layers:
        for _, _, g in layer.parameters():
            g[...] = rng.standard_normal(g.shape).astype(g.dtype)


# -- Darknet's CPU update, written out as in src/blas.c and src/*_layer.c ------------------

def axpy(alpha, x, y):
    """blas.c axpy_cpu: Y[i] += ALPHA*X[i], in float."""
    for i in range(y.size):
        y.flat[i] = np.float32(y.flat[i] + np.float32(alpha * x.flat[i]))


def scal(alpha, x):
    """blas.c scal_cpu: X[i] *= ALPHA, in float."""
    for i in range(x.size):
        x.flat[i] = np.float32(x.flat[i] * alpha)


def darknet_update(p, u, lr, momentum, decay, batch):
    """update_convolutional_layer / update_connected_layer on params p and *_updates u."""
    lr_b = np.float32(np.float32(lr) / np.float32(batch))          # learning_rate/batch
    decay_b = np.float32(-np.float32(decay) * np.float32(batch))   # -decay*batch
    m = np.float32(momentum)
    axpy(lr_b, u["biases"], p["biases"])
    scal(m, u["biases"])
    if "scales" in p:
        axpy(lr_b, u["scales"], p["scales"])
        scal(m, u["scales"])
    axpy(decay_b, p["weights"], u["weights"])
    axpy(lr_b, u["weights"], p["weights"])
    scal(m, u["weights"])


def test_matches_darknets_update_sequence_bit_for_bit():
    layers = network(seed=1)
    momentum, decay, batch = 0.9, 0.0005, 6
    # Darknet's copies: parameters, and *_updates buffers that start at zero.
    params = [{n: w.copy() for n, w, _ in layer.parameters()} for layer in layers]
    updates = [{n: np.zeros_like(w) for n, w, _ in layer.parameters()} for layer in layers]
    sgd = SGD(layers, momentum, decay, batch)
    rng = np.random.default_rng(2)
    for lr in [0.1, 0.05, 0.013, 0.2]:
        fill_grads(layers, rng)
        for layer, p, u in zip(layers, params, updates):
            for name, _, g in layer.parameters():
                axpy(np.float32(1), -g, u[name])  # backward adds delta-products = -gradient
            if p:
                darknet_update(p, u, lr, momentum, decay, batch)
        sgd.step(lr)
        for layer, p in zip(layers, params):
            for name, w, _ in layer.parameters():
                np.testing.assert_array_equal(w, p[name], err_msg=name)


def test_hand_computed_steps():
    rng = np.random.default_rng(0)
    layer = random_connected(1, 1, False, rng, np.float64)
    layer.weights[...] = 1.0
    layer.biases[...] = 1.0
    sgd = SGD([layer], momentum=0.9, decay=0.1, batch=2)
    # step 1: v = -0.5 - 0.1*2*1 = -0.7, w = 1 + 0.1*(-0.7) = 0.93; bias v = -0.5, b = 0.95
    # step 2: v = 0.9*(-0.7) - 0.5 - 0.2*0.93 = -1.316, w = 0.93 - 0.1316 = 0.7984
    #         bias v = 0.9*(-0.5) - 0.5 = -0.95, b = 0.95 - 0.095 = 0.855
    for expected_w, expected_b in [(0.93, 0.95), (0.7984, 0.855)]:
        layer.weight_grads[...] = 0.5
        layer.bias_grads[...] = 0.5
        sgd.step(0.2)
        assert layer.weights[0, 0] == pytest.approx(expected_w, rel=1e-14)
        assert layer.biases[0] == pytest.approx(expected_b, rel=1e-14)


def test_batch_norm_scales_get_no_decay():
    rng = np.random.default_rng(0)
    layer = random_conv(1, 1, 1, True, rng, np.float64)
    layer.scales[...] = 2.0
    sgd = SGD([layer], momentum=0.0, decay=0.5, batch=1)
    layer.biases[...] = 3.0
    layer.weights[...] = 4.0
    sgd.step(1.0)  # zero gradient: only decay can move anything
    assert layer.scales[0] == 2.0
    assert layer.biases[0] == 3.0
    assert layer.weights[0, 0, 0, 0] == 2.0  # 4 + 1/1 * (-0.5*1*4)


def test_in_place_float32_and_gradients_zeroed():
    layers = network(seed=3)
    before = [{n: w for n, w, _ in layer.parameters()} for layer in layers]
    sgd = SGD(layers, 0.9, 0.0005, 4)
    fill_grads(layers, np.random.default_rng(4))
    sgd.step(0.1)
    for layer, old in zip(layers, before):
        for name, w, g in layer.parameters():
            assert w is old[name]
            assert w.dtype == np.float32
            assert not g.any()
    assert all(v.dtype == np.float32 for v in sgd.velocity.values())


def test_state_dict_resumes_exactly():
    def run(layers, sgd, steps):
        for k in steps:
            fill_grads(layers, np.random.default_rng(k))
            sgd.step(0.05)

    straight = network(seed=6)
    run(straight, SGD(straight, 0.9, 0.001, 8), [0, 1, 2])

    first = network(seed=6)
    sgd = SGD(first, 0.9, 0.001, 8)
    run(first, sgd, [0, 1])
    saved = sgd.state_dict()
    resumed = network(seed=6)
    for a, b in zip(resumed, first):
        for (name, w, _), (_, w_first, _) in zip(a.parameters(), b.parameters()):
            w[...] = w_first
    sgd2 = SGD(resumed, 0.9, 0.001, 8)
    sgd2.load_state_dict({**saved, "ema.t": np.array(3)})  # other prefixes are ignored
    run(resumed, sgd2, [2])
    for a, b in zip(resumed, straight):
        for (name, w, _), (_, w_straight, _) in zip(a.parameters(), b.parameters()):
            np.testing.assert_array_equal(w, w_straight, err_msg=name)


def test_state_dict_is_a_copy():
    layers = network()
    sgd = SGD(layers, 0.9, 0.0, 1)
    state = sgd.state_dict()
    state["sgd.0.weights"][...] = 7
    assert not sgd.velocity["sgd.0.weights"].any()


def test_state_from_another_network_is_an_error():
    sgd = SGD(network(), 0.9, 0.0, 1)
    state = sgd.state_dict()
    missing = dict(state)
    del missing["sgd.0.scales"]
    with pytest.raises(DarkbpError, match="missing.*sgd.0.scales"):
        sgd.load_state_dict(missing)
    with pytest.raises(DarkbpError, match="unexpected.*sgd.9.weights"):
        sgd.load_state_dict({**state, "sgd.9.weights": np.zeros(3)})
    with pytest.raises(DarkbpError, match="sgd.0.biases has shape"):
        sgd.load_state_dict({**state, "sgd.0.biases": np.zeros(5)})


def test_bad_batch():
    with pytest.raises(DarkbpError, match="batch"):
        SGD(network(), 0.9, 0.0, 0)
