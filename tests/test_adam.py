"""[net] adam=1: AlexeyAB's GPU Adam (darkbp/adam.py) against a float64 transcription of
adam_update_gpu written here, AlexeyAB's CPU build (which ignores adam=1) side by side,
its options as [net] options, and --resume of an Adam run bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

from darkbp.adam import Adam, optimizer
from darkbp.cli import main
from darkbp.errors import DarkbpError
from darkbp.layers.base import grad_name
from darkbp.layers.convolutional import ConvolutionalLayer
from darkbp.network import parse_network
from darkbp.passes import Noise, Pass
from darkbp.train import Trainer, TrainOptions
from tests.conftest import SAMPLE, assert_cfg_error
from tests.golden import LEARNING_RATE, Golden, arrays, relative
from tests.golden_alexeyab import cpu_replay
from tests.test_golden import WEIGHTS_TOL

NET = """
[net]
batch=8
width=6
height=6
channels=2
momentum=0.9
decay=0.0005
adam=1
B1=0.8
B2=0.95
eps=0.001

[convolutional]
batch_normalize=1
filters=3
size=3
pad=1
activation=leaky

[convolutional]
filters=4
size=1
activation=linear

[connected]
output=5
activation=linear

[softmax]
"""


# --- a float64 transcription of AlexeyAB's update, element by element ---------------------

def adam_reference(w0, grads, rates, b1, b2, eps, decay, batch):
    """adam_update_gpu + adam_kernel, one element at a time in float64: the values after
    each step. grads are d(loss)/dw summed over the batch; Darknet's d is their negative."""
    w = [float(value) for value in np.ravel(w0)]
    m, v = [0.0] * len(w), [0.0] * len(w)
    after = []
    for t, (g, lr) in enumerate(zip(grads, rates), start=1):
        g = np.ravel(g)
        for i in range(len(w)):
            d = -float(g[i]) - decay * batch * w[i]
            m[i] = b1 * m[i] + (1 - b1) * d
            v[i] = b2 * v[i] + (1 - b2) * d * d
            m_hat = m[i] / (1 - b1 ** t)
            v_hat = v[i] / (1 - b2 ** t)
            w[i] = w[i] + lr * m_hat / (math.sqrt(v_hat) + eps)
        after.append(np.reshape(w, np.shape(w0)))
    return after


def sgd_reference(w0, grads, rates, momentum, decay, batch):
    """Darknet's SGD, one element at a time in float64 (decay 0 for biases and scales)."""
    w = [float(value) for value in np.ravel(w0)]
    velocity = [0.0] * len(w)
    after = []
    for g, lr in zip(grads, rates):
        g = np.ravel(g)
        for i in range(len(w)):
            velocity[i] = momentum * velocity[i] - float(g[i]) - decay * batch * w[i]
            w[i] = w[i] + lr / batch * velocity[i]
        after.append(np.reshape(w, np.shape(w0)))
    return after


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-13), (np.float32, 1e-6)])
def test_adam_equals_the_transcription_and_other_layers_keep_sgd(write_cfg, dtype, tolerance):
    network = parse_network(write_cfg(NET)).initialize(3, dtype)
    config = network.config
    adam = optimizer(network.layers, config, 8)
    assert isinstance(adam, Adam) and (adam.b1, adam.b2, adam.eps) == (0.8, 0.95, 0.001)
    rng = np.random.default_rng(4)
    rates = [0.01, 0.02, 0.005]
    start = {(i, name): w.astype(np.float64) for i, layer in enumerate(network.layers)
             for name, w, _ in layer.parameters()}
    grads = {key: [] for key in start}
    for lr in rates:
        for i, layer in enumerate(network.layers):
            for name, _, g in layer.parameters():
                # gradients of every size, some 0 (there only the decay moves a value)
                step = rng.normal(0, 10.0 ** rng.integers(-4, 2), g.shape) * (rng.random(g.shape)
                                                                              > 0.2)
                g[...] = step
                grads[i, name].append(g.astype(np.float64))
        adam.step(lr)
    assert adam.t == 3
    for (i, name), w0 in start.items():
        layer = network.layers[i]
        if isinstance(layer, ConvolutionalLayer):       # weights, biases, scales alike
            expected = adam_reference(w0, grads[i, name], rates, 0.8, 0.95, 0.001, 0.0005, 8)
        else:                                           # AlexeyAB: Adam in conv layers only
            decay = 0.0005 if name == "weights" else 0.0
            expected = sgd_reference(w0, grads[i, name], rates, 0.9, decay, 8)
        assert relative(getattr(layer, name), expected[-1]) < tolerance, (i, name)
        assert not getattr(layer, grad_name(name)).any()          # zeroed for the next batch
    # Adam moments for the conv layers' arrays, momentum buffers for the others only
    assert sorted(adam.m) == ["adam.m.0.biases", "adam.m.0.scales", "adam.m.0.weights",
                              "adam.m.1.biases", "adam.m.1.weights"]
    assert sorted(adam.velocity) == ["sgd.2.biases", "sgd.2.weights"]


