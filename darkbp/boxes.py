"""Box maths as Darknet does it: IoU, the letterbox correction, NMS. Pure NumPy.

A box is (x, y, w, h): its centre and size, as Darknet's `box` holds it, float32,
relative to an image (0..1) unless said otherwise. Arrays of boxes are (..., 4).

    iou(a, b)                               # Darknet's box_iou, broadcast: (...,)
    correct_boxes(boxes, 768, 576, 416, 416)  # undo letterbox_image: relative to the photo
    order, probs = nms_sort(boxes, objectness, probs, 0.45)   # Darknet's do_nms_sort

Every detection head's decode, `darkbp detect`, `darkbp map` and training use these; none
computes an IoU of its own. The arithmetic follows Darknet's C (float32 where it uses
float, float64 where it uses double), so that results equal Darknet's to float32 rounding
and a tie in NMS breaks the same way.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32


def corners(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) centre form -> (..., 4) (left, top, right, bottom), float32 as Darknet."""
    b = np.asarray(boxes, F32)
    half_w, half_h = b[..., 2] / F32(2), b[..., 3] / F32(2)
    return np.stack([b[..., 0] - half_w, b[..., 1] - half_h,
                     b[..., 0] + half_w, b[..., 1] + half_h], axis=-1)


def intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Darknet's box_intersection of (..., 4) boxes, broadcast: 0 where they do not overlap
    (a negative width or height), float32; an area past float32's range is inf, as in C."""
    ca, cb = corners(a), corners(b)
    with np.errstate(invalid="ignore", over="ignore"):
        # overlap(): the larger left edge and the smaller right one, by C's ?: (NaN-safe as C)
        left = np.where(ca[..., 0] > cb[..., 0], ca[..., 0], cb[..., 0])
        right = np.where(ca[..., 2] < cb[..., 2], ca[..., 2], cb[..., 2])
        top = np.where(ca[..., 1] > cb[..., 1], ca[..., 1], cb[..., 1])
        bottom = np.where(ca[..., 3] < cb[..., 3], ca[..., 3], cb[..., 3])
        w, h = right - left, bottom - top
        return np.where((w < 0) | (h < 0), F32(0), w * h)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Darknet's box_iou of (..., 4) boxes, broadcast: intersection / union, float32.

    Two empty boxes give NaN (0/0), as in Darknet, and NaN > t is false wherever Darknet
    compares it."""
    a, b = np.asarray(a, F32), np.asarray(b, F32)
    i = intersection(a, b)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - i
        return i / union


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4) and (m, 4) boxes -> (n, m) IoUs (Darknet's box_iou of every pair)."""
    return iou(np.asarray(a, F32)[:, None, :], np.asarray(b, F32)[None, :, :])


def letterbox_shape(w: int, h: int, netw: int, neth: int) -> tuple[int, int]:
    """The size (new_w, new_h) a w x h image takes inside a netw x neth letterbox: the side
    that fills is chosen by a float32 comparison, the other is C's integer division (as
    letterbox_image, correct_yolo_boxes and correct_region_boxes compute it)."""
    if F32(netw) / F32(w) < F32(neth) / F32(h):
        return netw, h * netw // w
    return w * neth // h, neth


def correct_boxes(boxes: np.ndarray, w: int, h: int, netw: int, neth: int) -> np.ndarray:
    """Boxes relative to the netw x neth letterboxed input -> relative to the w x h image
    (Darknet's correct_yolo_boxes and correct_region_boxes with relative=1): the grey
    border taken off and the scale undone. No clipping: a box may reach past the image.
    (..., 4) float32 -> (..., 4) float32."""
    new_w, new_h = letterbox_shape(w, h, netw, neth)
    b = np.asarray(boxes, F32)
    out = np.empty_like(b)
    # b.x = (b.x - (netw - new_w)/2./netw) / ((float)new_w/netw): a double expression with a
    # float quotient inside, stored in a float.
    out[..., 0] = ((b[..., 0].astype(np.float64) - (netw - new_w) / 2.0 / netw)
                   / np.float64(F32(new_w) / F32(netw)))
    out[..., 1] = ((b[..., 1].astype(np.float64) - (neth - new_h) / 2.0 / neth)
                   / np.float64(F32(new_h) / F32(neth)))
    with np.errstate(over="ignore", invalid="ignore"):
        out[..., 2] = b[..., 2] * (F32(netw) / F32(new_w))
        out[..., 3] = b[..., 3] * (F32(neth) / F32(new_h))
    return out


