"""AlexeyAB's IoU family (src/box.c) and the box delta of its [yolo] `iou_loss`, vectorised.

    iou_kind("ciou", a, b)          # box_iou / box_giou / box_diou / box_ciou, broadcast: (...,)
    diounms(a, b, beta)             # box_diounms: DIoU with the distance term to the power beta
    box_step(pred, truth, "ciou")   # dx_box_iou: (..., 4) the step (dx, dy, dw, dh) on the box

Boxes are (..., 4) float32 (x, y, w, h) as in darkbp/boxes.py. The arithmetic is the C's:
float32 where it uses float, float64 where it calls a double function (atan, pow), so the
values equal AlexeyAB's to float32 rounding.

What `box_step` is. AlexeyAB's [yolo] adds iou_normalizer · box_step to the delta of x and y
and iou_normalizer · box_step · exp(t) to that of w and h (t the raw input). For iou and
giou (boxes that overlap) the step is the gradient of the IoU (GIoU) with respect to
(x, y, w/2·2, h/2·2): ∂/∂x and ∂/∂y exactly, twice ∂/∂w and ∂/∂h ("we do not divide by 2"
in AlexeyAB's comments). For diou and ciou it adds AlexeyAB's distance term, whose x and y
parts take the enclosing box's derivative with the opposite sign to that of d/c², and, for
ciou, α·(w² + h²)·(−∂v/∂w) for the aspect term v (CIoU's paper's trick, α held fixed). So the
step of diou and ciou is not the gradient of DIoU or CIoU; tests/test_yolo_alexeyab.py shows
each case against finite differences.
"""

from __future__ import annotations

import numpy as np

from darkbp.boxes import intersection

F32 = np.float32
KINDS = ("iou", "giou", "diou", "ciou")


def _split(a):
    a = np.asarray(a, F32)
    return a[..., 0], a[..., 1], a[..., 2], a[..., 3]


def ab_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """AlexeyAB's box_iou: intersection / union, but 0 where either is 0 (pjreddie's gives
    NaN for two empty boxes)."""
    a, b = np.asarray(a, F32), np.asarray(b, F32)
    inter = intersection(a, b)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
        return np.where((inter == 0) | (union == 0), F32(0), inter / union).astype(F32)


def _enclosing(a, b):
    """box_c: the (left, top, right, bottom) of the smallest box holding both, float32."""
    ax, ay, aw, ah = _split(a)
    bx, by, bw, bh = _split(b)
    two = F32(2)
    return (np.minimum(ax - aw / two, bx - bw / two), np.minimum(ay - ah / two, by - bh / two),
            np.maximum(ax + aw / two, bx + bw / two), np.maximum(ay + ah / two, by + bh / two))


def _distance(a, b, power: float | None):
    """(d/c)^power of DIoU (d the squared distance of the centres, c the squared diagonal of
    the enclosing box; power None: d/c in float) and where c is 0."""
    left, top, right, bottom = _enclosing(a, b)
    w, h = right - left, bottom - top
    c = w * w + h * h
    ax, ay, _, _ = _split(a)
    bx, by, _, _ = _split(b)
    d = (ax - bx) * (ax - bx) + (ay - by) * (ay - by)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = d / c
        term = ratio if power is None else np.power(ratio.astype(np.float64), power).astype(F32)
    return term, c == 0


def giou(a, b) -> np.ndarray:
    """box_giou: IoU − (C − U)/C, C the enclosing box's area (the IoU where C is 0)."""
    left, top, right, bottom = _enclosing(a, b)
    c = (right - left) * (bottom - top)
    iou = ab_iou(a, b)
    a, b = np.asarray(a, F32), np.asarray(b, F32)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - intersection(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c == 0, iou, iou - (c - union) / c).astype(F32)


def diou(a, b, power: float = 0.6) -> np.ndarray:
    """box_diou: IoU − (d/c)^0.6 (box_diounms: the power is its beta)."""
    term, flat = _distance(a, b, power)
    iou = ab_iou(a, b)
    return np.where(flat, iou, iou - term).astype(F32)


def diounms(a, b, beta: float) -> np.ndarray:
    return diou(a, b, beta)