def test_without_adam_the_update_is_sgd(write_cfg):
    network = parse_network(write_cfg(NET.replace("adam=1", "adam=0"))).initialize(0)
    assert type(optimizer(network.layers, network.config, 8)).__name__ == "SGD"


# --- AlexeyAB's fixtures: its CPU build ignores adam=1 -------------------------------------

FIXTURE_FILES = ["init.weights", "input.f32", "forward.f32", "train_forward.f32", "losses.txt",
                 "step1.weights", "step5.weights", "forward_step5.f32"]


def test_alexeyabs_cpu_build_ignores_adam():
    adam, twin = Golden("alexeyab-new/adam"), Golden("alexeyab-new/adam_sgd_twin")
    assert parse_network(adam.cfg).config.adam and not parse_network(twin.cfg).config.adam
    for name in FIXTURE_FILES:
        assert (adam.folder / name).read_bytes() == (twin.folder / name).read_bytes(), name


def test_plain_sgd_reproduces_the_cpu_adam_fixture_and_darkbps_adam_does_not():
    fixture = Golden("alexeyab-new/adam")
    cpu = cpu_replay(fixture).step_weights         # AlexeyAB's CPU: SGD, whatever adam says
    for step in (1, 5):
        assert relative_all(cpu[step], fixture.weights_after(step)) < WEIGHTS_TOL
    # darkbp's first step with the cfg's adam=1: AlexeyAB's GPU Adam
    network = fixture.network()
    init = arrays(network)
    adam = optimizer(network.layers, network.config, network.config.batch)
    assert isinstance(adam, Adam) and (adam.b1, adam.b2, adam.eps) == (0.9, 0.999, 1e-6)
    network.forward(fixture.input, Pass.training(Noise(0, 0)))
    network.backward(fixture.truth)
    adam.step(LEARNING_RATE)
    ours = arrays(network)
    assert relative_all(ours, fixture.weights_after(1)) > 0.05
    # Adam's first step (t = 1: m̂ = d, v̂ = d²) moves each weight by lr·|d| / (|d| + eps):
    # almost exactly lr wherever |d| >> eps = 1e-6, at most lr. SGD's moves far less.
    for key in ("0.weights", "1.weights", "2.weights"):
        moved = np.abs(ours[key].astype(np.float64) - init[key])
        assert moved.max() <= LEARNING_RATE * (1 + 1e-6)
        assert np.median(moved) > 0.99 * LEARNING_RATE
        assert np.median(np.abs(cpu[1][key] - init[key])) < 0.1 * LEARNING_RATE


def relative_all(ours, theirs) -> float:
    assert ours.keys() == theirs.keys()
    return max(relative(ours[key], theirs[key]) for key in ours)


# --- the options ----------------------------------------------------------------------------

def test_alexeyabs_defaults(write_cfg):
    config = parse_network(write_cfg(NET.replace("B1=0.8\nB2=0.95\neps=0.001\n", ""))).config
    assert (config.adam, config.b1, config.b2, config.eps) == (True, 0.9, 0.999, 1e-6)


