"""`darkbp export` of detection cfgs: one model output per head, what the head's forward gives.

The golden nets of ../shared/darknet-golden/ (yolo, region, detection) with Darknet's
trained bn_eval.weights, a yolov3-tiny-shaped cfg on a non-square input, and [region] and
[detection] heads with each softmax and background setting, with random weights: saved as a
.weights file, exported by the CLI (dynamic batch and batch 1; opsets MIN_OPSET, the default
and 21), run by onnxruntime and by OpenCV's dnn. Each head's output equals darkbp's
(`network.run(x)[head.index]`, evaluation mode) to 1e-5, absolute.

The reference is darkbp's NumPy forward, which tests/test_detect.py holds to
Darknet's own outputs; the models are onnxruntime's and OpenCV's reading of the operators.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import darkbp
from darkbp.classifier import letterboxed
from darkbp.cli import main
from darkbp.detector import head_outputs, network_boxes
from darkbp.export import DEFAULT_OPSET, MIN_OPSET
from darkbp.network import Network, parse_network
from darkbp.weights import save_weights
from tests.conftest import ROOT
from tests.golden import GOLDEN, Golden
from tests.test_export_onnx import LAYER_CFGS, _refused, export, session

ATOL = 1e-5
OPSETS = (MIN_OPSET, DEFAULT_OPSET, 21)
TINY = ROOT / "tests" / "detector_cfgs" / "yolov3-tiny-160x96.cfg"

# The heads' outputs of each golden net, in order: (name, shape of one image).
GOLDEN_HEADS = {
    "yolo": [("yolo_16", [24, 2, 2]), ("yolo_23", [24, 4, 4])],
    "region": [("region_11", [40, 4, 4])],
    "detection": [("detection_9", [117, 1, 1])],
}


# ---------------------------------------------------------------------- helpers
def randomized(cfg, seed: int = 0) -> Network:
    """The cfg's network, Darknet's random initialisation with every bias, batch-norm scale
    and rolling statistic drawn too (a fresh network has them 0 or 1)."""
    network = parse_network(cfg).initialize(seed, np.float32)
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        for name in layer.weights_order():
            array = getattr(layer, name)
            if name == "rolling_variance":
                array[...] = rng.uniform(0.5, 2.0, array.shape)
            elif name == "scales":
                array[...] = rng.uniform(0.5, 1.5, array.shape)
            elif name in ("biases", "rolling_mean"):
                array[...] = rng.normal(0.0, 0.2, array.shape)
    return network


def weights_file(tmp_path, network: Network):
    path = tmp_path / "random.weights"
    save_weights(path, network.layers, seen=0)
    return path


def images(network: Network, count: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((count,) + network.input_shape, dtype=np.float32)


def check_heads(network: Network, outputs: list[np.ndarray], x: np.ndarray) -> float:
    """Assert outputs (one per head, in order) equal darkbp's heads on x to ATOL; the
    largest |difference|."""
    layers = network.run(x)
    assert len(outputs) == len(network.heads)
    worst = 0.0
    for head, value in zip(network.heads, outputs):
        expected = layers[head.index]
        assert value.shape == expected.shape == (len(x), *head.out_shape)
        # A logistic or softmax near 0 or 1 would agree whatever came before it.
        assert np.mean((expected > 1e-3) & (expected < 1 - 1e-3)) > 0.25, head.header
        np.testing.assert_allclose(value, expected, rtol=0, atol=ATOL,
                                   err_msg=f"layer {head.index} [{head.header}]")
        worst = max(worst, float(np.abs(value - expected).max()))
    return worst


def onnxruntime_heads(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return session(model, layer_outputs=False).run(None, {"input": x})


def check_exports(tmp_path, network: Network, cfg, weights, x: np.ndarray, *options) -> float:
    """The CLI's exports with a fixed batch 1 and a dynamic batch, run on x[:1] and x."""
    fixed = export(tmp_path, cfg, weights, "--batch", "1", *options)
    dynamic = export(tmp_path, cfg, weights, *options)
    return max(check_heads(network, onnxruntime_heads(fixed, x[:1]), x[:1]),
               check_heads(network, onnxruntime_heads(dynamic, x[:1]), x[:1]),
               check_heads(network, onnxruntime_heads(dynamic, x), x))


