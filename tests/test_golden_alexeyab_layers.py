"""[sam], [scale_channels], [reorg3d], [local_avgpool] against AlexeyAB's own numbers and tables.

The fixtures alexeyab-new/sam (conv, conv mish, conv logistic, [sam] from=-2) and
alexeyab-new/se_scale_channels (efficientnet's squeeze-excitation: conv swish, [avgpool],
conv swish, conv logistic, [scale_channels] from=-4), written by AlexeyAB's CPU build
(their README). darkbp, from AlexeyAB's init.weights: inference, every layer's output, the
first training forward and loss, inference from AlexeyAB's step1.weights, and the tables, each
to float32 rounding.

Training: AlexeyAB's CPU composes the gradients unlike its GPU (tests/golden_alexeyab.py): it
drops the gradient [sam] gives its `from` layer (a convolution reading that layer zeroes it
afterwards), and a layer whose delta only adds keeps it from one step to the next (the
[avgpool] before each [softmax] here). darkbp computes the true gradient, as the GPU build
does: its first step equals AlexeyAB's wherever the CPU's step 1 is right (all of
se_scale_channels, all but the two layers before the [sam] in sam). Side by side,
cpu_replay, darkbp's own layers composed as AlexeyAB's CPU composes them, gives AlexeyAB's
losses of five steps, its weights after steps 1 and 5 and its inference after step 5.

AlexeyAB's own tables (../shared/darknet-summary/alexeyab-own/) of every zoo cfg using these
sections: each of their lines, byte for byte. The ONNX export of both fixtures against
AlexeyAB's own inference after step 5, and of each layer's contract cfg at the oldest and
newest opsets.
"""

from __future__ import annotations

import re

import pytest

from darkbp.export import MIN_OPSET
from darkbp.layers.local_avgpool import LocalAvgpoolLayer
from darkbp.layers.reorg3d import Reorg3dLayer
from darkbp.layers.sam import SamLayer
from darkbp.layers.scale_channels import ScaleChannelsLayer
from darkbp.network import parse_network
from darkbp.summary import alexeyab_text
from tests.conftest import ROOT, SHARED
from tests.golden import Golden, relative
from tests.golden_alexeyab import cpu_replay
from tests.test_export_onnx import compare, export, images, session, trained_files
from tests.test_golden import FORWARD_TOL, LOSS_TOL, WEIGHTS_TOL

FIXTURES = ["alexeyab-new/sam", "alexeyab-new/se_scale_channels"]
OWN_TABLES = SHARED / "darknet-summary" / "alexeyab-own"
ZOO = SHARED / "darknet-cfg" / "alexeyab"
TYPES = (SamLayer, ScaleChannelsLayer, Reorg3dLayer, LocalAvgpoolLayer)


@pytest.fixture(scope="module", params=FIXTURES, ids=lambda name: name.split("/")[1])
def replayed(request):
    """(fixture, darkbp's replay of the driver's run, cpu_replay of it)."""
    fixture = Golden(request.param)
    return fixture, fixture.replay(), cpu_replay(fixture)


def test_inference_and_training_forward_equal_alexeyabs(replayed):
    fixture, run, _ = replayed
    assert relative(run.forward, fixture.forward) < FORWARD_TOL
    assert relative(run.train_forward, fixture.f32("train_forward.f32")) < FORWARD_TOL


def test_every_layers_output_equals_alexeyabs(replayed):
    fixture, _, _ = replayed
    network = fixture.network()
    outputs = network.run(fixture.input, keep=True)
    assert any(isinstance(layer, (SamLayer, ScaleChannelsLayer)) for layer in network.layers)
    for layer, ours in zip(network.layers, outputs, strict=True):
        theirs = fixture.layer_output("forward", layer.index)
        assert relative(ours.reshape(theirs.shape), theirs) < FORWARD_TOL, layer.index


def test_the_first_loss_equals_alexeyabs(replayed):
    fixture, run, _ = replayed
    theirs, theirs_per_image = fixture.losses[0]
    assert run.losses[0] == (pytest.approx(theirs, rel=LOSS_TOL),
                             pytest.approx(theirs_per_image, rel=LOSS_TOL))


# Layer indexes whose step-1 update AlexeyAB's CPU gets wrong: in sam, the [sam]'s gradient to
# its `from` layer 1 (and so to layer 0) is lost.
CPU_STEP1_WRONG = {"alexeyab-new/sam": {0, 1}, "alexeyab-new/se_scale_channels": set()}


def test_the_first_step_equals_alexeyabs_where_its_cpu_is_right(replayed):
    fixture, run, _ = replayed
    theirs = fixture.weights_after(1)
    assert theirs.keys() == run.step_weights[1].keys()
    wrong = CPU_STEP1_WRONG[fixture.name]
    for key, value in theirs.items():
        error = relative(run.step_weights[1][key], value)
        if int(key.split(".")[0]) in wrong and key.endswith("biases"):
            assert error > 0.5, key           # AlexeyAB's bias steps lack the [sam]'s part
        elif int(key.split(".")[0]) in wrong:
            assert error > 1e-5, key
        else:
            assert error < WEIGHTS_TOL, key


def test_alexeyabs_cpu_training_is_reproduced_side_by_side(replayed):
    fixture, _, run = replayed
    for step, (ours, (theirs, _)) in enumerate(zip(run.losses, fixture.losses, strict=True),
                                               start=1):
        assert ours == pytest.approx(theirs, rel=LOSS_TOL), step
    for step in (1, 5):
        theirs = fixture.weights_after(step)
        assert theirs.keys() == run.step_weights[step].keys()
        for key, value in theirs.items():
            assert relative(run.step_weights[step][key], value) < WEIGHTS_TOL, (step, key)
    assert relative(run.forward_step5, fixture.f32("forward_step5.f32")) < FORWARD_TOL