def test_adam_options_without_adam_are_warned_unused(write_cfg):
    network = parse_network(write_cfg(NET.replace("adam=1", "adam=0")))
    assert not network.config.adam
    assert [(w.line, w.message) for w in network.warnings] == [
        (9, "[net] option 'B1' has no effect without adam=1"),
        (10, "[net] option 'B2' has no effect without adam=1"),
        (11, "[net] option 'eps' has no effect without adam=1")]


@pytest.mark.parametrize("old, new, line, words", [
    ("adam=1", "adam=2", 8, "'adam' must be 0 or 1, got 2"),
    ("adam=1", "adam=yes", 8, "'adam' must be a whole number, got 'yes'"),
    ("B1=0.8", "B1=1", 9, "'B1' must be below 1, got 1"),
    ("B2=0.95", "B2=-0.5", 10, "'B2' must be at least 0, got -0.5"),
    ("eps=0.001", "eps=0", 11, "'eps' must be greater than 0, got 0"),
])
def test_bad_adam_options_name_their_line(write_cfg, old, new, line, words):
    assert_cfg_error(write_cfg(NET.replace(old, new)), line, "net", words)


# --- training with Adam: resume, EMA, the CLI ----------------------------------------------

TRAIN_CFG = """
[net]
batch=32
subdivisions=2
width=28
height=28
channels=1
learning_rate=0.001
momentum=0.9
decay=0.0005
adam=1

[convolutional]
batch_normalize=1
filters=4
size=5
stride=2
activation=leaky

[maxpool]
size=2
stride=2

[connected]
output=10
activation=linear

[softmax]
"""


def _train(folder, sample, cfg_text=TRAIN_CFG, **options):
    path = folder / "adam.cfg"
    path.write_text(cfg_text)
    trainer = Trainer(parse_network(path), sample, TrainOptions(**options))
    trainer.run()
    return trainer


def test_a_resumed_adam_run_equals_an_uninterrupted_one(tmp_path, sample):
    whole = _train(tmp_path, sample, out=tmp_path / "whole", max_batches=12, ema=0.9, seed=1)
    part = _train(tmp_path, sample, out=tmp_path / "part", max_batches=5, ema=0.9, seed=1)
    state = np.load(part.path("state"))
    assert int(state["adam.t"]) == 5 and str(state["optimizer"]) == "adam"
    assert np.abs(state["adam.v.0.weights"]).max() > 0
    resumed = _train(tmp_path, sample, out=tmp_path / "part", max_batches=12, ema=0.9, seed=1,
                     resume=True)
    assert resumed.sgd.t == 12
    for kind in ("final", "ema"):
        assert resumed.path(kind).read_bytes() == whole.path(kind).read_bytes()
    # and Adam is what trained: an SGD run of the same cfg ends elsewhere
    sgd = _train(tmp_path, sample, TRAIN_CFG.replace("adam=1", "adam=0"),
                 out=tmp_path / "sgd", max_batches=12, ema=0.9, seed=1)
    assert sgd.path("final").read_bytes() != whole.path("final").read_bytes()


def test_a_state_of_another_optimiser_is_refused(tmp_path, sample):
    _train(tmp_path, sample, TRAIN_CFG.replace("adam=1", "adam=0"), out=tmp_path / "out",
           max_batches=2)
    path = tmp_path / "adam.cfg"
    path.write_text(TRAIN_CFG)
    with pytest.raises(DarkbpError, match=r"trained with adam=0, .*adam.cfg has adam=1"):
        Trainer(parse_network(path), sample,
                TrainOptions(out=tmp_path / "out", max_batches=4, resume=True))


def test_darkbp_train_with_adam(tmp_path):
    cfg = tmp_path / "adam.cfg"
    cfg.write_text(TRAIN_CFG)
    result = CliRunner().invoke(main, ["train", str(cfg), "--data", str(SAMPLE),
                                       "--max-batches", "3", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    state = np.load(tmp_path / "out" / "adam_last.state.npz")
    assert int(state["adam.t"]) == 3
    assert sorted(key for key in state.files if key.startswith(("adam.m.", "sgd."))) == [
        "adam.m.0.biases", "adam.m.0.scales", "adam.m.0.weights",
        "sgd.2.biases", "sgd.2.weights"]
