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


# --- AlexeyAB's box.c, one box pair at a time (darkbp/ops/iou_loss.py) -----------------------
def ab_iou(a, b) -> float:
    """AlexeyAB's box_iou: 0 where the intersection or the union is 0."""
    def overlap(x1, w1, x2, w2):
        left = max(F32(x1) - F32(w1) / F32(2), F32(x2) - F32(w2) / F32(2))
        right = min(F32(x1) + F32(w1) / F32(2), F32(x2) + F32(w2) / F32(2))
        return F32(right - left)

    w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = F32(0) if (w < 0 or h < 0) else F32(w * h)
    union = F32(F32(F32(a[2]) * F32(a[3])) + F32(F32(b[2]) * F32(b[3]))) - inter
    if inter == 0 or union == 0:
        return 0.0
    return float(F32(inter / union))


def _c(a, b):
    """box_c: top, bottom, left, right of the enclosing box, float32."""
    a, b = [F32(v) for v in a], [F32(v) for v in b]
    half = F32(2)
    return (min(a[1] - a[3] / half, b[1] - b[3] / half), max(a[1] + a[3] / half, b[1] + b[3] / half),
            min(a[0] - a[2] / half, b[0] - b[2] / half), max(a[0] + a[2] / half, b[0] + b[2] / half))


def ab_giou(a, b) -> float:
    top, bot, left, right = _c(a, b)
    c = F32(F32(right - left) * F32(bot - top))
    iou = F32(ab_iou(a, b))
    if c == 0:
        return float(iou)
    a32, b32 = [F32(v) for v in a], [F32(v) for v in b]
    # box_union's own intersection (box_intersection, clipped at 0)
    w = min(a32[0] + a32[2] / F32(2), b32[0] + b32[2] / F32(2)) - max(a32[0] - a32[2] / F32(2), b32[0] - b32[2] / F32(2))
    h = min(a32[1] + a32[3] / F32(2), b32[1] + b32[3] / F32(2)) - max(a32[1] - a32[3] / F32(2), b32[1] - b32[3] / F32(2))
    inter = F32(0) if (w < 0 or h < 0) else F32(w * h)
    u = F32(F32(a32[2] * a32[3]) + F32(b32[2] * b32[3])) - inter
    return float(F32(iou - F32(F32(c - u) / c)))


def ab_diou(a, b, power=0.6) -> float:
    top, bot, left, right = _c(a, b)
    w, h = F32(right - left), F32(bot - top)
    c = F32(F32(w * w) + F32(h * h))
    iou = F32(ab_iou(a, b))
    if c == 0:
        return float(iou)
    a32, b32 = [F32(v) for v in a], [F32(v) for v in b]
    d = F32(F32((a32[0] - b32[0]) * (a32[0] - b32[0])) + F32((a32[1] - b32[1]) * (a32[1] - b32[1])))
    return float(F32(iou - F32(math.pow(float(F32(d / c)), power))))


def ab_ciou(a, b) -> float:
    top, bot, left, right = _c(a, b)
    w, h = F32(right - left), F32(bot - top)
    c = F32(F32(w * w) + F32(h * h))
    iou = F32(ab_iou(a, b))
    if c == 0:
        return float(iou)
    a32, b32 = [F32(v) for v in a], [F32(v) for v in b]
    u = F32(F32((a32[0] - b32[0]) * (a32[0] - b32[0])) + F32((a32[1] - b32[1]) * (a32[1] - b32[1])))
    d = F32(u / c)
    gap = math.atan(float(F32(b32[2] / b32[3]))) - math.atan(float(F32(a32[2] / a32[3])))
    ar_loss = F32(4 / (math.pi * math.pi) * gap * gap)
    alpha = F32(float(ar_loss) / (float(F32(F32(F32(1) - iou) + ar_loss)) + 0.000001))
    return float(F32(iou - F32(d + F32(alpha * ar_loss))))


