"""darkbp against AlexeyAB's own numbers for its activations (alexeyab-new/act_*).

Four fixtures of ../shared/darknet-golden/alexeyab-new/ (see its README), each conv nets
ending in conv 1x1 -> [avgpool] -> [softmax], written by AlexeyAB's CPU build:

    act_mish_swish      conv mish, max, conv swish, conv/2 hard_mish
    act_gelu_revleaky   conv leaky, max, conv gelu, conv/2 revleaky
    act_normch          conv leaky, max, conv normalize_channels, conv/2 …_softmax,
                        conv 1x1 …_softmax_maxval
    act_relu6           conv relu6, max, conv leaky x2

Inference and every layer's output equal AlexeyAB's files to float32 rounding, except
relu6's: its CPU activate() has no relu6 case and returns 0, darkbp computes its GPU relu6,
and a CPU-style relu6 (zeros) reproduces the files. Training is replayed with AlexeyAB's
CPU behaviour put back where it differs from darkbp, each shown side by side:

- every fixture: its gradients composed as AlexeyAB's CPU composes them
  (tests/golden_alexeyab.py's cpu_replay: the final [avgpool]'s delta is never zeroed and
  adds up over the steps); step 1 is unaffected, steps 2-5 are;
- gelu: AlexeyAB's backward evaluates gelu's derivative at the output y, not at x;
- normalize_channels*: its CPU gradient is dx = delta·Σ_c y·delta, not the derivative;
- relu6: zeros forward, so zero gradients too.
With those, 1 and 5 SGD steps equal step1/step5.weights; with darkbp's own (the true
derivatives, the GPU relu6) the layers the difference reaches do not.
"""

from __future__ import annotations

import contextlib
import dataclasses
from unittest import mock

import numpy as np
import pytest

from darkbp.ops.activations import ACTIVATIONS
from tests import naive
from tests.golden import Golden, arrays, relative
from tests.golden_alexeyab import cpu_replay

FORWARD_TOL = 1e-6
LOSS_TOL = 1e-6
WEIGHTS_TOL = 2e-6
AGREE = ["act_mish_swish", "act_gelu_revleaky", "act_normch"]     # inference as AlexeyAB's


# --- AlexeyAB's CPU behaviour, for the replays (test-only) --------------------------------

def _gelu_gradient_of_output(x, y, dy):
    """gradient_array(l.output, …, GELU): gelu_gradient evaluated at y."""
    factor = np.vectorize(naive.ALEXEYAB_GELU_GRADIENT, otypes=[float])(y)
    return (dy * factor).astype(dy.dtype)


def _normch_cpu(softmax: bool):
    # Darknet's delta is −dL/dy, darkbp's dy is +dL/dy; the CPU gradient is quadratic in
    # the delta (dx = delta·Σ y·delta), so the sign must go through it as Darknet's does.
    def backward(x, y, dy):
        return -naive.normalize_channels_gradient_cpu(y, -dy, softmax).astype(dy.dtype)
    return backward


def _zeros(x):
    return np.zeros_like(x)


def _zero_gradient(x, y, dy):      # relu6_gradient(y = 0) = 0
    return np.zeros_like(dy)


CPU = {
    "gelu": {"backward": _gelu_gradient_of_output},
    "normalize_channels": {"backward": _normch_cpu(softmax=False)},
    "normalize_channels_softmax": {"backward": _normch_cpu(softmax=True)},
    "normalize_channels_softmax_maxval": {"backward": _normch_cpu(softmax=True)},
    "relu6": {"forward": _zeros, "backward": _zero_gradient},
}


@contextlib.contextmanager
def alexeyab_cpu(*names: str):
    """ACTIVATIONS[name] computing as AlexeyAB's CPU build does, for each name."""
    patched = {name: dataclasses.replace(ACTIVATIONS[name], in_place=None,
                                         backward_in_place=None, **CPU[name])
               for name in names}
    with mock.patch.dict(ACTIVATIONS, patched):
        yield


CPU_ACTIVATIONS = {
    "act_mish_swish": (),
    "act_gelu_revleaky": ("gelu",),
    "act_normch": ("normalize_channels", "normalize_channels_softmax",
                   "normalize_channels_softmax_maxval"),
    "act_relu6": ("relu6",),
}


@pytest.fixture(scope="module", params=list(CPU_ACTIVATIONS))
def cpu_replayed(request):
    fixture = Golden(f"alexeyab-new/{request.param}")
    with alexeyab_cpu(*CPU_ACTIVATIONS[request.param]):
        return fixture, cpu_replay(fixture)