def _aspect(a, b):
    """CIoU's v = 4/π²·(atan(w_t/h_t) − atan(w/h))² of prediction a against truth b, and the
    difference of the arctangents, in double as the C computes them."""
    _, _, aw, ah = _split(a)
    _, _, bw, bh = _split(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.arctan((bw / bh).astype(np.float64)) - np.arctan((aw / ah).astype(np.float64))
    return (4 / (np.pi * np.pi) * gap * gap).astype(F32), gap


def ciou(a, b) -> np.ndarray:
    """box_ciou: IoU − d/c − α·v, α = v / (1 − IoU + v + 1e-6) (the IoU where c is 0)."""
    term, flat = _distance(a, b, None)
    iou = ab_iou(a, b)
    v, _ = _aspect(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = (v / ((F32(1) - iou + v).astype(np.float64) + 0.000001)).astype(F32)
        return np.where(flat, iou, iou - (term + alpha * v)).astype(F32)


def iou_kind(kind: str, a, b) -> np.ndarray:
    """box_iou_kind: the IoU of `kind` (iou, giou, diou, ciou) of boxes a and b, broadcast."""
    return {"iou": ab_iou, "giou": giou, "diou": diou, "ciou": ciou}[kind](a, b)


def box_step(pred: np.ndarray, truth: np.ndarray, kind: str) -> np.ndarray:
    """dx_box_iou(pred, truth, kind): (..., 4) float32 (dx, dy, dw, dh), AlexeyAB's step of the
    box towards a larger IoU of `kind` (see the module docstring for what it is)."""
    px, py, pw, ph = _split(pred)
    tx, ty, tw, th = _split(truth)
    two, zero = F32(2), F32(0)
    # to_tblr, then the prediction's edges ordered (a negative size swaps them)
    top0, bot0, left0, right0 = py - ph / two, py + ph / two, px - pw / two, px + pw / two
    p_t, p_b = np.minimum(top0, bot0), np.maximum(top0, bot0)
    p_l, p_r = np.minimum(left0, right0), np.maximum(left0, right0)
    t_t, t_b, t_l, t_r = ty - th / two, ty + th / two, tx - tw / two, tx + tw / two

    area = (p_b - p_t) * (p_r - p_l)
    area_t = (t_b - t_t) * (t_r - t_l)
    ih = np.minimum(p_b, t_b) - np.maximum(p_t, t_t)
    iw = np.minimum(p_r, t_r) - np.maximum(p_l, t_l)
    inter = iw * ih
    union = area + area_t - inter
    s = (px - tx) * (px - tx) + (py - ty) * (py - ty)
    cw_g = np.maximum(p_r, t_r) - np.minimum(p_l, t_l)
    ch_g = np.maximum(p_b, t_b) - np.minimum(p_t, t_t)
    c_g = cw_g * ch_g

    # derivatives of the prediction's area, the intersection, the union and the enclosing
    # box's area with respect to the edges t, b, l, r
    dx_t, dx_b, dx_l, dx_r = -(p_r - p_l), p_r - p_l, -(p_b - p_t), p_b - p_t
    di_t = np.where(p_t > t_t, -iw, zero)
    di_b = np.where(p_b < t_b, iw, zero)
    di_l = np.where(p_l > t_l, -ih, zero)
    di_r = np.where(p_r < t_r, ih, zero)
    du = [dx_t - di_t, dx_b - di_b, dx_l - di_l, dx_r - di_r]
    dc = [np.where(p_t < t_t, -cw_g, zero), np.where(p_b > t_b, cw_g, zero),
          np.where(p_l < t_l, -ch_g, zero), np.where(p_r > t_r, ch_g, zero)]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        uu = union * union
        p = [np.where(union > 0, (union * di - inter * d) / uu, zero)
             for di, d in zip([di_t, di_b, di_l, di_r], du)]
        p_dt, p_db, p_dl, p_dr = p
        # a box of negative size: the C's two assignments in turn leave both edges p_db
        # (p_dr), its bottom's (right's)
        p_dt = np.where(top0 < bot0, p_dt, p_db)
        p_dl = np.where(left0 < right0, p_dl, p_dr)
        if kind == "giou":
            cc = c_g * c_g
            g = [(c_g * d - union * c) / cc for d, c in zip(du, dc)]
            apart = (iw <= 0) | (ih <= 0)
            p_dt, p_db, p_dl, p_dr = (
                np.where(apart, gi, np.where(c_g > 0, pi + gi, pi))
                for pi, gi in zip((p_dt, p_db, p_dl, p_dr), g))

        # the enclosing box of centre form (Cw, Ch, C = Cw² + Ch²) and its derivatives in
        # x, y, w, h of the prediction
        cw = np.maximum(px + pw / two, tx + tw / two) - np.minimum(px - pw / two, tx - tw / two)
        ch = np.maximum(py + ph / two, ty + th / two) - np.minimum(py - ph / two, ty - th / two)
        c = cw * cw + ch * ch
        one, half = F32(1), F32(0.5)
        top_out, bot_out = p_t < t_t, p_b > t_b
        left_out, right_out = p_l < t_l, p_r > t_r
        dcw_dx = np.where(right_out, one, zero) - np.where(left_out, one, zero)
        dcw_dw = np.where(right_out, half, zero) - np.where(left_out, -half, zero)
        dch_dy = np.where(bot_out, one, zero) - np.where(top_out, one, zero)
        dch_dh = np.where(bot_out, half, zero) - np.where(top_out, -half, zero)

        d_x, d_y = p_dl + p_dr, p_dt + p_db
        d_w, d_h = p_dr - p_dl, p_db - p_dt
        if kind in ("diou", "ciou"):
            cc = c * c
            e_x = (two * (tx - px) * c - (two * cw * dcw_dx) * s) / cc
            e_y = (two * (ty - py) * c - (two * ch * dch_dy) * s) / cc
            e_w = (two * cw * dcw_dw) * s / cc
            e_h = (two * ch * dch_dh) * s / cc
            if kind == "ciou":
                v, gap = _aspect(pred, truth)
                alpha = (v / ((one - inter / union + v).astype(np.float64) + 0.000001)
                         ).astype(F32)
                ar_dw = (8 / (np.pi * np.pi) * gap * ph).astype(F32)
                ar_dh = (-8 / (np.pi * np.pi) * gap * pw).astype(F32)
                e_w = e_w + alpha * ar_dw
                e_h = e_h + alpha * ar_dh
            apart = (iw <= 0) | (ih <= 0)
            positive = c > 0
            d_x = np.where(apart, e_x, np.where(positive, d_x + e_x, d_x))
            d_y = np.where(apart, e_y, np.where(positive, d_y + e_y, d_y))
            d_w = np.where(apart, e_w, np.where(positive, d_w + e_w, d_w))
            d_h = np.where(apart, e_h, np.where(positive, d_h + e_h, d_h))
    return np.stack([d_x, d_y, d_w, d_h], axis=-1).astype(F32)


def iou_kind64(kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The IoU of `kind` as `iou_kind` defines it, in float64 and without its float32
    steps: the smooth function darkbp's loss holds (and gradcheck differentiates)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a_lo, a_hi = a[..., :2] - a[..., 2:] / 2, a[..., :2] + a[..., 2:] / 2
    b_lo, b_hi = b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2
    sides = np.clip(np.minimum(a_hi, b_hi) - np.maximum(a_lo, b_lo), 0, None)
    inter = sides[..., 0] * sides[..., 1]
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    iou = inter / union
    if kind == "iou":
        return iou
    outer = np.maximum(a_hi, b_hi) - np.minimum(a_lo, b_lo)
    if kind == "giou":
        c = outer[..., 0] * outer[..., 1]
        return iou - (c - union) / c
    ratio = ((a[..., :2] - b[..., :2]) ** 2).sum(axis=-1) / (outer ** 2).sum(axis=-1)
    if kind == "diou":
        return iou - ratio ** 0.6
    v = 4 / np.pi ** 2 * (np.arctan(b[..., 2] / b[..., 3]) - np.arctan(a[..., 2] / a[..., 3])) ** 2
    alpha = v / (1 - iou + v + 0.000001)
    return iou - (ratio + alpha * v)
