"""darkbp against Darknet's own numbers, for the cfgs where Darknet is right.

Each fixture of ../shared/darknet-golden/ in EXACT (tests/golden.py) is replayed from
Darknet's init.weights, with Darknet's recorded random numbers where the cfg draws any:
inference, the first training forward, the losses of five SGD steps, the weights after
steps 1 and 5, inference after step 5 and from step1.weights, and the .weights files
darkbp writes. All must equal Darknet's to float32 rounding: about 1e-6 of each tensor's
largest value. What is particular to a layer type (a layer's own output, an exact crop, the
update of a [local]) is checked beside the layer (tests/test_layer_*.py), and so are the
fixtures where darkbp deliberately differs (dropout_logistic, cost_sse, cost_sse_nosoftmax).
"""

from __future__ import annotations

import pytest

from darkbp.weights import save_weights
from tests.golden import CropDraws, DropoutDraws, Golden, relative

FORWARD_TOL = 1e-6
LOSS_TOL = 1e-6
WEIGHTS_TOL = 2e-6

# (fixture, noise factory: Golden -> noise(step) for Golden.replay, or None for darkbp's own)
EXACT = [
    ("lenet", None),
    ("grouped", None),
    ("activations", None),
    ("avgpool", None),                  # conv, max, conv/2, conv 1x1, avg, softmax
    # Layer 0 gets the sum of its two readers' gradients (the 3x3 conv 1 and the route 2);
    # layer 1's gradient comes through the route 4 alone.
    ("route", None),
    ("local", None),
    # relu before the [dropout]: relu'(2y) = relu'(y) and dropped units get no gradient, so
    # Darknet's in-place dropout does no harm here, and darkbp must agree.
    ("dropout", DropoutDraws.recorded),
    # The crop is the first layer: Darknet's missing crop gradient would reach nothing, so
    # every update must be Darknet's.
    ("crop", CropDraws.recorded),
]
NAMES = [name for name, _ in EXACT]


@pytest.fixture(scope="module", params=EXACT, ids=NAMES)
def replayed(request):
    name, noise = request.param
    fixture = Golden(name)
    return fixture, fixture.replay(noise=noise(fixture) if noise else None)


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


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("weights", ["init.weights", "step5.weights"])
def test_darkbp_writes_darknets_files_byte_for_byte(tmp_path, name, weights):
    fixture = Golden(name)
    network = fixture.network(weights)
    seen = 0 if weights == "init.weights" else 40
    save_weights(tmp_path / "copy.weights", network.layers, seen)
    assert (tmp_path / "copy.weights").read_bytes() == (fixture.folder / weights).read_bytes()
