"""darkbp against AlexeyAB's own numbers for [convolutional] dilation and [maxpool]
maxpool_depth: ../shared/darknet-golden/alexeyab-new/conv_dilation and maxpool_depth (see
that folder's README), replayed from AlexeyAB's init.weights.

Inference, every layer's output, the first SGD step and AlexeyAB's table equal its files to
float32 rounding. Five steps differ, on purpose: AlexeyAB's CPU build, which wrote the
files, never clears the delta of an [avgpool] between steps (nor of any layer whose type
never sets l.train: tests/golden_alexeyab.py cpu_replay); its GPU build and darkbp do. With that
one CPU behaviour reproduced, the five steps equal the files as well, which shows that
nothing else differs.
"""

from __future__ import annotations

import numpy as np
import pytest

import darkbp
from darkbp.network import parse_network
from darkbp.summary import alexeyab_text
from tests.golden import Golden, relative
from tests.golden_alexeyab import cpu_replay

FORWARD_TOL = 1e-6
LOSS_TOL = 1e-6
WEIGHTS_TOL = 2e-6
FIXTURES = ["conv_dilation", "maxpool_depth"]


@pytest.fixture(scope="module", params=FIXTURES)
def fixture(request):
    return Golden(f"alexeyab-new/{request.param}")


@pytest.fixture(scope="module")
def as_gpu(fixture):
    """darkbp's own five steps (AlexeyAB's GPU semantics)."""
    return fixture.replay()


@pytest.fixture(scope="module")
def as_cpu(fixture):
    """Five steps with the [avgpool] deltas kept, as AlexeyAB's CPU build trains."""
    return cpu_replay(fixture)


def test_alexeyab_table_equals_its_summary(fixture):
    theirs = (fixture.folder / "summary.txt").read_text()
    assert alexeyab_text(parse_network(fixture.cfg)) == theirs


def test_inference_equals_alexeyabs(fixture, as_gpu):
    net = darkbp.load(fixture.cfg, fixture.folder / "init.weights")
    assert relative(net.predict(fixture.input), fixture.forward) < FORWARD_TOL
    assert relative(as_gpu.forward, fixture.forward) < FORWARD_TOL
    assert relative(as_gpu.train_forward, fixture.f32("train_forward.f32")) < FORWARD_TOL


def test_every_layer_output_equals_alexeyabs(fixture):
    network = fixture.network()
    outputs = network.run(fixture.input, keep=True)
    assert len(outputs) == len(network.layers)
    for index, ours in enumerate(outputs):
        theirs = fixture.layer_output("forward", index)
        assert relative(ours.reshape(theirs.shape), theirs) < FORWARD_TOL, index


def test_one_sgd_step_equals_alexeyabs(fixture, as_gpu):
    (ours, _), (theirs, _) = as_gpu.losses[0], fixture.losses[0]
    assert ours == pytest.approx(theirs, rel=LOSS_TOL)
    theirs = fixture.weights_after(1)
    assert theirs.keys() == as_gpu.step_weights[1].keys()
    for key, value in theirs.items():
        assert relative(as_gpu.step_weights[1][key], value) < WEIGHTS_TOL, key
    from_step1 = fixture.network("step1.weights").forward(fixture.input)
    assert relative(from_step1, fixture.f32("forward_step1.f32")) < FORWARD_TOL


def test_five_steps_with_the_cpus_kept_avgpool_delta_equal_alexeyabs(fixture, as_cpu):
    for step, (ours, (theirs, _)) in enumerate(zip(as_cpu.losses, fixture.losses,
                                                        strict=True), start=1):
        assert ours == pytest.approx(theirs, rel=LOSS_TOL), step
    for key, value in fixture.weights_after(5).items():
        assert relative(as_cpu.step_weights[5][key], value) < WEIGHTS_TOL, key
    assert relative(as_cpu.forward_step5, fixture.f32("forward_step5.f32")) < FORWARD_TOL


def test_darkbp_clears_the_avgpool_delta_as_alexeyabs_gpu(fixture, as_gpu, as_cpu):
    # Steps 1 and 2 start from the same weights either way; from step 3 on the CPU's
    # gradient carries the earlier steps'.
    for step in (0, 1):
        assert as_gpu.losses[step][0] == pytest.approx(as_cpu.losses[step], rel=1e-12)
    assert abs(as_gpu.losses[2][0] - as_cpu.losses[2]) > 100 * LOSS_TOL * as_cpu.losses[2]
    worst = max(relative(as_gpu.step_weights[5][key], value)
                for key, value in fixture.weights_after(5).items())
    assert worst > 1e3 * WEIGHTS_TOL
    assert np.isfinite(as_gpu.losses[-1][0])
