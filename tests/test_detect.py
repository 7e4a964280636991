"""Detection inference: the heads' forwards, their boxes, NMS, `net.detect` and `darkbp
detect`, against Darknet's own numbers (../shared/darknet-golden/, DETECTION.md there) and
the slow references of tests/naive_boxes.py.

Darknet's yolo_detect/ runs feed its own letterboxed photos (letterbox.f32, decoded by
stb_image) to yolo.cfg, so the tests give darkbp those same inputs. Darknet's batch norm
inference divides by sqrt(var) + 1e-6, darkbp's by sqrt(var + 1e-5): the tests ask for
pjreddie's (Pass.pjreddie_batchnorm) where they compare with Darknet to float32 rounding,
and one test shows how far darkbp's own differs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import darkbp
from darkbp.boxes import _shared_overlaps, correct_boxes, iou_matrix, letterbox_shape, nms_sort
from darkbp.cli import main
from darkbp.detector import head_outputs, network_boxes
from darkbp.imagedata import letterbox
from darkbp.network import parse_network
from darkbp.passes import EVAL, PJREDDIE_EVAL
from tests import naive_boxes as naive
from tests.golden import GOLDEN, Golden, relative

DETECT = GOLDEN / "yolo_detect"
PHOTOS = ("dog", "person", "scream")
# yolo_detect's runs: (folder, weights in yolo/, the thresh Darknet ran with)
RUNS = [("bn_eval", "bn_eval.weights", 0.05), ("bn_eval_t0.4", "bn_eval.weights", 0.4),
        ("step5", "step5.weights", 0.05)]
HEADS = {"yolo": (16, 23), "region": (11,), "detection": (9,)}
FLOAT32 = 1e-5          # float32 rounding through ~20 layers, relative to the tensor's largest


def read_detections(path) -> list[dict]:
    """Darknet's detections*.txt: per image {"name", "w", "h", "rows" (k, 1 + 4 + 1 +
    classes): index, box, objectness, probabilities}."""
    images = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0] == "image":
            images.append({"name": fields[1], "w": int(fields[3]), "h": int(fields[5]),
                           "rows": []})
        else:
            images[-1]["rows"].append([float(v) for v in fields])
    for image in images:
        image["rows"] = np.array(image["rows"], np.float64).reshape(len(image["rows"]), -1)
    return images


def letterboxed_photos() -> np.ndarray:
    Golden("yolo")                             # fails in CI (skips elsewhere) without ../shared/
    return np.fromfile(DETECT / "letterbox.f32", "<f4").reshape(3, 3, 64, 64)


def assert_same_detections(ours, theirs) -> None:
    """Darknet's rows (box, objectness, probabilities) against ours, in the same order:
    infinities and zeros at the same places, the rest equal to float32 rounding."""
    boxes, objectness, probs = ours
    ours = np.concatenate([boxes, objectness[:, None], probs], axis=1).astype(np.float64)
    theirs = theirs[:, 1:]
    assert ours.shape == theirs.shape
    assert np.array_equal(np.isinf(ours), np.isinf(theirs))
    assert np.array_equal(ours == 0, theirs == 0)
    finite = np.isfinite(theirs)
    # %.9g of a float, and float32 rounding through the network: a few ulps of the value
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=2e-5, atol=2e-6)


# --- the heads' forwards --------------------------------------------------------------------
@pytest.mark.parametrize("name", list(HEADS))
@pytest.mark.parametrize("weights", ["bn_eval", "step5"])
def test_head_outputs_equal_darknets_inference(name, weights):
    fixture = Golden(name)
    network = fixture.network(f"{weights}.weights")
    outputs = network.run(fixture.input, PJREDDIE_EVAL)
    for index in HEADS[name]:
        stored = f"forward_{weights}_L{index}.f32"
        assert relative(outputs[index].reshape(4, -1), fixture.f32(stored)) < FLOAT32, stored


@pytest.mark.parametrize("name", list(HEADS))
def test_darkbps_batch_norm_differs_from_pjreddies_by_its_epsilon(name):
    # darkbp's sqrt(var + 1e-5) against Darknet's sqrt(var) + 1e-6: the rolling variances of
    # bn_eval.weights are small (0.026 and up), so the outputs move by ~1e-4 to 1e-3.
    fixture = Golden(name)
    network = fixture.network("bn_eval.weights")
    darknets = fixture.f32(f"forward_bn_eval_L{HEADS[name][-1]}.f32")
    ours = network.run(fixture.input, EVAL)[HEADS[name][-1]].reshape(4, -1)
    pjreddies = network.run(fixture.input, PJREDDIE_EVAL)[HEADS[name][-1]].reshape(4, -1)
    assert relative(pjreddies, darknets) < FLOAT32
    assert 1e-4 < relative(ours, darknets) < 1e-2


def test_region_softmax_and_logistic_entries():
    # yolov2's layout: per anchor x, y, w, h, objectness, 3 classes; softmax over the classes
    network = Golden("region").network("bn_eval.weights")
    x = np.random.default_rng(0).normal(0, 3, (2, *network.layers[11].in_shape)).astype(np.float32)
    y = network.layers[11].forward(x, EVAL).reshape(2, 5, 8, 4, 4)
    x = x.reshape(2, 5, 8, 4, 4)
    np.testing.assert_allclose(y[:, :, [0, 1, 4]], 1 / (1 + np.exp(-x[:, :, [0, 1, 4]])),
                               rtol=1e-6)
    np.testing.assert_array_equal(y[:, :, 2:4], x[:, :, 2:4])
    e = np.exp(x[:, :, 5:] - x[:, :, 5:].max(axis=2, keepdims=True))
    np.testing.assert_allclose(y[:, :, 5:], e / e.sum(axis=2, keepdims=True), rtol=1e-6)


# --- boxes, against the slow references ------------------------------------------------------
def test_iou_equals_darknets_formula_step_by_step():
    rng = np.random.default_rng(1)
    a = rng.random((40, 4), np.float32) * [1, 1, 0.5, 0.5]
    b = rng.random((30, 4), np.float32) * [1, 1, 0.5, 0.5]
    b[:5] = a[:5]                                        # identical boxes: IoU 1
    b[5:8, 2:] = 0                                       # empty boxes
    matrix = iou_matrix(a, b)
    expected = np.array([[naive.iou(p, q) for q in b] for p in a], np.float32)
    np.testing.assert_array_equal(matrix, expected)
    # (x + w/2) − (x − w/2) is not w in float32: Darknet's IoU of a box with itself is ~1
    np.testing.assert_allclose(np.diag(matrix[:5, :5]), 1, rtol=1e-5)
    assert np.isnan(matrix[:, 5:8]).sum() == 0 and matrix.dtype == np.float32


def test_iou_of_boxes_too_large_for_float32_is_darknets_nan_without_a_warning():
    """An untrained head's exp(w) can give boxes whose overlap area is past float32's
    range: Darknet's C computes inf, then inf − inf, silently; so does darkbp (a NumPy
    overflow warning printed by `darkbp map` would only alarm)."""
    a = np.array([[0.5, 0.5, 3e20, 3e20], [0.5, 0.5, 0.2, 0.2]], np.float32)
    b = np.array([[0.4, 0.6, 2e20, 1e20], [0.5, 0.5, 0.2, 0.2]], np.float32)
    with np.errstate(all="ignore"):
        expected = np.array([[naive.iou(p, q) for q in b] for p in a], np.float32)
    with np.errstate(all="raise"):
        matrix = iou_matrix(a, b)
    np.testing.assert_array_equal(matrix, expected)
    assert np.isnan(matrix[0, 0]) and matrix[1, 1] > 0.99


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("classes_a_box", ["many", "one"])
def test_nms_sort_equals_do_nms_sort_read_from_the_c(seed, classes_a_box):
    """Boxes live in most classes take one IoU matrix for all classes, boxes of one class
    each a matrix per class (boxes._shared_overlaps): both equal the C's loops."""
    rng = np.random.default_rng(seed)
    n, classes = 60, 4
    centres = rng.integers(0, 4, (n, 2)) / 4 + rng.normal(0, 0.02, (n, 2))
    boxes = np.concatenate([centres, rng.uniform(0.1, 0.4, (n, 2))], axis=1).astype(np.float32)
    objectness = rng.random(n).astype(np.float32)
    objectness[rng.random(n) < 0.3] = 0                  # swapped to the end one by one
    probs = np.round(rng.random((n, classes)), 1).astype(np.float32)   # many ties
    probs[probs < 0.3] = 0
    if classes_a_box == "one":
        probs[np.arange(classes) != rng.integers(0, classes, n)[:, None]] = 0
    probs[objectness == 0] = 0
    live = np.flatnonzero(objectness != 0)
    shared = _shared_overlaps(boxes, probs, live, 0.45)
    assert (shared is None) == (classes_a_box == "one")
    order, after = nms_sort(boxes, objectness, probs, 0.45)
    expected_order, expected = naive.nms_sort(boxes, objectness, probs, 0.45)
    assert list(order) == expected_order
    np.testing.assert_array_equal(after[order], expected)
    assert (after <= probs).all() and (after[after > 0] == probs[after > 0]).all()


