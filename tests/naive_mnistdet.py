"""A slow, obviously-correct mnist-det, written from darkbp/mnistdet.py's module doc (its
order of random draws) and issue 22's specification, used only by tests: pixel by pixel,
box by box, with the IoU as a plain division. It shares no code with darkbp/mnistdet.py."""

from __future__ import annotations

import numpy as np
from PIL import Image


def naive_split(rng, pool, pool_labels, count):
    """[(pixels (128, 128, 3) uint8, label file text, digit indices)] of one split."""
    order = rng.permutation(len(pool))
    next_digit = 0
    images = []
    for _ in range(count):
        grey = rng.integers(0, 65)
        noise = rng.normal(0.0, 8.0, size=(128, 128))
        canvas = np.zeros((128, 128, 3), np.uint8)
        for row in range(128):
            for col in range(128):
                canvas[row, col, :] = min(255, max(0, round(float(grey + noise[row, col]))))
        boxes, lines, used = [], [], []
        for _ in range(rng.integers(1, 5)):
            while True:
                index = order[next_digit]
                next_digit += 1
                side = rng.integers(16, 49)
                scaled = np.asarray(Image.fromarray(pool[index]).resize((int(side), int(side)),
                                                                        Image.BILINEAR))
                bright = [(r, c) for r in range(side) for c in range(side) if scaled[r, c] > 32]
                if bright:
                    break
            top = min(r for r, _ in bright)
            bottom = max(r for r, _ in bright) + 1
            left = min(c for _, c in bright)
            right = max(c for _, c in bright) + 1
            colour = rng.integers(128, 256, size=3)
            for _ in range(50):
                x = rng.integers(0, 128 - side + 1)
                y = rng.integers(0, 128 - side + 1)
                box = (left + x, top + y, right + x, bottom + y)
                if all(iou(box, earlier) <= 0.1 for earlier in boxes):
                    for r in range(side):
                        for c in range(side):
                            for k in range(3):
                                ink = round(int(colour[k]) * int(scaled[r, c]) / 255)
                                canvas[y + r, x + c, k] = max(canvas[y + r, x + c, k], ink)
                    boxes.append(box)
                    used.append(int(index))
                    l, t, rt, b = box
                    lines.append("%d %.6f %.6f %.6f %.6f\n" % (
                        pool_labels[index], (l + rt) / 2 / 128, (t + b) / 2 / 128,
                        (rt - l) / 128, (b - t) / 128))
                    break
        images.append((canvas, "".join(lines), used))
    return images


def iou(a, b) -> float:
    """IoU of two (left, top, right, bottom) boxes in pixels."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