def variant(tmp_path, cfg, **options) -> Path:
    """A copy of the cfg with its last section's (its head's) options set to these values."""
    lines = [line for line in cfg.read_text().splitlines()
             if line.split("=")[0].strip() not in options]
    lines += [f"{key}={value}" for key, value in options.items()]
    path = tmp_path / f"variant_{cfg.name}"
    path.write_text("\n".join(lines) + "\n")
    return path


# Every [region] softmax and background setting, [detection] with and without its softmax,
# on the contract cfgs' small heads (tests/layer_cfgs/).
HEAD_VARIANTS = {
    "region softmax": ("region.cfg", {"softmax": 1, "background": 0}),
    "region logistic": ("region.cfg", {"softmax": 0, "background": 0}),
    "region softmax background": ("region.cfg", {"softmax": 1, "background": 1}),
    "region logistic background": ("region.cfg", {"softmax": 0, "background": 1}),
    "detection": ("detection.cfg", {"softmax": 0}),
    "detection softmax": ("detection.cfg", {"softmax": 1}),
    "yolo": ("yolo.cfg", {}),
}


# ---------------------------------------------------------------------- onnxruntime
@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", sorted(GOLDEN_HEADS))
def test_onnxruntime_equals_the_heads_of_darknets_golden_nets(tmp_path, name, opset):
    # bn_eval.weights: Darknet's 5 steps with unbiased rolling statistics (step5.weights'
    # outputs are ~1e7, every logistic 0 or 1: DETECTION.md)
    fixture = Golden(name)
    weights = fixture.folder / "bn_eval.weights"
    network = fixture.network("bn_eval.weights")
    check_exports(tmp_path, network, fixture.cfg, weights, fixture.input, "--opset", str(opset))


@pytest.mark.parametrize("opset", OPSETS)
def test_onnxruntime_equals_the_heads_of_a_yolov3_tiny_shaped_cfg(tmp_path, opset):
    network = randomized(TINY)
    check_exports(tmp_path, network, TINY, weights_file(tmp_path, network), images(network),
                  "--opset", str(opset))


@pytest.mark.parametrize("opset", [MIN_OPSET, 21])
@pytest.mark.parametrize("case", sorted(HEAD_VARIANTS))
def test_onnxruntime_equals_every_setting_of_the_heads(tmp_path, case, opset):
    name, options = HEAD_VARIANTS[case]
    cfg = variant(tmp_path, LAYER_CFGS / name, **options)
    network = randomized(cfg)
    assert all(network.heads[0].settings[key] == value for key, value in options.items())
    check_exports(tmp_path, network, cfg, weights_file(tmp_path, network), images(network),
                  "--opset", str(opset))


# ---------------------------------------------------------------------- OpenCV
def opencv_heads(model: onnx.ModelProto, path, x: np.ndarray) -> list[np.ndarray]:
    onnx.save(model, path)
    net = cv2.dnn.readNetFromONNX(str(path))
    names = [value.name for value in model.graph.output]
    assert sorted(net.getUnconnectedOutLayersNames()) == sorted(names)
    net.setInput(x)
    return list(net.forward(names))


def test_opencv_is_version_5():
    assert int(cv2.__version__.split(".")[0]) >= 5, cv2.__version__


@pytest.mark.parametrize("batch", [["--batch", "1"], ["--batch", "4"], []])
def test_opencv_equals_the_heads_of_darknets_golden_yolo_net(tmp_path, batch):
    fixture = Golden("yolo")
    weights = fixture.folder / "bn_eval.weights"
    network = fixture.network("bn_eval.weights")
    x = fixture.input[:1] if batch == ["--batch", "1"] else fixture.input
    model = export(tmp_path, fixture.cfg, weights, *batch)
    check_heads(network, opencv_heads(model, tmp_path / "yolo.onnx", x), x)


@pytest.mark.parametrize("opset", [MIN_OPSET, 21])
def test_opencv_equals_the_heads_of_a_yolov3_tiny_shaped_cfg(tmp_path, opset):
    network = randomized(TINY)
    x = images(network, 2)
    model = export(tmp_path, TINY, weights_file(tmp_path, network), "--opset", str(opset))
    check_heads(network, opencv_heads(model, tmp_path / "tiny.onnx", x), x)


