"""bench/twin.py, the torch twin the benchmark times darkbp against, computes what darkbp
computes: for every bench cfg and the detector cfg/yolo-digits.cfg, in float64, the
training forward, the loss, every parameter gradient (and a detector's input gradient),
the rolling statistics, the evaluation forward, and the weights after SGD steps with
Darknet's rule (darkbp/sgd.py) in torch's optimizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.bench import BENCH_CFGS, DETECTOR_CFG
from bench.twin import Twin, _Dropout, sparse_targets, unsupported
from darkbp.network import parse_network
from darkbp.ops.detection import Truth
from darkbp.passes import Noise, Pass
from darkbp.sgd import SGD
from tests.conftest import ROOT

BATCH = 4
STEPS = 3


def close(ours, theirs, what):
    """Equal to float64 rounding: 1e-9 relative, or 1e-11 of the tensor's largest value."""
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    scale = max(float(np.abs(theirs).max()), 1e-300)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-11 * scale, err_msg=what)


def _network(name, rng):
    """The cfg's network in float64, with biases, scales and rolling statistics drawn from
    `rng`, so that none sits at its initial 0 or 1 (a bias or scale the twin dropped, or a
    rolling statistic it did not use, would go unseen there)."""
    network = parse_network(ROOT / "cfg" / name).initialize(0, np.float64)
    draws = {"biases": (-0.3, 0.3), "scales": (0.5, 1.5), "rolling_mean": (-0.3, 0.3),
             "rolling_variance": (0.5, 2.0)}
    for layer in network.layers:
        for name in (*layer.param_names, *layer.state_names):
            if name in draws:
                value = getattr(layer, name)
                value[...] = rng.uniform(*draws[name], value.shape)
    return network


def _batch(network, rng):
    x = rng.random((BATCH,) + network.input_shape)
    labels = rng.integers(0, network.outputs, BATCH)
    return x, labels, np.eye(network.outputs)[labels]


@pytest.mark.parametrize("name", [cfg.split("/")[-1] for cfg in BENCH_CFGS])
def test_twin_computes_what_darkbp_computes(name):
    rng = np.random.default_rng(13)
    network = _network(name, rng)
    twin = Twin(network)
    config = network.config
    sgd = SGD(network.layers, config.momentum, config.decay, BATCH)
    optimizer = twin.sgd(config, BATCH)
    lr = config.schedule.learning_rate

    x, _, _ = _batch(network, rng)
    close(network.forward(x), twin.predict(torch.from_numpy(x)), "evaluation forward")

    twin.train()
    for step in range(STEPS):
        x, labels, truth = _batch(network, rng)
        p = network.forward(x, Pass.training())
        loss = float(network.cost(truth).sum())
        network.backward(truth)
        logits = twin(torch.from_numpy(x))
        twin_loss = twin.loss(logits, torch.from_numpy(labels))
        optimizer.zero_grad()
        twin_loss.backward()
        if step == 0:          # from the same weights: the pass itself
            close(p, torch.softmax(logits, dim=1), "training forward")
            assert loss == pytest.approx(twin_loss.item(), rel=1e-12)
            for layer in network.layers:
                for param, _, grad in layer.parameters():
                    close(grad, twin.tensors[(layer.index, param)].grad,
                          f"layer {layer.index} {param} gradient")
        sgd.step(lr)
        optimizer.step()
    for (index, array), tensor in twin.tensors.items():
        close(getattr(network.layers[index], array), tensor,
              f"layer {index} {array} after {STEPS} SGD steps")


def test_the_detector_twin_computes_what_darkbp_computes():
    """yolo-digits at batch 4: the heads' outputs (evaluation and training), the loss at
    darkbp's assignment, every parameter gradient, the input gradient, and the weights after
    SGD steps (each step's targets assigned by darkbp from the same weights)."""
    rng = np.random.default_rng(17)
    network = _network(DETECTOR_CFG.split("/")[-1], rng)
    twin = Twin(network)
    config = network.config
    sgd = SGD(network.layers, config.momentum, config.decay, BATCH)
    optimizer = twin.sgd(config, BATCH)
    lr = config.schedule.learning_rate
    heads = network.heads
    assert [head.type for head in heads] == ["yolo", "yolo"]
    _, h, w = network.input_shape

    x = rng.random((BATCH,) + network.input_shape)
    outputs = network.run(x)
    for head, theirs in zip(heads, twin.predict(torch.from_numpy(x))):
        close(outputs[head.index], theirs, f"layer {head.index} evaluation output")

    twin.train()
    for step in range(STEPS):
        x = rng.random((BATCH,) + network.input_shape)
        truth = Truth.random(rng, BATCH, heads[0].classes, w, h)
        outputs = network.run(x, Pass.training(Noise(0, step)))
        loss = float(network.cost(truth).sum())
        dx = network.backward(truth, input_grad=True)
        tx = torch.from_numpy(x).requires_grad_()
        zs = twin(tx)
        found = [[torch.from_numpy(a) for a in sparse_targets(head.assign(truth))]
                 for head in heads]
        twin_loss = twin.loss(zs, found)
        optimizer.zero_grad()
        twin_loss.backward()
        if step == 0:
            # The assignment matches boxes to some predictions and ignores none at the
            # initial weights: the loss has box, class and objectness terms.
            assert all(len(f[0]) > 0 for f in found)
            for head, z, block in zip(heads, zs, (twin.blocks[h.index] for h in heads)):
                close(head._x, z, f"layer {head.index} input")
                close(outputs[head.index], block.eval()(z.detach()),
                      f"layer {head.index} training output")
                block.train()
            assert loss == pytest.approx(twin_loss.item(), rel=1e-12)
            close(dx, tx.grad, "input gradient")
            for layer in network.layers:
                for param, _, grad in layer.parameters():
                    close(grad, twin.tensors[(layer.index, param)].grad,
                          f"layer {layer.index} {param} gradient")
        sgd.step(lr)
        optimizer.step()
    for (index, array), tensor in twin.tensors.items():
        close(getattr(network.layers[index], array), tensor,
              f"layer {index} {array} after {STEPS} SGD steps")


def test_dropout_is_the_identity_in_evaluation_and_scales_what_it_keeps():
    network = _network("dropout.cfg", np.random.default_rng(5))
    twin = Twin(network)
    x = np.random.default_rng(6).random((BATCH,) + network.input_shape)
    close(network.forward(x), twin.predict(torch.from_numpy(x)), "evaluation forward")
    dropout = next(block for block in twin.blocks if isinstance(block, _Dropout)).train()
    kept = dropout(torch.ones(10_000, dtype=torch.float64)).numpy()
    assert set(np.unique(kept)) == {0.0, 2.0}           # probability=.5: 1/(1 − .5)
    assert 0.45 < np.mean(kept == 0) < 0.55


def test_a_network_without_a_twin_says_which_layer():
    network = parse_network(ROOT / "cfg" / "logistic_sse.cfg").initialize(0, np.float64)
    assert unsupported(network) == "the last layer is not a plain [softmax]"
    with pytest.raises(ValueError, match="no torch twin for the last layer"):
        Twin(network)
