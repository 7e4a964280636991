"""darkbp against Darknet's own numbers, for the cfgs where Darknet is right.

Each fixture of ../shared/darknet-golden/ (tests/golden.py) is replayed from Darknet's
init.weights: inference, the first training forward, the losses of five SGD steps, the
weights after steps 1 and 5, inference after step 5 and from step1.weights. All must
equal Darknet's to float32 rounding: about 1e-6 of each tensor's largest value.
Layer types where darkbp deliberately differs have their own tests beside the layer's.
"""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.weights import save_weights
from tests.golden import Golden, relative

FORWARD_TOL = 1e-6
LOSS_TOL = 1e-6
WEIGHTS_TOL = 2e-6

EXACT = ["lenet", "grouped", "activations"]


@pytest.fixture(scope="module", params=EXACT)
def replayed(request):
    fixture = Golden(request.param)
    return fixture, fixture.replay()


def test_inference_and_training_forward_equal_darknets(replayed):
    fixture, run = replayed
    assert relative(run.forward, fixture.forward) < FORWARD_TOL
    assert relative(run.train_forward, fixture.f32("train_forward.f32")) < FORWARD_TOL


def test_losses_of_five_steps_equal_darknets(replayed):
    fixture, run = replayed
    for step, ((ours, ours_per_image), (theirs, theirs_per_image)) in enumerate(
            zip(run.losses, fixture.losses, strict=True), start=1):
        assert ours == pytest.approx(theirs, rel=LOSS_TOL), step
        assert ours_per_image == pytest.approx(theirs_per_image, rel=LOSS_TOL), step


@pytest.mark.parametrize("step", [1, 5])
def test_weights_after_sgd_steps_equal_darknets(replayed, step):
    fixture, run = replayed
    theirs = fixture.weights_after(step)
    assert theirs.keys() == run.step_weights[step].keys()
    for key, value in theirs.items():
        assert relative(run.step_weights[step][key], value) < WEIGHTS_TOL, key


def test_inference_after_training_equals_darknets(replayed):
    fixture, run = replayed
    assert relative(run.forward_step5, fixture.f32("forward_step5.f32")) < FORWARD_TOL
    from_step1 = fixture.network("step1.weights").forward(fixture.input)
    assert relative(from_step1, fixture.f32("forward_step1.f32")) < FORWARD_TOL


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("weights", ["init.weights", "step5.weights"])
def test_darkbp_writes_darknets_files_byte_for_byte(tmp_path, name, weights):
    fixture = Golden(name)
    network = fixture.network(weights)
    seen = 0 if weights == "init.weights" else 40
    save_weights(tmp_path / "copy.weights", network.layers, seen)
    assert (tmp_path / "copy.weights").read_bytes() == (fixture.folder / weights).read_bytes()
