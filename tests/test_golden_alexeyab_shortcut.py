"""AlexeyAB's weighted [shortcut] against its own numbers: darknet-golden/alexeyab-new/.

shortcut_weighted (three shortcuts: per_feature relu, per_channel softmax, per_feature relu
of two `from` layers) is replayed from AlexeyAB's init.weights: inference and every layer's
output, its table, the losses of five SGD steps, every array after steps 1 and 5, inference
after training, and the place of the shortcut weights in its .weights files.

AlexeyAB's CPU training differs from darkbp's in three ways, all reproduced here by a small
reference (tests/golden_alexeyab.py `cpu_replay`, and `cpu_factor_gradient` here) and
measured against the fixture:

- its convolution's backward overwrites its input's gradient (col2im_cpu_ext sets the
  buffer to zero first), so the gradient a shortcut adds into a `from` layer that feeds a
  convolution is lost: here every `from` layer feeds one, and the fixture's updates equal a
  run that drops those gradients, not darkbp's exact one;
- its [avgpool] never clears its gradient between steps (make_avgpool_layer leaves l.train
  at 0, and the CPU's forward_network clears only the deltas of layers with l.train set;
  forward_network_gpu clears every layer's), so step k
  backpropagates the sum of the cost gradients of steps 1..k: steps 1 and 2 are right,
  step 3 on is not (this concerns every AlexeyAB fixture ending in [avgpool], not only this
  one);
- its shortcut weights take the gradient of the normalised factors (grad = 1 in
  backward_shortcut_multilayer_cpu), not of the weights (tests/naive_layers.py).

darkbp trains with the exact gradient (AlexeyAB's cuDNN build adds into the input's
gradient); `test_darkbps_own_step_differs_only_where_alexeyab_cpu_loses_gradients` shows the
two side by side. shortcut_weights_nonorm is the cfg AlexeyAB's parser refuses.
"""

from __future__ import annotations

import numpy as np
import pytest

import darkbp.layers.shortcut as shortcut_module
from darkbp.network import parse_network
from darkbp.summary import alexeyab_text
from darkbp.weights import load_weights, save_weights
from tests.golden import Golden, arrays, relative
from tests.golden_alexeyab import ZEROED, cpu_replay

FORWARD_TOL = 1e-6
LOSS_TOL = 1e-6
WEIGHTS_TOL = 2e-6
SHORTCUTS = (2, 4, 6)


@pytest.fixture(scope="module")
def fixture():
    return Golden("alexeyab-new/shortcut_weighted")


def cpu_factor_gradient(weights, a, g, normalization):
    """backward_shortcut_multilayer_cpu's weight rule: the gradient g of the factors a."""
    return g.copy()


@pytest.fixture(scope="module")
def cpu_run(fixture):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shortcut_module, "mix_weights_grad", cpu_factor_gradient)
        return cpu_replay(fixture)


# --- inference ------------------------------------------------------------------------------------

def test_inference_and_every_layer_equal_alexeyabs(fixture):
    network = fixture.network()
    assert relative(network.forward(fixture.input), fixture.forward) < FORWARD_TOL
    outputs = network.run(fixture.input, keep=True)
    assert len(outputs) == 10
    for index, output in enumerate(outputs):
        ours = np.asarray(output).reshape(fixture.batch, -1)
        assert relative(ours, fixture.layer_output("forward", index)) < FORWARD_TOL, index


def test_table_equals_alexeyabs(fixture):
    text = (fixture.folder / "summary.txt").read_text()
    assert alexeyab_text(parse_network(fixture.cfg)) == text


def test_relu_factors_are_the_cpus_here(fixture):
    # AlexeyAB's CPU normalises with relu, darkbp with the GPU's floor 0.001: the same factors
    # while every weight is above 0.001, as all of the fixture's are.
    for step in (1, 5):
        for index in SHORTCUTS:
            assert fixture.weights_after(step)[f"{index}.weights"].min() > 0.5


