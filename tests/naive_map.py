"""A slow, loop-by-loop reference of AlexeyAB's `detector map` (validate_detector_map with
map_points=0), for tests only: darkbp.mapeval must give the same numbers.

Written from the algorithm, not from mapeval: each detection looks at every truth in turn;
the ranking is Python's stable sorted(); precision and recall are tabulated for every class
at every rank of the whole set, and the AP walks that table backwards, adding the area left
below the first rank, as AlexeyAB's C does.
"""

from __future__ import annotations

import numpy as np

from darkbp.boxes import iou

F32 = np.float32


def naive_map(images, classes: int, iou_thresh: float = 0.5, conf_thresh: float = 0.25):
    """images: [(det boxes (n, 4), det classes (n,), det probs (n,), truth boxes (m, 4),
    truth classes (m,)), ...]. Returns {"ap": [per class], "map": float, "tp": [...],
    "fp": [...], "truths": [...], "iou_sum": float}."""
    collected = []                       # [prob, class, global truth index or -1]
    truths = [0] * classes
    tp, fp = [0] * classes, [0] * classes
    iou_sum = F32(0)
    seen = 0
    for boxes, ids, probs, truth_boxes, truth_ids in images:
        start = len(collected)
        for i in range(len(probs)):
            best, best_iou = -1, F32(0)
            for j in range(len(truth_ids)):
                value = F32(iou(np.asarray(boxes[i], F32), np.asarray(truth_boxes[j], F32)))
                if int(truth_ids[j]) == int(ids[i]) and value > F32(iou_thresh) \
                        and value > best_iou:
                    best, best_iou = seen + j, value
            if F32(probs[i]) > F32(conf_thresh):
                earlier = False
                for z in range(start, len(collected)):
                    if collected[z][2] == best:
                        earlier = True
                if best >= 0 and not earlier:
                    tp[int(ids[i])] += 1
                    iou_sum += best_iou
                else:
                    fp[int(ids[i])] += 1
            collected.append([F32(probs[i]), int(ids[i]), best])
        for k in truth_ids:
            truths[int(k)] += 1
        seen += len(truth_ids)

    ranked = sorted(collected, key=lambda d: -d[0])
    taken = set()
    hits = [[0, 0] for _ in range(classes)]           # running (tp, fp) per class
    table = []                                        # per rank: [(precision, recall)] per class
    for prob, k, best in ranked:
        if best >= 0 and best not in taken:
            taken.add(best)
            hits[k][0] += 1
        else:
            hits[k][1] += 1
        row = []
        for c in range(classes):
            t, f = hits[c]
            precision = t / (t + f) if t + f else 0.0
            recall = t / truths[c] if truths[c] else 0.0
            row.append((precision, recall))
        table.append(row)

    ap = []
    for c in range(classes):
        area = 0.0
        if table:
            precision, recall = table[-1][c]
            for rank in range(len(table) - 2, -1, -1):
                delta = recall - table[rank][c][1]
                recall = table[rank][c][1]
                precision = max(precision, table[rank][c][0])
                area += delta * precision
            area += recall * precision                # below the first rank
        ap.append(area)
    return {"ap": ap, "map": sum(ap) / classes, "tp": tp, "fp": fp, "truths": truths,
            "iou_sum": float(iou_sum)}
