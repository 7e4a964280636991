"""`darkbp map` (darkbp.mapeval): AlexeyAB's `detector map` and COCO's mAP@[.5:.95].

The references: pycocotools' COCOeval on the same detections and truths (COCO mAP and
AP50), tests/naive_map.py (AlexeyAB's algorithm as loops) for the VOC AP and the counts
at conf_thresh, and small sets worked out by hand for AlexeyAB's printed lines.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import darkbp
from darkbp.cli import main
from darkbp.detector import detect_files, detected_arrays
from darkbp.mapeval import Scorer, as_arrays
from tests.conftest import assert_error
from tests.naive_map import naive_map

F32 = np.float32


def random_set(seed: int, images: int = 25, classes: int = 5):
    """Random images: 0-5 truths, 0-14 detections, most near a truth (same class 4 times in
    5), probabilities on a coarse grid so that ties occur. Class 4 never has a detection
    and class 3 never has a truth; one image has 130 detections of one class (COCO keeps
    100)."""
    rng = np.random.default_rng(seed)
    found = []
    for i in range(images):
        m = int(rng.integers(0, 6))
        truth_boxes = np.c_[rng.uniform(.2, .8, (m, 2)), rng.uniform(.05, .4, (m, 2))]
        truth_ids = rng.choice([0, 1, 2, 4], m)
        n = 130 if i == 3 else int(rng.integers(0, 15))
        boxes = np.c_[rng.uniform(.2, .8, (n, 2)), rng.uniform(.05, .4, (n, 2))]
        ids = rng.integers(0, 4, n) if i != 3 else np.zeros(n, np.int64)
        for k in range(n):
            if m and rng.random() < .6:
                j = rng.integers(m)
                boxes[k] = truth_boxes[j] + rng.normal(0, .03, 4)
                boxes[k, 2:] = np.abs(boxes[k, 2:])     # a detector's sizes are positive
                if rng.random() < .8 and truth_ids[j] != 4:
                    ids[k] = truth_ids[j]
        probs = np.round(rng.random(n), 2).astype(F32) + F32(.001)
        found.append((boxes.astype(F32), ids, probs, truth_boxes.astype(F32), truth_ids))
    return found


def score(found, classes: int = 5, **options):
    scorer = Scorer(classes, **options)
    for image in found:
        scorer.add(*image)
    return scorer.result()


def pycocotools_stats(found, classes: int, width: int = 640, height: int = 480):
    """(mAP@[.5:.95], AP50) of pycocotools' COCOeval on the same set, boxes in pixels."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def bbox(box):
        x, y, w, h = (float(v) for v in box)
        return [(x - w / 2) * width, (y - h / 2) * height, w * width, h * height]

    images, truths, results = [], [], []
    for i, (boxes, ids, probs, truth_boxes, truth_ids) in enumerate(found, start=1):
        images.append({"id": i, "width": width, "height": height})
        for box, k in zip(truth_boxes, truth_ids):
            b = bbox(box)
            truths.append({"id": len(truths) + 1, "image_id": i, "category_id": int(k) + 1,
                           "bbox": b, "area": b[2] * b[3], "iscrowd": 0})
        results += [{"image_id": i, "category_id": int(k) + 1, "bbox": bbox(box),
                     "score": float(p)} for box, k, p in zip(boxes, ids, probs)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": truths,
                      "categories": [{"id": k + 1} for k in range(classes)]}
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats[0], evaluation.stats[1]


@pytest.mark.parametrize("seed", range(6))
def test_coco_map_and_ap50_equal_pycocotools(seed):
    pytest.importorskip("pycocotools")
    found = random_set(seed)
    result = score(found)
    coco, ap50 = pycocotools_stats(found, 5)
    assert result.map50_95 == pytest.approx(coco, abs=1e-6)
    assert np.nanmean(result.coco_ap[:, 0]) == pytest.approx(ap50, abs=1e-6)
    assert np.isnan(result.coco_ap[3]).all()          # no truths: left out, as pycocotools


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("iou", [0.5, 0.3])
def test_voc_ap_and_counts_equal_the_loop_reference(seed, iou):
    found = random_set(seed)
    result = score(found, iou=iou, conf_thresh=0.4)
    naive = naive_map(found, 5, iou, 0.4)
    np.testing.assert_allclose(result.ap50, naive["ap"], rtol=0, atol=1e-12)
    assert result.map50 == pytest.approx(naive["map"], abs=1e-12)
    assert result.tp.tolist() == naive["tp"] and result.fp.tolist() == naive["fp"]
    assert result.truths.tolist() == naive["truths"]
    tp, fp = sum(naive["tp"]), sum(naive["fp"])
    assert result.average_iou == pytest.approx(naive["iou_sum"] / (tp + fp), rel=1e-6)
    assert result.precision == pytest.approx(tp / (tp + fp), rel=1e-6)
    assert result.recall == pytest.approx(tp / sum(naive["truths"]), rel=1e-6)


