"""Splitting a batch across threads computes the whole batch's gradient and output."""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.layers.base import grad_name
from darkbp.network import parse_network
from darkbp.parallel import Runner, replica
from darkbp.threads import get_threads
from tests.conftest import CFG_DIR


def _batch(network, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + network.input_shape).astype(network.dtype)
    truth = np.eye(network.outputs, dtype=network.dtype)[rng.integers(network.outputs, size=n)]
    return x, truth


def _grads(network):
    return {(i, name): getattr(layer, grad_name(name)).copy()
            for i, layer in enumerate(network.layers) for name in layer.param_names}


def test_replica_shares_parameters_not_gradients_or_caches():
    network = parse_network(CFG_DIR / "mnist.cfg").initialize(0, np.float64)
    x, _ = _batch(network, 2)
    network.forward(x, train=True)
    layer = network.layers[0]
    twin = replica(layer)
    assert twin.weights is layer.weights and twin.biases is layer.biases
    assert twin.weight_grads is not layer.weight_grads
    assert not [name for name in vars(twin) if name.startswith("_")]


@pytest.mark.parametrize("cfg", ["mnist.cfg", "grouped.cfg", "notes.cfg"])
@pytest.mark.parametrize("images", [7, 64])
def test_split_gradients_equal_the_whole_batch(cfg, images):
    network = parse_network(CFG_DIR / cfg).initialize(1, np.float64)
    x, truth = _batch(network, images)
    whole = Runner(network, 1)
    cost = whole.train_step(x, truth)
    expected = _grads(network)
    network.zero_grads()
    split = Runner(network, 3)
    assert split.split
    assert split.train_step(x, truth) == pytest.approx(cost, rel=1e-12)
    for key, grad in _grads(network).items():
        np.testing.assert_allclose(grad, expected[key], rtol=1e-10, atol=1e-13, err_msg=str(key))
    for twin in split.replicas[1:]:                  # the shards' gradients were handed over
        assert all(not getattr(layer, grad_name(name)).any()
                   for layer in twin.layers for name in layer.param_names)
    np.testing.assert_allclose(split.forward(x), whole.forward(x), rtol=1e-12)
    split.close()


def test_updates_reach_every_replica():
    network = parse_network(CFG_DIR / "mnist.cfg").initialize(1, np.float64)
    runner = Runner(network, 2)
    x, _ = _batch(network, 8)
    before = runner.forward(x)
    network.layers[5].biases[3] += 5.0              # in place, as SGD, EMA and loading do
    after = runner.forward(x)                       # both shards see the raised logit
    assert (after[:, 3] > before[:, 3]).all()
    runner.close()


def test_batch_norm_networks_are_not_split_but_use_blas_threads():
    network = parse_network(CFG_DIR / "batchnorm.cfg").initialize(0, np.float32)
    runner = Runner(network, 2)
    assert not runner.split
    assert get_threads() == 2
    runner.close()
    runner = Runner(parse_network(CFG_DIR / "mnist.cfg").initialize(0, np.float32), 2)
    assert runner.split
    assert get_threads() == 1
    runner.close()
