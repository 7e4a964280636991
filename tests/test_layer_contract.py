"""The contract every registered layer type keeps, checked on the cfgs in tests/layer_cfgs/.

Each layer type must be used by at least one of those cfgs (a new type adds one), and on
each cfg: a .weights round trip restores every array; and where darkbp can train the cfg,
every gradient passes gradcheck in float64 and a training pass split across worker
processes gives the cost and gradients of the whole batch, and the same outputs. A cfg with
a table-only section (a detection or recurrent head) is refused by training with one error
naming that section's line. The loop references and Darknet's table lines are tested per
layer type.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from darkbp.errors import DarkbpError
from darkbp.gradcheck import gradcheck
from darkbp.layers import REGISTRY
from darkbp.network import parse_network
from darkbp.ops.detection import Truth
from darkbp.parallel import Runner
from darkbp.passes import Noise, Pass
from darkbp.weights import load_weights, save_weights

CFGS = sorted((Path(__file__).parent / "layer_cfgs").glob("*.cfg"))
TRAINABLE = [path for path in CFGS
             if all(layer.trainable for layer in parse_network(path).layers)]
TABLE_ONLY = [path for path in CFGS if path not in TRAINABLE]


def _ids(paths):
    return [path.stem for path in paths]


def test_every_registered_layer_type_has_a_contract_cfg():
    used = {layer.type for path in CFGS for layer in parse_network(path).layers}
    registered = {cls.sections[0] for cls in REGISTRY.values()}
    assert registered - used == set()


@pytest.mark.parametrize("path", TRAINABLE, ids=_ids(TRAINABLE))
def test_gradcheck_passes(path):
    report = gradcheck(parse_network(path), batch=3, seed=1)
    failed = [(row.layer, row.layer_type, row.tensor, row.max_rel) for row in report.rows
              if not row.passed]
    assert not failed


def _batch(network, images, seed=0):
    """Random inputs and truths: one-hot rows, or a detector's random boxes."""
    rng = np.random.default_rng(seed)
    x = rng.random((images,) + network.input_shape)
    if network.heads:
        _, h, w = network.input_shape
        return x, Truth.random(rng, images, network.heads[0].classes, w, h)
    truth = np.eye(network.outputs)[rng.integers(network.outputs, size=images)]
    return x, truth


def _grads(network):
    return {(layer.index, name): grad.copy() for layer in network.layers
            for name, _, grad in layer.parameters()}


@pytest.mark.parametrize("path", TRAINABLE, ids=_ids(TRAINABLE))
def test_a_split_pass_equals_the_whole_batch(path):
    whole = parse_network(path).initialize(3, np.float64)
    x, truth = _batch(whole, 8)
    noise = Noise(seed=5, batch_num=7)
    one = Runner(whole, 1)
    cost = one.train_step(x, truth, noise)
    split = parse_network(path).initialize(3, np.float64)
    with Runner(split, 2) as runner:
        assert runner.split
        assert runner.train_step(x, truth, noise) == pytest.approx(cost, rel=1e-12)
        # A detector's heads: Darknet's cost and statistics sums, over the whole batch.
        assert len(runner.head_numbers) == len(whole.heads)
        for (ours, stats), (theirs, whole_stats) in zip(runner.head_numbers, one.head_numbers):
            assert ours == pytest.approx(theirs, rel=1e-5)
            assert stats == pytest.approx(whole_stats, rel=1e-5)
        for key, grad in _grads(whole).items():
            np.testing.assert_allclose(_grads(split)[key], grad, rtol=1e-10, atol=1e-12,
                                       err_msg=str(key))
        np.testing.assert_allclose(runner.forward(x), whole.forward(x), rtol=1e-10,
                                   atol=1e-13)


# Arrays a layer reuses from one pass to the next (their memory, not this pass's values).
REUSED = {"_buffers", "_x_hat"}


def _private_arrays(layer) -> list[str]:
    """The private attributes of `layer` that hold arrays (directly or in a tuple or dict)."""
    def arrays(value) -> bool:
        if isinstance(value, np.ndarray):
            return True
        if isinstance(value, dict):
            value = list(value.values())
        return isinstance(value, (tuple, list)) and any(map(arrays, value))
    return [name for name, value in vars(layer).items()
            if name.startswith("_") and name not in REUSED and arrays(value)]


@pytest.mark.parametrize("path", TRAINABLE, ids=_ids(TRAINABLE))
def test_a_layer_keeps_nothing_of_a_pass_after_its_backward(path):
    # What forward kept for backward goes once backward has used it (Layer.backward_cache),
    # not when the next step's forward replaces it: a training step's peak memory.
    network = parse_network(path).initialize(3, np.float32)
    x, truth = _batch(network, 4)
    network.run(x, Pass.training(Noise(seed=5)))
    network.cost(truth)
    kept = {layer.index: _private_arrays(layer) for layer in network.layers}
    network.backward(truth)
    costs = network.cost_layers()           # a cost layer's cache serves the cost, not backward
    assert any(kept[layer.index] for layer in network.layers if layer not in costs)
    assert {layer.index: _private_arrays(layer) for layer in network.layers
            if layer not in costs and _private_arrays(layer)} == {}


@pytest.mark.parametrize("path", CFGS, ids=_ids(CFGS))
def test_weights_round_trip(tmp_path, path):
    network = parse_network(path).initialize(4, np.float32)
    rng = np.random.default_rng(0)
    for layer in network.layers:          # state too: rolling statistics are saved
        for name in layer.weights_order():
            array = getattr(layer, name)
            array[...] = rng.standard_normal(array.shape)
    save_weights(tmp_path / "net.weights", network.layers, seen=96)
    loaded = parse_network(path).initialize(9, np.float32)
    assert load_weights(tmp_path / "net.weights", loaded.layers) == 96
    for ours, theirs in zip(network.layers, loaded.layers):
        for name in ours.weights_order():
            np.testing.assert_array_equal(getattr(theirs, name), getattr(ours, name))


@pytest.mark.parametrize("path", TABLE_ONLY or [None], ids=_ids(TABLE_ONLY) or ["none yet"])
def test_table_only_sections_are_refused_by_training(path):
    if path is None:                      # no table-only layer type is registered yet
        assert all(cls.trainable for cls in REGISTRY.values())
        return
    network = parse_network(path)
    first = next(layer for layer in network.layers if not layer.trainable)
    # A detection head runs (darkbp detect) but does not train; a recurrent layer only tabulates.
    refusal = r"can not be trained yet" if first.runnable else r"can only be tabulated"
    with pytest.raises(DarkbpError, match=refusal) as error:
        network.check_trainable()
    assert (error.value.file, error.value.line) == (str(path), first.line)
    assert f"[{first.header}]" in str(error.value)