def test_head_boxes_equal_the_slow_decoders():
    rng = np.random.default_rng(2)
    for name in HEADS:
        network = Golden(name).network("bn_eval.weights")
        _, neth, netw = network.input_shape
        for head in network.heads:
            y = head.forward(rng.normal(0, 1, (2, *head.in_shape)).astype(np.float32), EVAL)
            for image, (boxes, objectness, probs) in enumerate(head.boxes(y, 0.3, 0.5, netw,
                                                                          neth)):
                if name == "yolo":
                    _, h, w = head.in_shape
                    slow = naive.yolo_detections(y[image], w, h, head.mask, head.anchors,
                                                 head.classes, netw, neth, 0.3)
                elif name == "region":
                    _, h, w = head.in_shape
                    slow = naive.region_detections(y[image], w, h, head.num, head.anchors,
                                                   head.classes, head.coords, 0.3)
                else:
                    slow = naive.detection_detections(y[image], head.side, head.num,
                                                      head.classes, True, 0.3)
                assert len(slow) == len(boxes) > 0
                np.testing.assert_array_equal(boxes, np.array([s[0] for s in slow], np.float32))
                np.testing.assert_array_equal(objectness, [s[1] for s in slow])
                np.testing.assert_array_equal(probs, np.array([s[2] for s in slow], np.float32))