def layer_outputs(fixture: Golden) -> list[np.ndarray]:
    network = fixture.network()
    return [y.reshape(fixture.batch, -1) for y in network.run(fixture.input, keep=True)]


# --- inference ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", AGREE)
def test_inference_and_every_layer_equal_alexeyabs(name):
    fixture = Golden(f"alexeyab-new/{name}")
    assert relative(fixture.network().forward(fixture.input), fixture.forward) < FORWARD_TOL
    outputs = layer_outputs(fixture)
    assert len(outputs) == len(list((fixture.folder / "layers").glob("forward_*.f32")))
    for index, ours in enumerate(outputs):
        assert relative(ours, fixture.layer_output("forward", index)) < FORWARD_TOL, index


def test_relu6_is_the_gpus_and_a_cpu_relu6_of_zeros_reproduces_the_files():
    fixture = Golden("alexeyab-new/act_relu6")
    # AlexeyAB's CPU file: layer 0 all zeros (its activate() lacks relu6)
    assert not fixture.layer_output("forward", 0).any()
    # darkbp: min(max(z, 0), 6) of the convolution z (tests/naive.py's loops)
    network = fixture.network()
    conv = network.layers[0]
    z = naive.conv_forward(fixture.input.astype(float), conv.weights.astype(float), 1, 1, 1)
    z += conv.biases.astype(float)[:, None, None]
    ours = layer_outputs(fixture)
    assert ours[0].max() > 0.5
    assert relative(ours[0], np.clip(z, 0, 6).reshape(fixture.batch, -1)) < FORWARD_TOL
    assert relative(network.forward(fixture.input), fixture.forward) > 1e-2
    # side by side: a relu6 that outputs zeros gives AlexeyAB's every file
    with alexeyab_cpu("relu6"):
        assert relative(fixture.network().forward(fixture.input), fixture.forward) < FORWARD_TOL
        for index, cpu in enumerate(layer_outputs(fixture)):
            assert relative(cpu, fixture.layer_output("forward", index)) < FORWARD_TOL, index


# --- training, with AlexeyAB's CPU behaviour ------------------------------------------------

def test_losses_of_five_steps_equal_alexeyabs(cpu_replayed):
    fixture, run = cpu_replayed
    assert run.losses == pytest.approx([cost for cost, _ in fixture.losses], rel=LOSS_TOL)


@pytest.mark.parametrize("step", [1, 5])
def test_weights_after_sgd_steps_equal_alexeyabs(cpu_replayed, step):
    fixture, run = cpu_replayed
    theirs = fixture.weights_after(step)
    assert set(run.step_weights[step]) == set(theirs)
    for key, value in theirs.items():
        assert relative(run.step_weights[step][key], value) < WEIGHTS_TOL, key


def test_inference_after_training_equals_alexeyabs(cpu_replayed):
    fixture, run = cpu_replayed
    assert relative(run.forward_step5, fixture.f32("forward_step5.f32")) < FORWARD_TOL


# --- training, darkbp's own: where it parts from the CPU files -----------------------------

@pytest.mark.parametrize("name, agree, differ", [
    # gelu is layer 2: the layers after it (3, 4) get AlexeyAB's step 1, 0 and 2 do not
    ("act_gelu_revleaky", (3, 4), (0, 2)),
    # normalize_channels* are layers 2-4: only the last conv gets AlexeyAB's step 1
    ("act_normch", (5,), (0, 2, 3, 4)),
    # relu6 is layer 0: with darkbp's relu6 every layer's update differs
    ("act_relu6", (), (0, 2, 3, 4)),
])
def test_darkbps_true_derivatives_part_from_the_cpu_step(name, agree, differ):
    fixture = Golden(f"alexeyab-new/{name}")
    ours, theirs = fixture.replay(steps=1).step_weights[1], fixture.weights_after(1)
    for layer in agree:
        for array in ("weights", "biases"):
            key = f"{layer}.{array}"
            assert relative(ours[key], theirs[key]) < WEIGHTS_TOL, key
    # the updates (step 1 − init): one step moves the weights by ~1e-5 of their size
    init = arrays(fixture.network())
    for layer in differ:
        key = f"{layer}.weights"
        assert relative(ours[key] - init[key], theirs[key] - init[key]) > 0.1, layer
