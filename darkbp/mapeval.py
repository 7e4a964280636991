"""Scoring detections against label files: AlexeyAB's `detector map` and COCO's mAP.

    scorer = Scorer(classes=20, iou=0.5, conf_thresh=0.25)
    for (boxes, ids, probs), (truth_boxes, truth_ids) in zip(found, truths):
        scorer.add(boxes, ids, probs, truth_boxes, truth_ids)   # one image at a time
    result = scorer.result()      # MapResult: map50, map50_95, per-class AP, P/R/F1, ...

A detection is one (box, class) with its probability (Darknet's prob[k]); boxes are
centre form, relative to the image, as in label files (darkbp.labels). Images stream
through `add`; only a few numbers per detection are kept, never an image.

AlexeyAB's validate_detector_map (map_points=0), which `map50` and the per-class lines follow:

- Matching is per image, at collection time: a detection's truth is the one of its class
  with the highest IoU above `iou` (Darknet's box_iou, strictly greater; the first of
  equal IoUs). Detections are collected image by image, in the order given (for
  `darkbp detect`'s: box by box after NMS, classes in order).
- All detections of the set are then ranked by probability, highest first, equal
  probabilities in collection order (glibc's qsort is a stable merge sort). Walking the
  ranks, a detection is a true positive if it has a truth not yet taken; a detection whose
  truth is already taken is a false positive: it does not fall back to its next best
  truth.
- AP per class is VOC2010+'s all-point area under the precision envelope (precision made
  non-increasing from the right), recall relative to the class's truths; a class without
  truths or detections scores 0. mAP@iou is the mean over all classes.
- TP, FP, precision, recall, F1 and average IoU are AlexeyAB's "for conf_thresh" counts,
  made per image in collection order, not over the ranking: a detection with probability
  above `conf_thresh` is a TP if it has a truth that no earlier detection of the same
  image (whatever its probability) has; every other one is an FP. Average IoU is the sum
  of the TPs' IoUs over TP + FP. These use float32, as AlexeyAB's C (0/0 gives NaN).

COCO (pycocotools' COCOeval for bbox, area "all", maxDets 100, every truth iscrowd 0):
per image and class the 100 most probable detections are matched greedily, most probable
first, each to the untaken truth of highest IoU >= t (the last of equal IoUs) for each
t in .50:.05:.95; AP is the 101-point interpolated precision; mAP@[.5:.95] is the mean
over t and over the classes that have truths (NaN where pycocotools gives -1). IoUs are
Darknet's box_iou in float32 (pycocotools computes them in float64 from corners).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from darkbp.boxes import iou_matrix
from darkbp.errors import DarkbpError
from darkbp.imagedata import (SHOWN, existing_file, positive_int, read_data_file, read_lines,
                              resolve)
from darkbp.labels import LabelCounts, find_label_file, read_label_file

F32 = np.float32
# pycocotools' Params for bbox: IoU thresholds .50:.05:.95, 101 recall points, maxDets.
COCO_IOUS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
COCO_RECALLS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
COCO_MAX_DETS = 100
# pycocotools never lets a match need IoU 1 exactly.
_COCO_NEED = np.minimum(COCO_IOUS, 1 - 1e-10)

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]   # boxes (n, 4), classes (n,), probs (n,)
Truths = tuple[np.ndarray, np.ndarray]                   # boxes (m, 4), classes (m,)


@dataclass(frozen=True)
class MapResult:
    """The scores of a set. Per class (classes,): ap50 (VOC all-point AP at `iou`), tp and
    fp (at conf_thresh), truths; coco_ap (classes, 10): COCO's AP per IoU threshold, NaN for
    a class without truths."""

    iou: float
    conf_thresh: float
    map50: float
    map50_95: float
    precision: float
    recall: float
    f1: float
    average_iou: float
    detections: int
    ap50: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    truths: np.ndarray
    coco_ap: np.ndarray


class Scorer:
    """Accumulates detections and truths image by image; `result` scores them (module doc)."""

    def __init__(self, classes: int, iou: float = 0.5, conf_thresh: float = 0.25):
        self.classes, self.iou, self.conf_thresh = classes, iou, conf_thresh
        self._truths = np.zeros(classes, np.int64)
        self._tp = np.zeros(classes, np.int64)
        self._fp = np.zeros(classes, np.int64)
        self._iou_sum = F32(0)
        # Per detection, image by image: VOC's (prob, class, global truth index or -1)...
        self._voc: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        # ...and COCO's (prob, class, matched at each threshold (n, 10)) of the top 100.
        self._coco: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, boxes: np.ndarray, classes: np.ndarray, probs: np.ndarray,
            truth_boxes: np.ndarray, truth_classes: np.ndarray) -> None:
        """One image: its detections (n, 4) float32, (n,) int, (n,) float32 in collection
        order, and its truths (m, 4) float32, (m,) int."""
        boxes, probs = np.asarray(boxes, F32).reshape(-1, 4), np.asarray(probs, F32)
        classes, truth_classes = np.asarray(classes, np.int64), np.asarray(truth_classes, np.int64)
        ious = iou_matrix(boxes, np.asarray(truth_boxes, F32).reshape(-1, 4))    # (n, m)
        same = classes[:, None] == truth_classes[None, :]
        truth, best_iou = _darknet_match(ious, same, F32(self.iou))
        self._count_at_conf_thresh(classes, probs, truth, best_iou)
        offset = int(self._truths.sum())
        self._voc.append((probs, classes, np.where(truth >= 0, truth + offset, -1)))
        self._coco.append(_coco_match(ious, same, classes, probs))
        self._truths += np.bincount(truth_classes, minlength=self.classes)

    def _count_at_conf_thresh(self, classes: np.ndarray, probs: np.ndarray,
                              truth: np.ndarray, best_iou: np.ndarray) -> None:
        """AlexeyAB's per-image TP/FP at conf_thresh: a truth counts for the first
        detection of the image that has it, whatever that detection's probability."""
        first = np.zeros(len(truth), bool)
        has = np.flatnonzero(truth >= 0)
        first[has[np.unique(truth[has], return_index=True)[1]]] = True
        above = probs > F32(self.conf_thresh)
        tp, fp = above & first, above & ~first
        self._tp += np.bincount(classes[tp], minlength=self.classes)
        self._fp += np.bincount(classes[fp], minlength=self.classes)
        self._iou_sum += best_iou[tp].sum(dtype=F32)

    def result(self) -> MapResult:
        """The scores of everything added so far."""
        probs, classes, truth = (np.concatenate(parts) for parts in zip(
            (np.zeros(0, F32), np.zeros(0, np.int64), np.zeros(0, np.int64)), *self._voc))
        ap50 = _voc_ap(probs, classes, truth, self._truths)
        coco_ap = _coco_ap(self._coco, self._truths)
        tp, fp = F32(self._tp.sum()), F32(self._fp.sum())
        total = F32(self._truths.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
            recall = tp / (tp + (total - tp))
            f1 = F32(2) * precision * recall / (precision + recall)
        average_iou = self._iou_sum / (tp + fp) if tp + fp > 0 else F32(0)
        has_truths = self._truths > 0
        map50_95 = float(coco_ap[has_truths].mean()) if has_truths.any() else math.nan
        return MapResult(
            iou=self.iou, conf_thresh=self.conf_thresh, map50=float(ap50.sum() / self.classes),
            map50_95=map50_95, precision=float(precision), recall=float(recall),
            f1=float(f1), average_iou=float(average_iou), detections=len(probs), ap50=ap50,
            tp=self._tp.copy(), fp=self._fp.copy(), truths=self._truths.copy(),
            coco_ap=np.where(has_truths[:, None], coco_ap, math.nan))


def _darknet_match(ious: np.ndarray, same: np.ndarray, iou: np.float32
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(truth index (n,) or -1, its IoU (n,) float32 or 0): per detection, the truth of its
    class with the highest IoU above `iou`, the first of equal ones (argmax)."""
    ok = same & (ious > iou)                        # NaN IoUs compare false, as in C
    masked = np.where(ok, ious, F32(-1))
    has = ok.any(axis=1)
    best = masked.argmax(axis=1) if ious.shape[1] else np.zeros(len(ious), np.int64)
    rows = np.arange(len(ious))
    best_iou = np.where(has, masked[rows, best] if ious.shape[1] else 0, F32(0)).astype(F32)
    return np.where(has, best, -1), best_iou


def _voc_ap(probs: np.ndarray, classes: np.ndarray, truth: np.ndarray,
            truths: np.ndarray) -> np.ndarray:
    """(classes,) float64 all-point AP over the whole ranking (module doc)."""
    order = np.argsort(-probs, kind="stable")       # highest first, ties in collection order
    truth = truth[order]
    tp = np.zeros(len(order), bool)
    has = np.flatnonzero(truth >= 0)
    tp[has[np.unique(truth[has], return_index=True)[1]]] = True    # first to take its truth
    by_class = np.argsort(classes[order], kind="stable")            # groups, rank order kept
    counts = np.bincount(classes, minlength=len(truths))
    ap = np.zeros(len(truths))
    for c, flags in enumerate(np.split(tp[by_class], np.cumsum(counts)[:-1])):
        if len(flags) and truths[c]:
            hits = np.cumsum(flags)
            precision = hits / np.arange(1, len(flags) + 1)
            envelope = np.maximum.accumulate(precision[::-1])[::-1]
            # Recall rises by 1/truths at each TP: the area is the envelope there.
            ap[c] = envelope[flags].sum() / truths[c]
    return ap


def _coco_match(ious: np.ndarray, same: np.ndarray, classes: np.ndarray, probs: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's (probs (k,), classes (k,), matched (k, 10)) of the COCO_MAX_DETS most
    probable detections of each class, grouped by class, most probable first, as
    pycocotools' evaluateImg matches them at each IoU threshold."""
    order = np.argsort(-probs, kind="stable")
    order = order[np.argsort(classes[order], kind="stable")]
    starts = np.searchsorted(classes[order], classes[order])
    order = order[np.arange(len(order)) - starts < COCO_MAX_DETS]
    ious = np.where(same[order], ious[order].astype(np.float64), -1.0)      # (k, m)
    matched = np.zeros((len(order), len(COCO_IOUS)), bool)
    taken = np.zeros((len(COCO_IOUS), ious.shape[1]), bool)
    # Only a detection with some truth at IoU >= .5 can match; they are few.
    for i in np.flatnonzero((ious >= _COCO_NEED[0]).any(axis=1)):
        ok = ~taken & (ious[i] >= _COCO_NEED[:, None])                     # (10, m)
        found = ok.any(axis=1)
        scores = np.where(ok, ious[i], -np.inf)[:, ::-1]
        last_best = ious.shape[1] - 1 - scores.argmax(axis=1)
        taken[found, last_best[found]] = True
        matched[i] = found
    return probs[order], classes[order], matched


def _coco_ap(images: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
             truths: np.ndarray) -> np.ndarray:
    """(classes, 10) COCO AP per IoU threshold, as pycocotools' accumulate (0 for a class
    without truths: the caller masks it)."""
    ap = np.zeros((len(truths), len(COCO_IOUS)))
    probs, classes, matched = (np.concatenate(parts) for parts in zip(
        (np.zeros(0, F32), np.zeros(0, np.int64), np.zeros((0, len(COCO_IOUS)), bool)),
        *images))
    for c in np.flatnonzero(truths):
        mine = classes == c                          # image order, each image's own ranking
        order = np.argsort(-probs[mine].astype(np.float64), kind="mergesort")
        hits = matched[mine][order]                  # (d, 10)
        if not len(hits):
            continue
        tp = np.cumsum(hits, axis=0, dtype=np.float64)
        fp = np.cumsum(~hits, axis=0, dtype=np.float64)
        recall = tp / truths[c]
        precision = tp / (fp + tp + np.spacing(1))
        envelope = np.maximum.accumulate(precision[::-1], axis=0)[::-1]
        for t in range(len(COCO_IOUS)):
            at = np.searchsorted(recall[:, t], COCO_RECALLS, side="left")
            reached = at < len(hits)
            ap[c, t] = envelope[at[reached], t].sum() / len(COCO_RECALLS)
    return ap


# ---------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class ValidList:
    """The images a .data file's valid= list names, as written, and the list's folder
    (relative paths resolve from there when not from the current folder)."""

    images: tuple[str, ...]
    file: str
    base: str


def valid_list(data_path: str, names: Sequence[str], names_source: str) -> ValidList:
    """The .data file's valid= list; a DarkbpError for a missing valid=, an empty list, or
    a classes= that is not the number of names."""
    options, _ = read_data_file(data_path)        # its warnings: the caller's data_file_names
    if "classes" in options:
        classes = positive_int(options["classes"], "classes", data_path)
        if classes != len(names):
            raise DarkbpError(f"classes={classes}, but {names_source} holds {len(names)} "
                              "names", file=data_path, line=options["classes"].line)
    if "valid" not in options:
        raise DarkbpError("no valid= line: darkbp map scores the images of the valid list",
                          file=data_path)
    path = existing_file(options["valid"], "valid", Path(data_path).parent, data_path)
    images = tuple(line for line in read_lines(path) if line)
    if not images:
        raise DarkbpError("lists no images", file=str(path))
    return ValidList(images, str(path), str(path.parent))


def read_truths(valid: ValidList, classes: int) -> tuple[list[Truths], LabelCounts]:
    """Every image's truths, read before any detection so that a bad label stops the run
    at once; a missing label file gives no truths and is counted."""
    truths, counts = [], LabelCounts()
    empty = (np.zeros((0, 4), F32), np.zeros(0, np.int64))
    for image in valid.images:
        found = find_label_file(image, valid.base)
        boxes, ids = read_label_file(found, classes) if found else empty
        counts.add(image, found, len(ids))
        truths.append((boxes, ids))
    return truths, counts


def image_paths(valid: ValidList) -> list[str]:
    """The valid list's image files to read; a DarkbpError naming the first few missing."""
    found = [(image, resolve(image, valid.base)) for image in valid.images]
    missing = [image for image, path in found if path is None]
    if missing:
        raise DarkbpError(f"{len(missing):,} of {len(found):,} images do not exist (looked in "
                          f"the current folder, then in {valid.base}): {_quote(missing)}",
                          file=valid.file)
    return [path for _, path in found]


def as_arrays(detections: Sequence[dict], thresh: float) -> Detections:
    """The detections of one image (dicts of `darkbp detect --format json`) whose
    confidence is above `thresh`, as (boxes (n, 4) float32, classes (n,), probs (n,) float32)."""
    probs = np.array([d["confidence"] for d in detections], F32)
    keep = np.flatnonzero(probs > F32(thresh))
    return (np.array([detections[i]["box"] for i in keep], F32).reshape(-1, 4),
            np.array([detections[i]["class"] for i in keep], np.int64), probs[keep])


def read_detections(path: str, classes: int) -> dict[str, list[dict]]:
    """The images of a `darkbp detect --format json` document, by path as written; a
    DarkbpError naming the file for anything map cannot score."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise DarkbpError(f"cannot read: {error.strerror or error}", file=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        line = getattr(error, "lineno", None)
        raise DarkbpError(f"not JSON: {getattr(error, 'msg', error)}", file=path,
                          line=line) from None
    images = document.get("images") if isinstance(document, dict) else None
    if not isinstance(images, list):
        raise DarkbpError('expected {"images": [...]} as darkbp detect --format json '
                          "writes it", file=path)
    found: dict[str, list[dict]] = {}
    for i, image in enumerate(images):
        where = f"images[{i}]"
        if not (isinstance(image, dict) and isinstance(image.get("path"), str)
                and isinstance(image.get("detections"), list)):
            raise DarkbpError(f'{where}: expected {{"path": "...", "detections": [...]}}',
                              file=path)
        if image["path"] in found:
            raise DarkbpError(f"{where}: {image['path']!r} is listed twice", file=path)
        for j, detection in enumerate(image["detections"]):
            _check_detection(detection, f"{where}.detections[{j}]", classes, path)
        found[image["path"]] = image["detections"]
    return found


def _check_detection(detection, where: str, classes: int, path: str) -> None:
    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)

    if not isinstance(detection, dict):
        raise DarkbpError(f"{where}: expected an object", file=path)
    k = detection.get("class")
    if not (isinstance(k, int) and not isinstance(k, bool) and 0 <= k < classes):
        raise DarkbpError(f'{where}: "class" {k!r}: expected a whole number from 0 to '
                          f"{classes - 1}", file=path)
    if not number(detection.get("confidence")):
        raise DarkbpError(f'{where}: "confidence" {detection.get("confidence")!r}: expected '
                          "a number", file=path)
    box = detection.get("box")
    if not (isinstance(box, list) and len(box) == 4 and all(number(v) for v in box)):
        raise DarkbpError(f'{where}: "box" {box!r}: expected [x, y, width, height], four '
                          "numbers", file=path)


def match_images(found: dict[str, list[dict]], valid: ValidList, file: str
                 ) -> tuple[list[list[dict]], list[str]]:
    """(each valid image's detections from `found`, empty where it has none; warnings).

    A valid image matches the JSON image of the same path as written, else the one naming
    the same file (real paths, the image taken from the current folder, then from the
    list's folder). JSON images matching no valid image are not scored (a warning); if
    none matches at all, a DarkbpError naming `file`."""
    real = {os.path.realpath(p): p for p in found}
    used: set[str] = set()
    per_image, absent = [], 0
    for image in valid.images:
        key = image if image in found else next(
            (real[r] for r in (os.path.realpath(image),
                               os.path.realpath(os.path.join(valid.base, image)))
             if r in real), None)
        if key is None:
            absent += 1
            per_image.append([])
        else:
            used.add(key)
            per_image.append(found[key])
    unused = [p for p in found if p not in used]
    if found and not used:
        raise DarkbpError(f"none of its {len(found):,} images is in the valid list "
                          f"{valid.file}: {_quote(unused)}", file=file)
    warnings = []
    if unused:
        warnings.append(f"{file}: {len(unused):,} of its {len(found):,} images are not in "
                        f"the valid list {valid.file} and are not scored: {_quote(unused)}")
    if absent:
        warnings.append(f"{absent:,} of {len(valid.images):,} images of {valid.file} are "
                        f"not in {file}: scored as detecting nothing")
    return per_image, warnings


def _quote(items: Sequence[str]) -> str:
    return ", ".join(repr(p) for p in items[:SHOWN]) + (", ..." if len(items) > SHOWN else "")