@pytest.mark.parametrize("size", [(768, 576), (352, 448), (640, 424), (64, 64), (65, 30)])
def test_correct_boxes_undoes_the_letterbox(size):
    # A box drawn on the photo, found where darkbp.imagedata.letterbox puts it, maps back.
    w, h = size
    image = np.zeros((1, h, w), np.float32)
    image[0, h // 4:h // 2, w // 3:w * 2 // 3] = 1
    boxed = letterbox(image, 64, 64)
    new_w, new_h = letterbox_shape(w, h, 64, 64)
    rows, cols = np.nonzero(boxed[0] > 0.5)
    assert np.count_nonzero(boxed[0] != 0.5) and new_w * new_h <= 64 * 64
    found = np.array([[(cols.min() + cols.max() + 1) / 2 / 64, (rows.min() + rows.max() + 1) / 2 / 64,
                       (cols.max() + 1 - cols.min()) / 64, (rows.max() + 1 - rows.min()) / 64]],
                     np.float32)
    truth = np.array([(w // 3 + w * 2 // 3) / 2 / w, (h // 4 + h // 2) / 2 / h,
                      (w * 2 // 3 - w // 3) / w, (h // 2 - h // 4) / h])
    # one letterboxed pixel of the photo, in the photo's units
    np.testing.assert_allclose(correct_boxes(found, w, h, 64, 64)[0], truth,
                               atol=2.5 * max(w / new_w, h / new_h) / min(w, h))


# --- Darknet's detector test, end to end ---------------------------------------------------
@pytest.mark.parametrize("run, weights, thresh", RUNS)
def test_detections_before_and_after_nms_equal_darknets(run, weights, thresh):
    x = letterboxed_photos()
    network = Golden("yolo").network(weights)
    outputs = head_outputs(network, x, pjreddie_batchnorm=True)
    for nms, stored in ((0, "detections_prenms.txt"), (0.45, "detections.txt")):
        images = read_detections(DETECT / run / stored)
        assert [image["name"] for image in images] == [f"{p}.jpg" for p in PHOTOS]
        found = network_boxes(network, outputs, [(i["w"], i["h"]) for i in images], thresh,
                              0.5, nms)
        for ours, theirs in zip(found, images):
            assert_same_detections(ours, theirs["rows"])


def test_nms_changes_darknets_bn_eval_detections():
    # The fixture exercises NMS: some probabilities are zeroed and the order changes.
    before = read_detections(DETECT / "bn_eval" / "detections_prenms.txt")
    after = read_detections(DETECT / "bn_eval" / "detections.txt")
    assert any(np.count_nonzero(a["rows"][:, 6:]) < np.count_nonzero(b["rows"][:, 6:])
               for a, b in zip(after, before))
    assert any(not np.array_equal(a["rows"][:, 1:5], b["rows"][:, 1:5])    # reordered boxes
               for a, b in zip(after, before))


@pytest.mark.parametrize("run, weights, thresh", RUNS[:2])
def test_net_detect_lists_what_darknet_would_print(run, weights, thresh):
    x = letterboxed_photos()
    net = darkbp.load(Golden("yolo").cfg, GOLDEN / "yolo" / weights)
    images = read_detections(DETECT / run / "detections.txt")
    found = net.detect(x, thresh=thresh, sizes=[(i["w"], i["h"]) for i in images],
                       names=["a", "b", "c"], pjreddie_batchnorm=True)
    for ours, theirs in zip(found, images):
        # draw_detections: detection by detection, each class whose prob is above thresh
        expected = [(row, k) for row in theirs["rows"] for k in range(3) if row[6 + k] > thresh]
        assert [(d["class"], d["name"]) for d in ours] == [(k, "abc"[k]) for _, k in expected]
        for d, (row, k) in zip(ours, expected):
            np.testing.assert_allclose(d["box"], row[1:5], rtol=2e-5, atol=2e-6)
            np.testing.assert_allclose([d["objectness"], d["confidence"]], [row[5], row[6 + k]],
                                       rtol=2e-5)
            left, top = (row[1] - row[3] / 2) * theirs["w"], (row[2] - row[4] / 2) * theirs["h"]
            right, bottom = (row[1] + row[3] / 2) * theirs["w"], (row[2] + row[4] / 2) * theirs["h"]
            expected_pixels = [int(min(max(v, 0), high)) for v, high in zip(
                [left, top, right, bottom], [theirs["w"] - 1, theirs["h"] - 1] * 2)]
            assert np.abs(np.array(d["pixels"]) - expected_pixels).max() <= 1


# --- darkbp detect --------------------------------------------------------------------------
DECODED = Path(__file__).parent / "data" / "darknet-decoded"     # its README says what these are


@pytest.mark.parametrize("run, weights, thresh", RUNS)
def test_detect_json_of_darknets_pixels_is_darknets_detections(tmp_path, run, weights, thresh):
    photos = [DECODED / f"{name}.png" for name in PHOTOS]
    result = run_cli("detect", Golden("yolo").cfg, GOLDEN / "yolo" / weights, *photos,
                     "--format", "json", "--thresh", thresh, "--batchnorm", "pjreddie",
                     "--names", write_names(tmp_path), "--out", tmp_path)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    images = read_detections(DETECT / run / "detections.txt")
    for ours, theirs in zip(document["images"], images, strict=True):
        assert (ours["width"], ours["height"]) == (theirs["w"], theirs["h"])
        expected = [(row, k) for row in theirs["rows"] for k in range(3) if row[6 + k] > thresh]
        assert [(d["class"], d["name"]) for d in ours["detections"]] == [
            (k, "abc"[k]) for _, k in expected]
        for d, (row, k) in zip(ours["detections"], expected):
            finite = np.isfinite(row[1:5])
            assert np.array_equal(np.isfinite(d["box"]), finite)
            np.testing.assert_allclose(np.array(d["box"])[finite], row[1:5][finite], rtol=2e-5,
                                       atol=2e-6)
            np.testing.assert_allclose([d["objectness"], d["confidence"]],
                                       [row[5], row[6 + k]], rtol=2e-5)
    assert sum(len(image["detections"]) for image in document["images"]) >= 20


def write_names(folder: Path) -> Path:
    names = folder / "abc.names"
    names.write_text("a\nb\nc\n")
    return names


@pytest.fixture
def photos(tmp_path):
    """yolo_detect's three letterboxed inputs as 64 x 64 PNG photos (rounded to 8 bits)."""
    x = letterboxed_photos()
    paths = []
    for name, image in zip(PHOTOS, x):
        path = tmp_path / f"{name}.png"
        Image.fromarray(np.round(image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def run_cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_detect_json_equals_net_detect_on_the_same_files(tmp_path, photos):
    weights = GOLDEN / "yolo" / "bn_eval.weights"
    result = run_cli("detect", Golden("yolo").cfg, weights, *photos, "--format", "json",
                 "--thresh", "0.3", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    net = darkbp.load(Golden("yolo").cfg, weights)
    assert [image["detections"] for image in document["images"]] == net.detect(photos,
                                                                              thresh=0.3)
    assert [(i["path"], i["width"], i["height"]) for i in document["images"]] == [
        (p, 64, 64) for p in photos]
    assert sum(len(i["detections"]) for i in document["images"]) > 3
    for name in PHOTOS:
        assert Image.open(tmp_path / f"{name}_predictions.png").size == (64, 64)
    assert result.stderr.count("Predicted in") == 1          # one pass of three images


def test_detect_makes_a_missing_out_folder(tmp_path, photos):
    out = tmp_path / "runs" / "boxes"
    result = run_cli("detect", Golden("yolo").cfg, GOLDEN / "yolo" / "bn_eval.weights", photos[0],
                     "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["predictions.png"]


def test_detect_text_prints_darknets_lines(tmp_path, photos):
    names = tmp_path / "three.names"
    names.write_text("cat\ndog\nbird\n")
    result = run_cli("detect", Golden("yolo").cfg, GOLDEN / "yolo" / "bn_eval.weights", photos[0],
                 "--names", names, "--thresh", "0.3", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    net = darkbp.load(Golden("yolo").cfg, GOLDEN / "yolo" / "bn_eval.weights")
    found = net.detect(photos[0], thresh=0.3, names=["cat", "dog", "bird"])[0]
    assert result.stdout.splitlines() == [
        "%s: %.0f%%" % (d["name"], np.float32(d["confidence"]) * np.float32(100)) for d in found]
    assert len(found) > 0 and (tmp_path / "predictions.png").is_file()
    assert result.stderr.startswith(f"{photos[0]}: Predicted in ")


@pytest.mark.parametrize("problem", ["names", "image", "weights", "classifier", "out"])
def test_detect_bad_input_is_one_line(tmp_path, photos, problem):
    cfg, weights = Golden("yolo").cfg, GOLDEN / "yolo" / "bn_eval.weights"
    args = [cfg, weights, photos[0], "--out", tmp_path]
    if problem == "names":
        (tmp_path / "two.names").write_text("a\nb\n")
        args += ["--names", tmp_path / "two.names"]
        words = "two.names: holds 2 names, but the detection heads of"
    elif problem == "image":
        (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        args[2] = tmp_path / "broken.png"
        words = "broken.png: "
    elif problem == "weights":
        args[1] = GOLDEN / "region" / "bn_eval.weights"
        words = "bn_eval.weights"
    elif problem == "classifier":
        args[0] = GOLDEN / "lenet" / "lenet.cfg"
        words = "has no detection head"
    else:
        (tmp_path / "afile").write_text("")
        args[4] = tmp_path / "afile" / "boxes"
        words = "cannot create the folder"
    result = run_cli("detect", *args)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if ": warning: " not in line]
    assert len(errors) == 1 and errors[0].startswith("darkbp: error: ")
    assert words in errors[0]
    assert result.stdout == "" and not (tmp_path / "predictions.png").exists()


def test_a_detector_cfg_in_predict_points_to_detect(photos):
    result = run_cli("predict", Golden("yolo").cfg, GOLDEN / "yolo" / "bn_eval.weights", photos[0])
    assert result.exit_code == 2 and "use darkbp detect" in result.stderr


def test_every_head_runs_in_a_network_that_has_it():
    for name in ("yolo", "region", "detection"):
        network = parse_network(GOLDEN / name / f"{name}.cfg")
        assert [layer.index for layer in network.heads] == list(HEADS[name])
        assert all(head.runnable and head.trainable for head in network.heads)