def dx_box_iou(pred, truth, kind: str) -> tuple[float, float, float, float]:
    """AlexeyAB's dx_box_iou, line by line in float32: (dx, dy, dw, dh)."""
    f = F32
    px, py, pw, ph = (f(v) for v in pred)
    tx, ty, tw, th = (f(v) for v in truth)
    two = f(2)
    top, bot, lft, rgt = py - ph / two, py + ph / two, px - pw / two, px + pw / two
    pred_t, pred_b = min(top, bot), max(top, bot)
    pred_l, pred_r = min(lft, rgt), max(lft, rgt)
    t_top, t_bot, t_left, t_right = ty - th / two, ty + th / two, tx - tw / two, tx + tw / two
    X = (pred_b - pred_t) * (pred_r - pred_l)
    Xhat = (t_bot - t_top) * (t_right - t_left)
    Ih = min(pred_b, t_bot) - max(pred_t, t_top)
    Iw = min(pred_r, t_right) - max(pred_l, t_left)
    I = Iw * Ih
    U = X + Xhat - I
    S = (px - tx) * (px - tx) + (py - ty) * (py - ty)
    giou_Cw = max(pred_r, t_right) - min(pred_l, t_left)
    giou_Ch = max(pred_b, t_bot) - min(pred_t, t_top)
    giou_C = giou_Cw * giou_Ch
    dX = {"t": -(pred_r - pred_l), "b": pred_r - pred_l, "l": -(pred_b - pred_t), "r": pred_b - pred_t}
    dI = {"t": -Iw if pred_t > t_top else f(0), "b": Iw if pred_b < t_bot else f(0),
          "l": -Ih if pred_l > t_left else f(0), "r": Ih if pred_r < t_right else f(0)}
    dU = {k: dX[k] - dI[k] for k in "tblr"}
    dC = {"t": -giou_Cw if pred_t < t_top else f(0), "b": giou_Cw if pred_b > t_bot else f(0),
          "l": -giou_Ch if pred_l < t_left else f(0), "r": giou_Ch if pred_r > t_right else f(0)}
    p = {k: f(0) for k in "tblr"}
    if U > 0:
        p = {k: (U * dI[k] - I * dU[k]) / (U * U) for k in "tblr"}
    p["t"], p["b"] = (p["t"], p["b"]) if top < bot else (p["b"], p["b"])
    p["l"], p["r"] = (p["l"], p["r"]) if lft < rgt else (p["r"], p["r"])
    if kind == "giou":
        if giou_C > 0:
            p = {k: p[k] + (giou_C * dU[k] - U * dC[k]) / (giou_C * giou_C) for k in "tblr"}
        if Iw <= 0 or Ih <= 0:
            p = {k: (giou_C * dU[k] - U * dC[k]) / (giou_C * giou_C) for k in "tblr"}
    Ct, Cb = min(py - ph / two, ty - th / two), max(py + ph / two, ty + th / two)
    Cl, Cr = min(px - pw / two, tx - tw / two), max(px + pw / two, tx + tw / two)
    Cw, Ch = Cr - Cl, Cb - Ct
    C = Cw * Cw + Ch * Ch
    one, half, zero = f(1), f(0.5), f(0)
    dCw_dx = (one if pred_r > t_right else zero) - (one if pred_l < t_left else zero)
    dCw_dw = (half if pred_r > t_right else zero) - (-half if pred_l < t_left else zero)
    dCh_dy = (one if pred_b > t_bot else zero) - (one if pred_t < t_top else zero)
    dCh_dh = (half if pred_b > t_bot else zero) - (-half if pred_t < t_top else zero)
    p_dx, p_dy = p["l"] + p["r"], p["t"] + p["b"]
    p_dw, p_dh = p["r"] - p["l"], p["b"] - p["t"]
    if kind in ("diou", "ciou"):
        ex = (two * (tx - px) * C - (two * Cw * dCw_dx) * S) / (C * C)
        ey = (two * (ty - py) * C - (two * Ch * dCh_dy) * S) / (C * C)
        ew = (two * Cw * dCw_dw) * S / (C * C)
        eh = (two * Ch * dCh_dh) * S / (C * C)
        if kind == "ciou":
            gap = math.atan(float(tw / th)) - math.atan(float(pw / ph))
            ar_loss = f(4 / (math.pi * math.pi) * gap * gap)
            alpha = f(float(ar_loss) / (float(one - I / U + ar_loss) + 0.000001))
            ew = ew + alpha * f(8 / (math.pi * math.pi) * gap * float(ph))
            eh = eh + alpha * f(-8 / (math.pi * math.pi) * gap * float(pw))
        if C > 0:
            p_dx, p_dy, p_dw, p_dh = p_dx + ex, p_dy + ey, p_dw + ew, p_dh + eh
        if Iw <= 0 or Ih <= 0:
            p_dx, p_dy, p_dw, p_dh = ex, ey, ew, eh
    return float(p_dx), float(p_dy), float(p_dw), float(p_dh)


def diounms_sort(boxes, objectness, probs, thresh, kind, beta):
    """AlexeyAB's diounms_sort on lists: (order, probs); kind greedynms or diounms."""
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
    for c in range(len(probs[0]) if len(probs) else 0):
        head = sorted(dets[:total], key=functools.cmp_to_key(
            lambda a, b: -1 if a["prob"][c] - b["prob"][c] > 0
            else (1 if a["prob"][c] - b["prob"][c] < 0 else 0)))
        dets[:total] = head
        for i in range(total):
            if dets[i]["prob"][c] == 0:
                continue
            for j in range(i + 1, total):
                power = 0.6 if kind == "greedynms" else beta
                if ab_diou(dets[i]["box"], dets[j]["box"], power) > thresh:
                    dets[j]["prob"][c] = 0
    return [d["i"] for d in dets], np.array([d["prob"] for d in dets], F32)