def test_darkbps_training_differs_from_alexeyabs_cpu_after_step_1(replayed):
    # From step 2 on, the CPU's [avgpool] passes back the sum of every step's gradient.
    _, run, cpu = replayed
    assert run.losses[2][0] > cpu.losses[2] + 1e-3        # the CPU's steps are too long
    assert max(relative(run.step_weights[5][key], value)
               for key, value in cpu.step_weights[5].items()) > 0.1


def test_inference_from_alexeyabs_trained_weights_equals_alexeyabs(replayed):
    fixture, _, _ = replayed
    from_step1 = fixture.network("step1.weights").forward(fixture.input)
    assert relative(from_step1, fixture.f32("forward_step1.f32")) < FORWARD_TOL
    from_step5 = fixture.network("step5.weights").forward(fixture.input)
    assert relative(from_step5, fixture.f32("forward_step5.f32")) < FORWARD_TOL


@pytest.mark.parametrize("name", FIXTURES)
def test_table_equals_alexeyabs(name):
    fixture = Golden(name)
    assert alexeyab_text(parse_network(fixture.cfg)) == (fixture.folder
                                                         / "summary.txt").read_text()


@pytest.mark.parametrize("name", FIXTURES)
def test_onnx_export_equals_alexeyabs_inference_after_training(tmp_path, name):
    fixture = Golden(name)
    model = export(tmp_path, fixture.cfg, fixture.folder / "step5.weights")
    output = session(model, layer_outputs=False).run(None, {"input": fixture.input})[0]
    assert relative(output, fixture.f32("forward_step5.f32")) < FORWARD_TOL


# --- AlexeyAB's tables of its own zoo ---------------------------------------------------------

def table_entries(text: str) -> dict[int, str]:
    """A table's text per layer index: the line starting with "%4d " and any lines after it
    up to the next such line (a [shortcut]'s "Downsample" note), from the header to the
    totals."""
    entries: dict[int, str] = {}
    index = None
    for line in text.splitlines(keepends=True)[1:]:
        found = re.match(r" *(\d+) ", line)
        if line.startswith(("Total BFLOPS", "avg_outputs")):
            index = None
        elif found:
            index = int(found.group(1))
            entries[index] = line
        elif index is not None:
            entries[index] += line
    return entries


def _uses_these_sections(path) -> bool:
    return bool(re.search(r"(?m)^\[(sam|scale_channels|reorg3d|local_avgpool)\]",
                          path.read_text()))


USERS = sorted(path.stem for path in ZOO.glob("*.cfg") if _uses_these_sections(path))
READY = USERS           # cspx-p7-mish's layers=180###P6 reads as atoi reads it, 180 (cfg.py)


def test_the_zoo_cfgs_using_these_sections_are_known():
    # Which AlexeyAB cfgs of ../shared/ use them (FEATURES.md counts the whole zoo: one more
    # with [local_avgpool], not copied here), each with its own table.
    Golden("alexeyab-new/sam")                 # fails in CI (skips elsewhere) without shared
    assert USERS == ["cspx-p7-mish", "cspx-p7-mish_hp", "efficientnet_b0",
                     "yolov4-sam-mish-csp-reorg-bfm"]
    assert all((OWN_TABLES / f"{name}.txt").is_file() for name in USERS)


@pytest.mark.parametrize("name", READY)
def test_their_lines_in_alexeyabs_own_tables(name):
    network = parse_network(ZOO / f"{name}.cfg")
    theirs = table_entries((OWN_TABLES / f"{name}.txt").read_text())
    assert len(theirs) == len(network.layers)
    ours = [layer for layer in network.layers if isinstance(layer, TYPES)]
    assert ours
    for layer in ours:
        assert "%4d " % layer.index + layer.alexeyab_line() == theirs[layer.index], layer.index


def test_efficientnet_b0s_whole_table_equals_alexeyabs():
    # Its avg_outputs counts none of its 16 [scale_channels] (their l.w = l.h = 1, the scales').
    cfg = ZOO / "efficientnet_b0.cfg"
    assert alexeyab_text(parse_network(cfg)) == (OWN_TABLES / "efficientnet_b0.txt").read_text()


@pytest.mark.parametrize("name", READY)
def test_shapes_agree_with_the_layers_after_them(name):
    # AlexeyAB prints no shape on a "scale Layer" line: the next layer's input shows it.
    network = parse_network(ZOO / f"{name}.cfg")
    theirs = table_entries((OWN_TABLES / f"{name}.txt").read_text())
    checked = 0
    for layer in network.layers[:-1]:
        if not isinstance(layer, (SamLayer, ScaleChannelsLayer)):
            continue
        following = theirs[layer.index + 1]
        shape = re.search(r"(\d+) x +(\d+) x +(\d+) ->", following)
        if shape:                          # a conv or a maxpool reads it
            c, h, w = layer.out_shape
            assert tuple(map(int, shape.groups())) == (w, h, c), following
            checked += 1
    assert checked


# --- ONNX at the oldest and newest opsets -----------------------------------------------------

@pytest.mark.parametrize("opset", [MIN_OPSET, 21])
@pytest.mark.parametrize("name", ["sam", "scale_channels", "local_avgpool", "reorg3d"])
def test_contract_cfgs_export_at_other_opsets(tmp_path, name, opset):
    cfg = ROOT / "tests" / "layer_cfgs" / f"{name}.cfg"
    network, weights = trained_files(tmp_path, cfg)
    model = export(tmp_path, cfg, weights, "--opset", str(opset))
    assert [o.version for o in model.opset_import] == [opset]
    compare(network, model, images(network))