# Two truths of one class side by side; the better detection takes A, the second is
# closest to A too (IoU .951) but also overlaps B (IoU .860).
A, B = [.5, .5, .2, .2], [.52, .5, .2, .2]
FIRST, SECOND = [.5, .5, .2, .2], [.505, .5, .2, .2]


def test_a_taken_truth_makes_a_false_positive_in_darknet_but_not_in_coco():
    found = [(np.array([FIRST, SECOND], F32), np.array([0, 0]), np.array([.9, .8], F32),
              np.array([A, B], F32), np.array([0, 0]))]
    result = score(found, classes=1)
    # AlexeyAB: TP then FP (no fall back to B); recall 1/2 at precision 1.
    assert result.ap50[0] == 0.5
    assert (result.tp[0], result.fp[0]) == (1, 1)
    # COCO: the second takes B at IoU thresholds .50 to .85; from .90 only A (1.0) matches:
    # precision 1 up to recall 1/2, 51 of the 101 recall points.
    expected = np.array([1.0] * 8 + [51 / 101] * 2)
    np.testing.assert_allclose(result.coco_ap[0], expected, atol=1e-12)
    assert result.map50_95 == pytest.approx(expected.mean(), abs=1e-12)


def test_the_per_image_count_ignores_probability_order():
    # AlexeyAB counts at conf_thresh in collection order: a first detection below the
    # threshold that has the truth makes the later, more probable one an FP.
    found = [(np.array([FIRST, FIRST], F32), np.array([0, 0]), np.array([.1, .9], F32),
              np.array([A], F32), np.array([0]))]
    result = score(found, classes=1)
    assert (result.tp[0], result.fp[0]) == (0, 1)
    assert result.ap50[0] == 1.0                       # the ranking gives the truth to .9


def test_nothing_detected_and_nothing_to_detect():
    empty = (np.zeros((0, 4), F32), np.zeros(0, int), np.zeros(0, F32))
    result = score([(*empty, np.array([A], F32), np.array([0]))], classes=2)
    assert result.map50 == 0 and result.ap50.tolist() == [0, 0]
    assert math.isnan(result.precision) and result.recall == 0
    assert result.map50_95 == 0
    result = score([(*empty, np.zeros((0, 4), F32), np.zeros(0, int))], classes=2)
    assert math.isnan(result.map50_95) and result.detections == 0


# ---------------------------------------------------------------------- the command

NAMES = ["cat", "dog"]


