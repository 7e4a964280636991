"""Darknet's detection data path, one pixel and one box at a time (tests only).

Written from pjreddie's src/data.c (load_data_detection, fill_truth_detection, read_boxes,
randomize_boxes, correct_boxes), src/image.c (place_image, bilinear_interpolate,
get_pixel_extend, flip_image, distort_image, rgb_to_hsv, hsv_to_rgb, constrain_image) and
src/utils.c (rand_uniform, rand_scale, constrain), loop for loop, in float32 where the C
uses float; each `(float)rand()/RAND_MAX` and `rand()%n` is replaced by a given uniform.
Shares no code with darkbp.detdata.
"""

from __future__ import annotations

import math

import numpy as np

f32 = np.float32


def rand_uniform(low, high, u):
    low, high = f32(low), f32(high)
    if high < low:
        low, high = high, low
    return f32(f32(u) * (high - low) + low)


def rand_scale(s, u, coin):
    scale = rand_uniform(1, s, u)
    return scale if coin < 0.5 else f32(1. / scale)


def new_size(orig_w, orig_h, w, h, jitter, u_w, u_h, u_dx, u_dy):
    """load_data_detection's nw, nh, dx, dy (floats)."""
    dw, dh = f32(jitter) * f32(orig_w), f32(jitter) * f32(orig_h)
    new_ar = f32((f32(orig_w) + rand_uniform(-dw, dw, u_w))
                 / (f32(orig_h) + rand_uniform(-dh, dh, u_h)))
    if new_ar < 1:
        nh = f32(h)
        nw = f32(nh * new_ar)
    else:
        nw = f32(w)
        nh = f32(nw / new_ar)
    return nw, nh, rand_uniform(0, f32(w) - nw, u_dx), rand_uniform(0, f32(h) - nh, u_dy)


def get_pixel_extend(im, x, y, c):
    _, h, w = im.shape
    if x < 0 or x >= w or y < 0 or y >= h:
        return f32(0)
    return im[c, y, x]


def bilinear_interpolate(im, x, y, c):
    ix, iy = int(math.floor(x)), int(math.floor(y))
    dx, dy = f32(x - ix), f32(y - iy)
    return f32((f32(1) - dy) * (f32(1) - dx) * get_pixel_extend(im, ix, iy, c)
               + dy * (f32(1) - dx) * get_pixel_extend(im, ix, iy + 1, c)
               + (f32(1) - dy) * dx * get_pixel_extend(im, ix + 1, iy, c)
               + dy * dx * get_pixel_extend(im, ix + 1, iy + 1, c))


def place_image(im, w, h, dx, dy, canvas):
    """im: float32 (C, H, W); w, h, dx, dy C ints; canvas float32 (C, ch, cw), in place."""
    c_n, H, W = im.shape
    _, ch, cw = canvas.shape
    for c in range(c_n):
        for y in range(h):
            for x in range(w):
                rx = f32(f32(f32(x) / f32(w)) * f32(W))
                ry = f32(f32(f32(y) / f32(h)) * f32(H))
                val = bilinear_interpolate(im, rx, ry, c)
                if 0 <= x + dx < cw and 0 <= y + dy < ch:       # set_pixel
                    canvas[c, y + dy, x + dx] = val