# ---------------------------------------------------------------------- the model's description
def dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", sorted(GOLDEN_HEADS))
def test_one_named_output_per_head_in_order_and_no_other(tmp_path, name):
    fixture = Golden(name)
    model = export(tmp_path, fixture.cfg, fixture.folder / "bn_eval.weights")
    onnx.checker.check_model(model, full_check=True)
    assert [(v.name, dims(v)) for v in model.graph.output] == [
        (head, ["N", *shape]) for head, shape in GOLDEN_HEADS[name]]
    network = parse_network(fixture.cfg)
    lines = fixture.cfg.read_text().splitlines()
    for value, head in zip(model.graph.output, network.heads):
        assert lines[head.line - 1].strip() == f"[{head.header}]"
        assert value.doc_string.startswith(
            f"layer {head.index}, [{head.header}] at line {head.line} of the cfg: ")
        assert "darkbp.detector.network_boxes" in value.doc_string
    # Other layers' outputs are annotated, once; the heads' are the model's outputs.
    annotated = [v.name for v in model.graph.value_info]
    assert len(annotated) == len(set(annotated))
    assert not set(annotated) & {v.name for v in model.graph.output}


def test_a_yolo_heads_doc_string_says_what_it_holds(tmp_path):
    network = randomized(TINY)
    model = export(tmp_path, TINY, weights_file(tmp_path, network))
    assert [v.name for v in model.graph.output] == ["yolo_16", "yolo_23"]
    doc = model.graph.output[0].doc_string
    assert "mask=3,4,5" in doc and "4 class scores" in doc and "all but w and h" in doc


def test_a_classifier_still_has_one_output(tmp_path):
    cfg = ROOT / "cfg" / "mnist.cfg"
    network = parse_network(cfg).initialize(0, np.float32)
    model = export(tmp_path, cfg, weights_file(tmp_path, network))
    assert [v.name for v in model.graph.output] == ["output"]


def test_a_region_with_a_tree_is_refused(tmp_path):
    # yolo9000's hierarchical softmax: darkbp tabulates it only.
    cfg = variant(tmp_path, LAYER_CFGS / "region.cfg", tree="data/9k.tree")
    weights = tmp_path / "wrong.weights"
    weights.write_bytes(b"not read")
    line = cfg.read_text().splitlines().index("[region]") + 1
    assert _refused(tmp_path, cfg, weights) == (
        f"darkbp: error: {cfg}:{line}: [region] can not be exported to ONNX: darkbp only "
        "tabulates this section, it does not run it\n")


# ---------------------------------------------------------------------- decoding the outputs
def readme_snippet() -> str:
    """The README's lines (section "Export to ONNX", its second block): the exported model's
    outputs decoded to boxes."""
    section = re.search(r"^## Export to ONNX\n(.*?)(?=^## )", (ROOT / "README.md").read_text(),
                        re.S | re.M)
    return re.findall(r"^```python\n(.*?)^```$", section[1], re.S | re.M)[1]


def test_the_readme_snippet_decodes_the_models_outputs_as_darkbp_detect(tmp_path, monkeypatch):
    # The golden yolo net (yolov3-tiny in miniature) with bn_eval.weights, on Darknet's dog.
    fixture = Golden("yolo")
    shutil.copy(fixture.cfg, tmp_path / "yolov3-tiny.cfg")
    shutil.copy(fixture.folder / "bn_eval.weights", tmp_path / "yolov3-tiny.weights")
    shutil.copy(GOLDEN / "yolo_detect" / "dog.jpg", tmp_path / "dog.jpg")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["export", "yolov3-tiny.cfg", "yolov3-tiny.weights",
                                       "-o", "yolov3-tiny.onnx"])
    assert result.exit_code == 0, result.output
    printed, snippet = io.StringIO(), {}
    with contextlib.redirect_stdout(printed):
        exec(readme_snippet(), snippet)
    net = darkbp.load("yolov3-tiny.cfg", "yolov3-tiny.weights")
    expected = [f"{d['class']} {d['confidence']:.0%} {d['pixels']}"
                for d in net.detect("dog.jpg", thresh=0.25)[0]]
    assert expected                                   # the photo has detections to compare
    assert printed.getvalue().splitlines() == expected
    # and the arrays the lines came from, from darkbp's own heads
    image, size = letterboxed("dog.jpg", net.network.input_shape, with_size=True)
    [boxes] = network_boxes(net.network, head_outputs(net.network, image[None]), [size],
                            thresh=0.25)
    for ours, theirs in zip(boxes, (snippet["boxes"], snippet["objectness"], snippet["probs"])):
        np.testing.assert_allclose(theirs, ours, rtol=0, atol=ATOL)
