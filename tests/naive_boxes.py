"""Slow, obviously-correct references for darkbp/boxes.py and the heads' decoding, used only
by tests: one box, one cell, one anchor at a time, with Darknet's flat indexing
(entry_index) written out, as its C loops read."""

from __future__ import annotations

import functools
import math

import numpy as np

F32 = np.float32


def iou(a, b) -> float:
    """Darknet's box_iou of two (x, y, w, h) boxes, in float32 step by step."""
    def overlap(x1, w1, x2, w2):
        left = max(F32(x1) - F32(w1) / F32(2), F32(x2) - F32(w2) / F32(2))
        right = min(F32(x1) + F32(w1) / F32(2), F32(x2) + F32(w2) / F32(2))
        return F32(right - left)

    w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = F32(0) if (w < 0 or h < 0) else F32(w * h)
    union = F32(F32(F32(a[2]) * F32(a[3])) + F32(F32(b[2]) * F32(b[3]))) - inter
    return float(F32(inter / union))


def nms_sort(boxes, objectness, probs, thresh):
    """do_nms_sort on lists: (order, probs), read straight from the C."""
    dets = [{"i": i, "box": boxes[i], "obj": objectness[i], "prob": list(probs[i])}
            for i in range(len(boxes))]
    k = len(dets) - 1
    i = 0
    while i <= k:
        if dets[i]["obj"] == 0:
            dets[i], dets[k] = dets[k], dets[i]
            k -= 1
            i -= 1
        i += 1
    total = k + 1
    classes = len(probs[0]) if len(probs) else 0
    for c in range(classes):
        def compare(a, b, c=c):
            diff = F32(a["prob"][c]) - F32(b["prob"][c])
            return 1 if diff < 0 else -1 if diff > 0 else 0
        dets[:total] = sorted(dets[:total], key=functools.cmp_to_key(compare))   # stable
        for a in range(total):
            if dets[a]["prob"][c] == 0:
                continue
            for b in range(a + 1, total):
                if iou(dets[a]["box"], dets[b]["box"]) > thresh:
                    dets[b]["prob"][c] = 0
    return [d["i"] for d in dets], np.array([d["prob"] for d in dets], F32).reshape(
        len(dets), classes)


def yolo_detections(output, w, h, mask, anchors, classes, netw, neth, thresh):
    """get_yolo_detections on one image's flat output: [(box, objectness, probs)]."""
    out = np.asarray(output, F32).ravel()

    def entry(n, loc, e):
        return n * w * h * (4 + classes + 1) + e * w * h + loc

    found = []
    for i in range(w * h):
        row, col = i // w, i % w
        for n in range(len(mask)):
            obj = out[entry(n, i, 4)]
            if not obj > thresh:
                continue
            aw, ah = anchors[mask[n]]
            box = [F32((F32(col) + out[entry(n, i, 0)]) / F32(w)),
                   F32((F32(row) + out[entry(n, i, 1)]) / F32(h)),
                   F32(math.exp(float(out[entry(n, i, 2)])) * float(F32(aw)) / netw),
                   F32(math.exp(float(out[entry(n, i, 3)])) * float(F32(ah)) / neth)]
            probs = [F32(obj * out[entry(n, i, 5 + j)]) for j in range(classes)]
            found.append((box, obj, [p if p > thresh else F32(0) for p in probs]))
    return found


def region_detections(output, w, h, num, anchors, classes, coords, thresh):
    """get_region_detections (no tree, no background) on one image's flat output."""
    out = np.asarray(output, F32).ravel()

    def entry(n, loc, e):
        return n * w * h * (coords + classes + 1) + e * w * h + loc

    found = [None] * (w * h * num)
    for i in range(w * h):
        row, col = i // w, i % w
        for n in range(num):
            scale = out[entry(n, i, coords)]
            box = [F32((F32(col) + out[entry(n, i, 0)]) / F32(w)),
                   F32((F32(row) + out[entry(n, i, 1)]) / F32(h)),
                   F32(math.exp(float(out[entry(n, i, 2)])) * float(F32(anchors[n][0])) / w),
                   F32(math.exp(float(out[entry(n, i, 3)])) * float(F32(anchors[n][1])) / h)]
            obj = scale if scale > thresh else F32(0)
            probs = [F32(0)] * classes
            if obj:
                probs = [F32(scale * out[entry(n, i, coords + 1 + j)]) for j in range(classes)]
                probs = [p if p > thresh else F32(0) for p in probs]
            found[n * w * h + i] = (box, obj, probs)
    return found


def detection_detections(output, side, num, classes, sqrt, thresh):
    """get_detection_detections on one image's flat output, boxes relative (Darknet
    multiplies them by the image's size)."""
    out = np.asarray(output, F32).ravel()
    found = []
    for i in range(side * side):
        row, col = i // side, i % side
        for n in range(num):
            scale = out[side * side * classes + i * num + n]
            b = side * side * (classes + num) + (i * num + n) * 4
            power = 2 if sqrt else 1
            box = [F32((out[b] + F32(col)) / F32(side)), F32((out[b + 1] + F32(row)) / F32(side)),
                   F32(out[b + 2] ** power), F32(out[b + 3] ** power)]
            probs = [F32(scale * out[i * classes + j]) for j in range(classes)]
            found.append((box, scale, [p if p > thresh else F32(0) for p in probs]))
    return found