def flip_image(a):
    c_n, h, w = a.shape
    for k in range(c_n):
        for i in range(h):
            for j in range(w // 2):
                a[k, i, j], a[k, i, w - j - 1] = a[k, i, w - j - 1], a[k, i, j]


def distort_image(im, hue, sat, val):
    """rgb_to_hsv, the scalings and the hue shift, hsv_to_rgb, constrain_image; in place."""
    _, h, w = im.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(h):
            for i in range(w):
                r, g, b = im[:, j, i]
                mx, mn = max(r, g, b), min(r, g, b)
                delta = f32(mx - mn)
                v = mx
                if mx == 0:
                    s = hh = f32(0)
                else:
                    s = f32(delta / mx)
                    if r == mx:
                        hh = f32((g - b) / delta)
                    elif g == mx:
                        hh = f32(2 + f32((b - r) / delta))
                    else:
                        hh = f32(4 + f32((r - g) / delta))
                    if hh < 0:
                        hh = f32(hh + 6)
                    hh = f32(hh / 6.)
                s, v = f32(s * sat), f32(v * val)
                hh = f32(hh + hue)
                if hh > 1:
                    hh = f32(hh - 1)
                if hh < 0:
                    hh = f32(hh + 1)
                im[:, j, i] = hsv_to_rgb(hh, s, v)
    np.clip(im, 0, 1, out=im)


def hsv_to_rgb(hh, s, v):
    h6 = f32(6 * hh)
    if s == 0:
        return v, v, v
    index = int(math.floor(h6))
    f = f32(h6 - index)
    p = f32(v * f32(1 - s))
    q = f32(v * f32(1 - f32(s * f)))
    t = f32(v * f32(1 - f32(s * f32(1 - f))))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v)][index] if index < 5 \
        else (v, p, q)


def load_image(pixels, w, h, nw, nh, dx, dy, flip, dhue, dsat, dexp):
    """One image of load_data_detection: uint8 (3, H, W) -> float32 (3, h, w)."""
    orig = (pixels.astype(np.float64) / 255.).astype(f32)
    sized = np.full((3, h, w), f32(.5), f32)
    place_image(orig, int(nw), int(nh), int(dx), int(dy), sized)    # C's (int): toward 0
    distort_image(sized, dhue, dsat, dexp)
    if flip:
        flip_image(sized)
    return sized


def fill_truth_detection(labels, num_boxes, shuffle, flip, dx, dy, sx, sy):
    """labels: (n, 5) class, x, y, w, h as read_boxes reads them; shuffle: n uniforms.
    Returns float32 (num_boxes, 5). AlexeyAB's rule drops correct_boxes' 999999 box."""
    boxes = []
    for cls, x, y, w, h in labels:
        x, y, w, h = f32(x), f32(y), f32(w), f32(h)
        boxes.append({"id": int(cls), "x": x, "y": y, "w": w, "h": h,
                      "left": f32(x - w / f32(2)), "right": f32(x + w / f32(2)),
                      "top": f32(y - h / f32(2)), "bottom": f32(y + h / f32(2))})
    n = len(boxes)
    for i in range(n):                                              # randomize_boxes
        index = min(int(shuffle[i] * n), n - 1)
        boxes[i], boxes[index] = boxes[index], boxes[i]
    constrain = lambda v: f32(0) if v < 0 else (f32(1) if v > 1 else v)
    for b in boxes:                                                 # correct_boxes
        if b["x"] == 0 and b["y"] == 0:
            b["x"] = b["y"] = b["w"] = b["h"] = f32(999999)
            continue
        b["left"] = f32(f32(b["left"] * sx) - dx)
        b["right"] = f32(f32(b["right"] * sx) - dx)
        b["top"] = f32(f32(b["top"] * sy) - dy)
        b["bottom"] = f32(f32(b["bottom"] * sy) - dy)
        if flip:
            b["left"], b["right"] = f32(1. - b["right"]), f32(1. - b["left"])
        for k in ("left", "right", "top", "bottom"):
            b[k] = constrain(b[k])
        b["x"] = f32((b["left"] + b["right"]) / f32(2))
        b["y"] = f32((b["top"] + b["bottom"]) / f32(2))
        b["w"] = constrain(f32(b["right"] - b["left"]))
        b["h"] = constrain(f32(b["bottom"] - b["top"]))
    truth = np.zeros((num_boxes, 5), f32)
    sub = 0
    for i in range(min(n, num_boxes)):
        b = boxes[i]
        if b["x"] == 999999 or b["w"] < .001 or b["h"] < .001:
            sub += 1
            continue
        truth[i - sub] = b["x"], b["y"], b["w"], b["h"], b["id"]
    return truth