def _shared_overlaps(box: np.ndarray, probs: np.ndarray, live: np.ndarray, nms: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """For nms_sort with box_iou: (IoU > nms of every pair of the live detections with a
    nonzero probability of some class, each input's place in that matrix, whether each of
    them overlaps another), when the one matrix has fewer pairs than the classes' own
    matrices together (an untrained network's thousands of boxes are live in every class);
    else None. Its IoUs are the classes' matrices', pair for pair and in the same order (a
    box before the other), for box_iou is elementwise."""
    nonzero = probs[live] != 0
    counts = nonzero.sum(axis=0)
    shared = live[nonzero.any(axis=1)]
    if len(shared) ** 2 >= int((counts[counts > 1].astype(np.int64) ** 2).sum()):
        return None
    place = np.zeros(len(probs), np.intp)
    place[shared] = np.arange(len(shared))
    matrix = iou_matrix(box[shared], box[shared]) > F32(nms)
    overlapping = (matrix & ~np.eye(len(shared), dtype=bool)).any(axis=1)
    return matrix, place, overlapping


def nms_sort(boxes: np.ndarray, objectness: np.ndarray, probs: np.ndarray, nms: float,
             overlap=None) -> tuple[np.ndarray, np.ndarray]:
    """Darknet's do_nms_sort: (the order Darknet leaves the detections in, their
    probabilities after NMS). `overlap(a, b)` in place of `iou`: AlexeyAB's diounms_sort
    (the same loops, its DIoU for nms_kind=greedynms or diounms; [yolo] nms_overlap).

    boxes (n, 4), objectness (n,), probs (n, classes) float32. First the detections with
    objectness 0 are swapped to the end, one by one, as Darknet's loop does (this moves
    others). Then, class by class, the array is sorted by that class's probability, highest
    first, stably (glibc's qsort is a merge sort here, so ties keep the previous order),
    and each detection with a nonzero probability zeroes that class's probability of every
    later one whose IoU with it is above `nms`. Nothing is removed; objectness is left
    alone. The order is the permutation of the n inputs: order[i] is the input at place i.
    """
    probs = np.array(probs, F32, copy=True)
    n, classes = probs.shape
    order = np.arange(n)
    zero = np.asarray(objectness) == 0
    k = n - 1
    i = 0
    while i <= k:                       # the swap loop, as written in C
        if zero[order[i]]:
            order[i], order[k] = order[k], order[i]
            k -= 1
        else:
            i += 1
    total = k + 1
    live = order[:total]
    box = np.asarray(boxes, F32)
    above = _shared_overlaps(box, probs, live, nms) if overlap is None else None
    for c in range(classes):
        p = probs[live, c]
        # C's comparator: a before b when a.prob - b.prob > 0 (NaN differences count as ties).
        live = live[np.argsort(-p, kind="stable")]
        p = probs[live, c]
        keep = np.flatnonzero(p != 0)
        if len(keep) < 2:
            continue
        if above is not None:
            matrix, place, overlapping = above
            at = place[live[keep]]
            rows = np.flatnonzero(overlapping[at])
            overlaps = matrix[at[rows, None], at]                 # (rows, keep)
        else:
            kept = box[live[keep]]
            overlaps = (iou_matrix(kept, kept) if overlap is None
                        else overlap(kept[:, None, :], kept[None, :, :])) > F32(nms)
            rows = np.flatnonzero(np.triu(overlaps, 1).any(axis=1))
            overlaps = overlaps[rows]
        alive = np.ones(len(keep), bool)
        for row, a in enumerate(rows):  # greedy: only a surviving box that overlaps suppresses
            if alive[a]:
                alive[a + 1:] &= ~overlaps[row, a + 1:]
        probs[live[keep[~alive]], c] = 0
    return np.concatenate([live, order[total:]]), probs