# --- AlexeyAB's CPU training, reproduced -------------------------------------------------------

def test_training_forward_and_losses_equal_alexeyabs(cpu_run, fixture):
    assert relative(cpu_run.train_forward, fixture.f32("train_forward.f32")) < FORWARD_TOL
    batch = fixture.batch
    for step, (ours, (theirs, theirs_per_image)) in enumerate(
            zip(cpu_run.losses, fixture.losses, strict=True), start=1):
        assert ours == pytest.approx(theirs, rel=LOSS_TOL), step
        assert ours / batch == pytest.approx(theirs_per_image, rel=LOSS_TOL), step


@pytest.mark.parametrize("step", [1, 5])
def test_every_array_after_sgd_steps_equals_alexeyabs(cpu_run, fixture, step):
    theirs = fixture.weights_after(step)
    assert theirs.keys() == cpu_run.step_weights[step].keys()
    for key, value in theirs.items():
        assert relative(cpu_run.step_weights[step][key], value) < WEIGHTS_TOL, key
    init = arrays(fixture.network())
    for index in SHORTCUTS:                               # the shortcut weights did train
        key = f"{index}.weights"
        assert np.all(theirs[key] != init[key]), key


def test_inference_after_training_equals_alexeyabs(cpu_run, fixture):
    assert relative(cpu_run.forward_step5, fixture.f32("forward_step5.f32")) < FORWARD_TOL
    from_step1 = fixture.network("step1.weights").forward(fixture.input)
    assert relative(from_step1, fixture.f32("forward_step1.f32")) < FORWARD_TOL


def test_darkbps_own_step_differs_only_where_alexeyab_cpu_loses_gradients(cpu_run, fixture):
    # darkbp's exact step 1: the layers behind the last shortcut's from layers (7, 5) get
    # AlexeyAB's update; every layer that feeds a `from` gets much more gradient than
    # AlexeyAB's CPU gives it, and the shortcut weights move by their own gradient.
    ours = Golden.replay(fixture, steps=1).step_weights[1]
    theirs = fixture.weights_after(1)
    init = arrays(fixture.network())
    for key in ("5.biases", "5.weights", "7.biases", "7.weights"):
        assert relative(ours[key], theirs[key]) < WEIGHTS_TOL, key
    for key in ("0.biases", "1.biases", "3.biases"):
        assert relative(ours[key] - init[key], theirs[key] - init[key]) > 1, key
    for index in SHORTCUTS:
        key = f"{index}.weights"
        assert relative(ours[key] - init[key], theirs[key] - init[key]) > 0.5, key
    # The convolutions' updates need AlexeyAB's backward: with its weight rule alone they
    # still differ; with its backward and darkbp's exact weight gradient they equal
    # AlexeyAB's, and the shortcut weights do not.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shortcut_module, "mix_weights_grad", cpu_factor_gradient)
        rule_only = Golden.replay(fixture, steps=1).step_weights[1]
    assert relative(rule_only["0.biases"], theirs["0.biases"]) > 1
    backward_only = cpu_replay(fixture, steps=1).step_weights[1]
    for key in ("0.biases", "0.weights", "1.weights", "3.weights"):
        assert relative(backward_only[key], theirs[key]) < WEIGHTS_TOL, key
    assert relative(backward_only["6.weights"] - init["6.weights"],
                    theirs["6.weights"] - init["6.weights"]) > 0.5


def test_alexeyab_cpus_avgpool_keeps_its_gradient_from_step_to_step(fixture):
    # With the overwrite and the weight rule but a cleared [avgpool] gradient, the losses
    # of steps 1 and 2 are AlexeyAB's and step 3's is not.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shortcut_module, "mix_weights_grad", cpu_factor_gradient)
        run = cpu_replay(fixture, steps=3, zeroed=ZEROED | {"avgpool"})
    ours1, ours2, ours3 = run.losses
    (theirs1, _), (theirs2, _), (theirs3, _), *_ = fixture.losses
    assert ours1 == pytest.approx(theirs1, rel=LOSS_TOL)
    assert ours2 == pytest.approx(theirs2, rel=LOSS_TOL)
    assert abs(ours3 - theirs3) > 100 * LOSS_TOL * theirs3          # 5e-4 relative