# --- AlexeyAB's process_batch (src/yolo_layer.c): the objectness and class deltas ------------
def ab_yolo_obj_class_delta(output, truths, mask, anchors, netw, neth, ignore_thresh,
                            truth_thresh, obj_normalizer=1.0, label_smooth_eps=0.0,
                            iou_thresh=1.0, objectness_smooth=False, max_boxes=200):
    """One image of AlexeyAB's forward_yolo_layer training: output (A, 5 + classes, H, W)
    float32 after the logistic (no new_coords), truths (T, 5) x, y, w, h, class; returns the
    delta of its objectness and class entries (A, 1 + classes, H, W), loop by loop as its C
    (iou_thresh with its IoU kind iou; no focal_loss, map or classes_multipliers)."""
    na, e, lh, lw = output.shape
    classes = e - 5
    out = np.asarray(output, F32).reshape(-1)
    delta = np.zeros_like(out)
    stride = lw * lh
    norm = F32(obj_normalizer)
    eps = F32(label_smooth_eps)

    def index(n, j, i, entry):
        return n * e * stride + entry * stride + j * lw + i

    def box_of(t):
        return [F32(v) for v in truths[t][:4]]

    count = 0
    while count < min(len(truths), max_boxes) and truths[count][0] != 0:
        count += 1

    def class_delta(at, class_id):
        if delta[at + stride * class_id]:
            y_true = F32(1)
            if eps:
                y_true = F32(y_true * (F32(1) - eps) + F32(0.5) * eps)
            delta[at + stride * class_id] = F32(y_true - out[at + stride * class_id])
            return
        for c in range(classes):
            y_true = F32(1 if c == class_id else 0)
            if eps:
                y_true = F32(y_true * (F32(1) - eps) + F32(0.5) * eps)
            delta[at + stride * c] = F32(y_true - out[at + stride * c])

    for j in range(lh):
        for i in range(lw):
            for n in range(na):
                obj = index(n, j, i, 4)
                at = index(n, j, i, 5)
                anchor = anchors[mask[n]]
                pred = [F32((F32(i) + out[index(n, j, i, 0)]) / F32(lw)),
                        F32((F32(j) + out[index(n, j, i, 1)]) / F32(lh)),
                        F32(math.exp(float(out[index(n, j, i, 2)])) * anchor[0] / netw),
                        F32(math.exp(float(out[index(n, j, i, 3)])) * anchor[1] / neth)]
                best_match_iou, best_iou, best_t = F32(0), F32(0), 0
                for t in range(count):
                    class_id = int(truths[t][4])
                    if class_id >= classes or class_id < 0:
                        continue
                    match = any(out[at + stride * c] > F32(0.25) for c in range(classes))
                    value = F32(ab_iou(pred, box_of(t)))
                    if value > best_match_iou and match:
                        best_match_iou = value
                    if value > best_iou:
                        best_iou, best_t = value, t
                delta[obj] = F32(norm * F32(0 - out[obj]))
                if best_match_iou > F32(ignore_thresh):
                    if objectness_smooth:
                        smooth = F32(norm * F32(best_match_iou - out[obj]))
                        if smooth > delta[obj]:
                            delta[obj] = smooth
                    else:
                        delta[obj] = 0
                if best_iou > F32(truth_thresh):
                    squared = F32(best_iou * best_iou)
                    if objectness_smooth:
                        delta[obj] = F32(norm * F32(squared - out[obj]))
                    else:
                        delta[obj] = F32(norm * F32(1 - out[obj]))
                    class_id = int(truths[best_t][4])
                    class_delta(at, class_id)
                    if objectness_smooth:
                        delta[at + stride * class_id] = F32(squared - out[at + stride * class_id])

    shapes = [[F32(0), F32(0), F32(F32(w) / F32(netw)), F32(F32(h) / F32(neth))]
              for w, h in anchors]
    for t in range(count):
        class_id = int(truths[t][4])
        if class_id >= classes or class_id < 0:
            continue
        box = box_of(t)
        i, j = int(box[0] * F32(lw)), int(box[1] * F32(lh))
        shift = [F32(0), F32(0), box[2], box[3]]
        best_iou, best_n = 0.0, 0
        for n, shape in enumerate(shapes):
            value = ab_iou(shape, shift)
            if value > best_iou:
                best_iou, best_n = value, n
        chosen = [best_n] if best_n in mask else []
        if iou_thresh < 1:
            chosen += [n for n in range(len(anchors)) if n in mask and n != best_n
                       and F32(ab_iou(shapes[n], shift)) > F32(iou_thresh)]
        for n in chosen:
            mask_n = list(mask).index(n)
            obj = index(mask_n, j, i, 4)
            if objectness_smooth:
                if delta[obj] == 0:
                    delta[obj] = F32(norm * F32(1 - out[obj]))
            else:
                delta[obj] = F32(norm * F32(1 - out[obj]))
            class_delta(index(mask_n, j, i, 5), class_id)

    return delta.reshape(na, e, lh, lw)[:, 4:]