@pytest.fixture
def voc(tmp_path, monkeypatch) -> Path:
    """A tiny VOC-style set in tmp_path (the current folder): three 200 x 100 JPEGs, a with
    a cat and a dog, b with an empty label file, c without one; obj.data names them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "VOC" / "JPEGImages").mkdir(parents=True)
    (tmp_path / "VOC" / "labels").mkdir()
    for name in "abc":
        Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(
            tmp_path / "VOC" / "JPEGImages" / f"{name}.jpg")
    (tmp_path / "VOC" / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.25 0.25 0.1 0.1\n")
    (tmp_path / "VOC" / "labels" / "b.txt").write_text("")
    (tmp_path / "valid.txt").write_text("".join(f"VOC/JPEGImages/{n}.jpg\n" for n in "abc"))
    (tmp_path / "obj.names").write_text("cat\ndog\n")
    (tmp_path / "obj.data").write_text("classes=2\nvalid=valid.txt\nnames=obj.names\n")
    return tmp_path


def detection(k: int, p: float, box) -> dict:
    return {"class": k, "name": NAMES[k], "confidence": p, "objectness": 1.0, "box": box,
            "pixels": [0, 0, 1, 1]}


def write_detections(images: list[tuple[str, list[dict]]], name: str = "dets.json") -> str:
    Path(name).write_text(json.dumps({"images": [
        {"path": path, "width": 200, "height": 100, "detections": found}
        for path, found in images]}))
    return name


# a: two cats on the cat (.9 exact, .8 shifted: its truth is taken), a dog far from the dog.
A_DETECTIONS = [detection(0, .9, [.5, .5, .2, .2]), detection(0, .8, [.51, .5, .2, .2]),
                detection(1, .3, [.7, .7, .1, .1])]


def run(*args: str):
    return CliRunner().invoke(main, ["map", *args])


def test_text_is_alexeyab_lines(voc):
    dets = write_detections([("VOC/JPEGImages/a.jpg", A_DETECTIONS),
                             ("VOC/JPEGImages/b.jpg", []), ("VOC/JPEGImages/c.jpg", [])])
    result = run("--detections", dets, "--data", "obj.data")
    assert result.exit_code == 0, result.output
    # By hand: cat AP 1 (TP at rank 1), dog AP 0; at .25: TP 1, FP 2 (the second cat, the
    # dog), FN 1; average IoU = 1 (the first cat) / 3; COCO: cat 1 at every IoU, dog 0.
    assert result.stdout.splitlines() == [
        "",
        " detections_count = 3, unique_truth_count = 2  ",
        "class_id = 0, name = cat, ap = 100.00%   \t (TP = 1, FP = 1) ",
        "class_id = 1, name = dog, ap = 0.00%   \t (TP = 0, FP = 1) ",
        "",
        " for conf_thresh = 0.25, precision = 0.33, recall = 0.50, F1-score = 0.40 ",
        " for conf_thresh = 0.25, TP = 1, FP = 2, FN = 1, average IoU = 33.33 % ",
        "",
        " IoU threshold = 50 %, used Area-Under-Curve for each unique Recall ",
        " mean average precision (mAP@0.50) = 0.500000, or 50.00 % ",
        " COCO mean average precision (mAP@[.50:.95]) = 0.500000, or 50.00 % "]
    assert result.stderr.splitlines() == [
        "darkbp: 1 of 3 images have no label file, scored as images without objects (as "
        "Darknet): 'VOC/labels/c.txt'",
        "darkbp: 1 of 3 images have an empty label file: images without objects"]


def test_json_and_the_thresholds(voc):
    dets = write_detections([("VOC/JPEGImages/a.jpg", A_DETECTIONS)])
    result = run("--detections", dets, "--data", "obj.data", "--format", "json",
                 "--conf-thresh", "0.85", "--thresh", "0.5")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    # --thresh .5 drops the dog; at .85 only the first cat counts: P 1, R 1/2, IoU 1.
    assert document == {
        "map50": 0.5, "map50_95": pytest.approx(0.5), "iou": 0.5, "thresh": 0.5,
        "conf_thresh": 0.85, "precision": 1.0, "recall": 0.5,
        "f1": pytest.approx(2 / 3), "average_iou": pytest.approx(1.0),
        "classes": [{"class": 0, "name": "cat", "ap50": 1.0, "tp": 1, "fp": 0, "truths": 1},
                    {"class": 1, "name": "dog", "ap50": 0.0, "tp": 0, "fp": 0, "truths": 1}]}
    assert "2 of 3 images of valid.txt are not in dets.json" in result.stderr


def test_images_match_by_path_as_written_then_by_file(voc):
    absolute = str(voc / "VOC" / "JPEGImages" / "a.jpg")
    dets = write_detections([(absolute, A_DETECTIONS), ("elsewhere/x.jpg", [])])
    result = run("--detections", dets, "--data", "obj.data", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["classes"][0]["ap50"] == 1.0
    assert "1 of its 2 images are not in the valid list" in result.stderr


@pytest.mark.parametrize("text, line, words", [
    ("0 0.5 0.5 0.2\n", 1, ["expected 5 fields", "found 4"]),
    ("0 0.5 0.5 0.2 0.2\n\n1 0.5 0.5 0.2 0.2 7\n", 3, ["found 6"]),
    ("0 0.5 zero 0.2 0.2\n", 1, ["y 'zero'", "from 0 to 1"]),
    ("2 0.5 0.5 0.2 0.2\n", 1, ["class '2'", "from 0 to 1"]),
    ("-1 0.5 0.5 0.2 0.2\n", 1, ["class '-1'"]),
    ("1.0 0.5 0.5 0.2 0.2\n", 1, ["class '1.0'"]),
    ("0 0.5 0.5 1.5 0.2\n", 1, ["width '1.5'"]),
    ("0 0.5 0.5 0.2 nan\n", 1, ["height 'nan'"]),
])
def test_a_bad_label_line_is_one_error_naming_file_and_line(voc, text, line, words):
    (voc / "VOC" / "labels" / "a.txt").write_text(text)
    # b and c not in the file, c without a label: no warning comes before the error.
    dets = write_detections([("VOC/JPEGImages/a.jpg", [])])
    assert_error(run("--detections", dets, "--data", "obj.data"),
                 f"VOC/labels/a.txt:{line}: ", *words)


@pytest.mark.parametrize("document, words", [
    ('{"images": [', ["not JSON"]),
    ('[1, 2]', ['{"images": [...]}']),
    ('{"images": [{"path": "a.jpg"}]}', ["images[0]"]),
    ('{"images": [{"path": "VOC/JPEGImages/a.jpg", "detections": [{"class": 2, '
     '"confidence": 0.5, "box": [0.5, 0.5, 0.1, 0.1]}]}]}', ["detections[0]", '"class" 2']),
    ('{"images": [{"path": "VOC/JPEGImages/a.jpg", "detections": [{"class": 0, '
     '"confidence": "high", "box": [0.5, 0.5, 0.1, 0.1]}]}]}', ['"confidence"']),
    ('{"images": [{"path": "VOC/JPEGImages/a.jpg", "detections": [{"class": 0, '
     '"confidence": 0.5, "box": [0.5, 0.5, 0.1]}]}]}', ['"box"']),
    ('{"images": [{"path": "a.jpg", "detections": []}, {"path": "a.jpg", '
     '"detections": []}]}', ["listed twice"]),
    ('{"images": [{"path": "other.jpg", "detections": []}]}', ["none of its 1 images"]),
])
def test_a_bad_detections_file_is_one_error_naming_it(voc, document, words):
    Path("dets.json").write_text(document)
    assert_error(run("--detections", "dets.json", "--data", "obj.data"), "dets.json", *words)


def test_bad_data_files(voc):
    dets = write_detections([("VOC/JPEGImages/a.jpg", [])])
    Path("three.data").write_text("classes=3\nvalid=valid.txt\nnames=obj.names\n")
    assert_error(run("--detections", dets, "--data", "three.data"), "three.data:1: ",
                 "classes=3", "2 names")
    Path("novalid.data").write_text("names=obj.names\n")
    assert_error(run("--detections", dets, "--data", "novalid.data"), "novalid.data: ",
                 "no valid=")
    Path("valid.txt").write_text("VOC/JPEGImages/a.gif\n")
    dets = write_detections([("VOC/JPEGImages/a.gif", [])])
    assert_error(run("--detections", dets, "--data", "obj.data"), "VOC/JPEGImages/a.gif: ",
                 "extension")


def test_network_or_detections_not_both(voc):
    result = run("--data", "obj.data")
    assert result.exit_code == 2 and "NET.cfg WEIGHTS, or --detections" in result.stderr


TINY_YOLO = """[net]
width=32
height=32
channels=3
[convolutional]
filters=21
size=3
stride=2
pad=1
activation=leaky
[yolo]
mask=0,1,2
anchors=4,4, 8,8, 16,16
classes=2
num=3
"""


@pytest.fixture
def tiny_yolo(voc) -> tuple[str, str]:
    """(cfg, weights) of a 32 x 32 [yolo] net of 2 classes, its random initialisation."""
    Path("yolo.cfg").write_text(TINY_YOLO)
    darkbp.load("yolo.cfg").save_weights("yolo.weights")
    return "yolo.cfg", "yolo.weights"


def test_the_network_scores_as_its_detections_file(voc, tiny_yolo):
    net = darkbp.load(*tiny_yolo)
    paths = [f"VOC/JPEGImages/{n}.jpg" for n in "abc"]
    # validate_detector_map's detections: thresh .005, hier 0, NMS .45.
    images = list(detect_files(net.network, paths, thresh=0.005, hier=0, nms=0.45,
                               names=NAMES))
    assert sum(len(image["detections"]) for image in images) > 10
    dets = write_detections([(image["path"], image["detections"]) for image in images])
    from_file = run("--detections", dets, "--data", "obj.data")
    from_network = run(*tiny_yolo, "--data", "obj.data", "--threads", "1")
    assert from_network.exit_code == 0, from_network.output
    assert from_network.stdout == from_file.stdout


def test_the_scored_arrays_are_the_detections_as_arrays(voc, tiny_yolo):
    net = darkbp.load(*tiny_yolo)
    paths = [f"VOC/JPEGImages/{n}.jpg" for n in "abc"]
    images = detect_files(net.network, paths, thresh=0.005, hier=0, nms=0.45)
    arrays = list(detected_arrays(net.network, paths, thresh=0.005, hier=0, nms=0.45))
    assert len(arrays) == 3 and sum(len(probs) for _, _, probs in arrays) > 10
    for image, got in zip(images, arrays):
        expected = as_arrays(image["detections"], 0.005)
        for a, b in zip(got, expected):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_a_names_count_that_is_not_the_heads_classes(voc, tiny_yolo):
    Path("obj.names").write_text("cat\ndog\nbird\n")
    Path("obj.data").write_text("valid=valid.txt\nnames=obj.names\n")
    assert_error(run(*tiny_yolo, "--data", "obj.data"), "obj.names: ", "3 names",
                 "classes=2")