# --- .weights ---------------------------------------------------------------------------------------

def test_shortcut_weights_sit_where_alexeyab_saves_them(fixture):
    # Per layer in order: conv biases then weights; a weighted shortcut its nweights floats,
    # per_feature one per input, per_channel inputs x channels, input-major, prev first.
    network = fixture.network("step5.weights")
    raw = np.fromfile(fixture.folder / "step5.weights", dtype="<f4", offset=20)
    offset = 0
    for layer in network.layers:
        for name in layer.weights_order():
            array = getattr(layer, name)
            stored = raw[offset:offset + array.size]
            if layer.type == "shortcut":
                # layer 2: (prev, layer 0); layer 4: (prev, layer 2) x 8 channels;
                # layer 6: (prev, layer 4, layer 2)
                assert array.shape == {2: (2, 1), 4: (2, 8), 6: (3, 1)}[layer.index]
                np.testing.assert_array_equal(stored.reshape(array.shape), array)
            offset += array.size
    assert offset == raw.size


def test_darkbp_writes_alexeyabs_weights_back_unchanged(tmp_path, fixture):
    network = fixture.network("step5.weights")
    save_weights(tmp_path / "again.weights", network.layers, seen=40)
    ours = (tmp_path / "again.weights").read_bytes()
    theirs = (fixture.folder / "step5.weights").read_bytes()
    assert len(ours) == len(theirs) and ours[20:] == theirs[20:]       # after the header
    loaded = parse_network(fixture.cfg).initialize(1, np.float32)
    load_weights(tmp_path / "again.weights", loaded.layers)
    for index in SHORTCUTS:
        np.testing.assert_array_equal(loaded.layers[index].weights,
                                      network.layers[index].weights)


# --- the cfg AlexeyAB's parser refuses ---------------------------------------------------------

def test_weights_without_normalization_run_where_alexeyab_refuses():
    refused = Golden("alexeyab-new/shortcut_weights_nonorm")
    # AlexeyAB stops at layer 4 (driver_error.txt): "Incorrect weights_normalization = none".
    assert "Incorrect weights_normalization = none" in (
        refused.folder / "driver_error.txt").read_text()
    theirs = (refused.folder / "summary.txt").read_text().splitlines(keepends=True)
    assert theirs[5].startswith("   4 Darknet error location: ./src/parser.c, parse_shortcut()")
    network = parse_network(refused.cfg)
    ours = alexeyab_text(network).splitlines(keepends=True)
    assert ours[:5] == theirs[:5]                           # the header and layers 0-3
    assert ours[5] == "   4 Shortcut Layer: 2,  wt = 2, wn = 0, outputs:  14 x  14 x   8 0.000 BF\n"
    assert [(w.line, "AlexeyAB's parser refuses the pair" in w.message)
            for w in network.warnings] == [(41, True)]
    # darkbp runs it as AlexeyAB's GPU kernel would (sum = 1, the raw weights): with the
    # weights at 1 (AlexeyAB's start, here from shortcut_weighted's init.weights, whose
    # arrays have the same shapes) layer 4 is layer 3 + layer 2.
    network.initialize(0, np.float32)
    load_weights(Golden("alexeyab-new/shortcut_weighted").folder / "init.weights",
                 network.layers)
    outputs = network.run(refused.input, keep=True)
    np.testing.assert_array_equal(outputs[4], outputs[3] + outputs[2])
    assert np.abs(outputs[4] - outputs[3]).max() > 0.1
