"""[region]: YOLOv2's detection head: its forward and its boxes, as pjreddie's Darknet
(forward_region_layer, get_region_detections), and its training delta and loss, which darkbp
passes back as Darknet's GPU path does (pjreddie's CPU backward_region_layer is empty)."""

from __future__ import annotations

import numpy as np

from darkbp.boxes import iou
from darkbp.layers.base import register
from darkbp.layers.head import Head
from darkbp.layers.yolo import channels_error, read_anchors
from darkbp.ops.activations import ACTIVATIONS
from darkbp.ops.detection import Targets, Truth, bce_logits, first_best, last_of_each, sum32
from darkbp.ops.softmax import cross_entropy, softmax_forward
from darkbp.passes import EVAL

F32 = np.float32


@register
class RegionLayer(Head):
    """x: (N, C, H, W) -> the same shape, C = num·(classes + coords + 1): for each anchor,
    `coords` box values, an objectness and `classes` scores.

    Forward is Darknet's: the logistic on x, y and the objectness (none with
    `background`), the classes a softmax (`softmax`) or each a logistic; w, h and any
    coordinates past the fourth stay raw. `boxes` decodes an output as
    get_region_detections does. A `tree` (yolo9000's hierarchical softmax) is tabulated
    only. No parameters; its training (`train_targets`, `cost`) is Darknet's delta and its
    loss, passed back as Darknet's GPU backward does.
    """

    sections = ("region",)
    options = frozenset({"coords", "classes", "num", "log", "sqrt", "softmax", "background",
                         "max", "jitter", "rescore", "thresh", "classfix", "absolute",
                         "random", "coord_scale", "object_scale", "noobject_scale",
                         "mask_scale", "class_scale", "bias_match", "tree", "map", "anchors"})
    def __init__(self, in_shape, coords: int, classes: int, num: int,
                 anchors: tuple[tuple[float, float], ...], settings: dict):
        super().__init__(in_shape, in_shape)
        self.coords, self.classes, self.num, self.anchors = coords, classes, num, anchors
        self.settings = settings        # what Darknet's training reads: softmax, thresh, ...

    @classmethod
    def build(cls, s, inputs):
        source = inputs[0]
        coords = s.get_int("coords", 4, minimum=0)
        classes = s.get_int("classes", 20, minimum=0)
        num = s.get_int("num", 1, minimum=1)
        anchors = read_anchors(s, num)
        need = num * (classes + coords + 1)
        if source.shape[0] != need:
            raise channels_error(s, source, need, f"num={num} x (classes={classes} + "
                                                  f"coords={coords} + 1)")
        settings = {key: s.get_int(key, 0) for key in (
            "log", "sqrt", "softmax", "background", "rescore", "classfix", "absolute",
            "bias_match")}
        settings["max"] = s.get_int("max", 30, minimum=0)
        settings["random"] = s.get_float("random", 0.0)    # pjreddie an int, AlexeyAB a float
        settings.update({key: s.get_float(key, default) for key, default in (
            ("jitter", 0.2), ("thresh", 0.5), ("coord_scale", 1.0), ("object_scale", 1.0),
            ("noobject_scale", 1.0), ("mask_scale", 1.0), ("class_scale", 1.0))})
        # Files Darknet reads (a label tree for a hierarchical softmax, a class map): not
        # opened here, as the summary needs neither.
        settings.update({key: s.get_str(key, "") or None for key in ("tree", "map")})
        layer = cls(source.shape, coords, classes, num, anchors, settings)
        layer.runnable = settings["tree"] is None
        return layer

    def darknet_line(self):
        return "detection\n"          # make_region_layer's fprintf

    def alexeyab_line(self):
        return "detection\n"          # AlexeyAB's make_region_layer prints the same

    def describe(self):
        return {"coords": self.coords, "classes": self.classes, "num": self.num,
                "anchors": [list(pair) for pair in self.anchors], **self.settings}

    def summary_cells(self):
        return "region", "", f"{self.num} anchors"

    # ------------------------------------------------------------------ inference
    def forward(self, x, ctx):
        n = x.shape[0]
        _, h, w = self.in_shape
        entries = self.coords + self.classes + 1
        y = np.array(x, order="C").reshape(n, self.num, entries, h, w)
        logistic = ACTIVATIONS["logistic"].forward
        background = self.settings["background"]
        y[:, :, 0:2] = logistic(y[:, :, 0:2])
        if not background:
            y[:, :, self.coords] = logistic(y[:, :, self.coords])
        first = self.coords + (0 if background else 1)     # the softmax's first entry
        if self.settings["softmax"]:
            # one softmax per anchor and cell over classes (+ background), Darknet's strides
            scores = y[:, :, first:].transpose(0, 1, 3, 4, 2).reshape(-1, entries - first)
            y[:, :, first:] = softmax_forward(scores).reshape(
                n, self.num, h, w, entries - first).transpose(0, 1, 4, 2, 3)
        else:
            y[:, :, self.coords + 1:] = logistic(y[:, :, self.coords + 1:])
        self.remember(x, y, ctx)
        return y.reshape(n, *self.out_shape)

    def _entries(self, y: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, A, E, H, W): anchor, entry, row, column."""
        _, h, w = self.in_shape
        return np.asarray(y).reshape(-1, self.num, self.coords + self.classes + 1, h, w)

    def _pred_boxes(self, y: np.ndarray) -> np.ndarray:
        """get_region_box of every prediction: (N, A, E, H, W) -> (N, A, H, W, 4) relative to
        the network input, the anchors in grid cells."""
        _, h, w = self.in_shape
        anchors = np.array(self.anchors, F32)
        with np.errstate(over="ignore"):
            return np.stack([
                (np.arange(w, dtype=F32) + y[:, :, 0]) / F32(w),
                (np.arange(h, dtype=F32)[:, None] + y[:, :, 1]) / F32(h),
                (np.exp(y[:, :, 2].astype(np.float64)) * anchors[:, 0, None, None] / w
                 ).astype(F32),
                (np.exp(y[:, :, 3].astype(np.float64)) * anchors[:, 1, None, None] / h
                 ).astype(F32),
            ], axis=-1)

    def boxes(self, y: np.ndarray, thresh: float, hier: float, netw: int, neth: int):
        """The detections of forward outputs y (N, C, H, W), as get_region_detections
        lists them: per image (boxes (k, 4) relative to the network input, objectness
        (k,), probabilities (k, classes)) for every anchor of every cell, anchor-major
        (k = num·H·W). Objectness is 0 unless above `thresh`; a probability is
        objectness·class score, 0 unless above `thresh`. Anchors are in grid cells.
        (`hier` serves only a `tree`, which darkbp does not run.)"""
        y = self._entries(np.asarray(y, F32))
        n, _, e = y.shape[:3]
        # (N, A, ..., H, W) -> (N, A·H·W, ...): anchor-major, cells row-major
        boxes = self._pred_boxes(y).reshape(n, -1, 4)
        scores = y.reshape(n, self.num, e, -1).transpose(0, 1, 3, 2).reshape(n, -1, e)
        found = []
        for box, p in zip(boxes, scores):
            scale = np.ones(len(p), F32) if self.settings["background"] else p[:, self.coords]
            objectness = np.where(scale > F32(thresh), scale, F32(0))
            probs = scale[:, None] * p[:, self.coords + 1:]
            probs = np.where((probs > F32(thresh)) & (objectness[:, None] != 0), probs, F32(0))
            found.append((box, objectness, probs))
        return found

    # ------------------------------------------------------------------ training
    def train_targets(self, y: np.ndarray, truth: Truth) -> Targets:
        """forward_region_layer's training part (no tree, coords = 4) for outputs y
        (N, C, H, W): the delta, each entry's scale and target in `cost`'s loss, the
        statistics. Every prediction: objectness towards 0 (noobject_scale) unless its best
        IoU with a truth is above `thresh`, and while seen < 12800 a pull of .01 towards its
        anchor at the cell's centre. Every truth (the first 30): the best of the anchors of
        its cell by shape (bias_match) or by predicted box, its box (coord_scale·(2 − w·h)),
        objectness 1 (rescore: the IoU; background: 0, object_scale) and class
        (class_scale)."""
        st = self.settings
        y = self._entries(y)
        n, a, e, h, w = y.shape
        valid = truth.valid[:, :30]
        boxes = truth.boxes[:, :valid.shape[1]]
        s = np.zeros_like(y)
        t = np.zeros_like(y)
        obj = y[:, :, self.coords]

        pred = self._pred_boxes(y)
        best_iou, _ = first_best(iou(pred[:, :, :, :, None], boxes[:, None, None, None, :, :4]),
                                 valid[:, None, None, None])
        t[:, :, self.coords] = F32(1 if st["background"] else 0)
        s[:, :, self.coords] = np.where(best_iou > F32(st["thresh"]), F32(0),
                                        F32(st["noobject_scale"]))
        if truth.seen < 12800:
            # truth = ((i + .5)/w, (j + .5)/h, anchor/w, anchor/h): tx = truth.x·w − i in float
            anchors = np.array(self.anchors, F32)
            cx = ((np.arange(w) + .5) / w).astype(F32) * F32(w) - np.arange(w, dtype=F32)
            cy = ((np.arange(h) + .5) / h).astype(F32) * F32(h) - np.arange(h, dtype=F32)
            shape = np.log(anchors / F32(w) * F32(w) / anchors)
            t[:, :, 0], t[:, :, 1] = cx, cy[:, None]
            t[:, :, 2], t[:, :, 3] = shape[:, 0, None, None], shape[:, 1, None, None]
            s[:, :, 0:4] = F32(.01)

        b_idx, t_idx = np.nonzero(valid)
        tb = boxes[b_idx, t_idx]
        i = np.minimum((tb[:, 0] * F32(w)).astype(np.int64), w - 1)
        j = np.minimum((tb[:, 1] * F32(h)).astype(np.int64), h - 1)
        shapes = (np.array(self.anchors, F32) / np.array([w, h], F32))[None].repeat(len(tb), 0)
        if not st["bias_match"]:
            shapes = pred[b_idx, :, j, i, 2:4]
        centred = np.concatenate([np.zeros_like(shapes), shapes], axis=2)
        truth_shift = np.concatenate([np.zeros((len(tb), 2), F32), tb[:, 2:4]], axis=1)
        _, best_n = first_best(iou(centred, truth_shift[:, None]), np.ones(centred.shape[:2], bool))
        found_iou = iou(pred[b_idx, best_n, j, i], tb[:, :4])
        last = last_of_each(np.stack([b_idx, best_n, j, i], axis=1))
        lb, ln, lj, li, box = b_idx[last], best_n[last], j[last], i[last], tb[last]
        anchor = np.array(self.anchors, F32)[ln]
        targets = np.stack([box[:, 0] * F32(w) - li.astype(F32), box[:, 1] * F32(h) - lj.astype(F32),
                            np.log(box[:, 2] * F32(w) / anchor[:, 0]),
                            np.log(box[:, 3] * F32(h) / anchor[:, 1])], axis=1).astype(F32)
        for k in range(4):
            t[lb, ln, k, lj, li] = targets[:, k]
            s[lb, ln, k, lj, li] = F32(st["coord_scale"]) * (F32(2) - box[:, 2] * box[:, 3])
        # objectness: the last truth of a cell sets it
        target_obj = (np.zeros(len(last), F32) if st["background"] else
                      found_iou[last] if st["rescore"] else np.ones(len(last), F32))
        t[lb, ln, self.coords, lj, li] = target_obj
        s[lb, ln, self.coords, lj, li] = F32(st["object_scale"])
        classes = tb[:, 4].astype(np.int64)
        first = self.coords + 1
        if st["softmax"]:       # every truth rewrites the one-hot: the last stays
            t[lb, ln, first:, lj, li] = 0
            t[lb, ln, first + classes[last], lj, li] = 1
            counted = np.ones(len(tb), bool)
        else:                   # a later truth of the cell adds its class (Darknet's tag)
            t[b_idx, best_n, first + classes, j, i] = 1
            counted = np.isin(np.arange(len(tb)), _first_of_each(
                np.stack([b_idx, best_n, j, i], axis=1)))
        s[lb, ln, first:, lj, li] = F32(st["class_scale"])
        delta = s * (t - y)

        stats = {
            "iou": sum32(found_iou), "obj": sum32(obj[b_idx, best_n, j, i]),
            "class": sum32(y[b_idx, best_n, first + classes, j, i][counted]),
            "no_obj": sum32(obj.transpose(0, 2, 3, 1)), "predictions": obj.size,
            "recall50": int((found_iou > F32(.5)).sum()), "count": len(tb),
        }
        return Targets(truth, delta, s, t, stats)

    def cost(self, truth: Truth) -> np.ndarray:
        """Per image (N,), the loss whose negative gradient is the delta as Darknet's GPU
        backward passes it (its CPU backward passes nothing): ½·s·(t − σ(z))² on x, y and the
        objectness (t the IoU with rescore, held fixed), ½·s·(t − z)² on w and h, and on the
        classes s·cross-entropy of the softmax (`softmax`) or s·BCE of each logistic."""
        return self.loss(self._x, self.assign(truth))

    def loss(self, x: np.ndarray, found: Targets) -> np.ndarray:
        """`cost` at the input x (N, C, H, W), the targets held fixed (gradcheck's)."""
        z = np.ascontiguousarray(self._entries(x))   # as the targets (a CHWN conv's output
                                                     # would make every pass below strided)
        y = self._entries(self.forward(x, EVAL))
        s, t = found.scale, found.target
        terms = s * (t - y) ** 2 / 2
        terms[:, :, 2:4] = s[:, :, 2:4] * (t[:, :, 2:4] - z[:, :, 2:4]) ** 2 / 2
        first = self.coords + 1
        if self.settings["background"]:     # the objectness slot is the softmax's first entry
            terms[:, :, self.coords] = 0
            first = self.coords
        if self.settings["softmax"]:
            cls_s = s[:, :, first:].max(axis=2)
            p = y[:, :, first:].transpose(0, 1, 3, 4, 2).reshape(-1, y.shape[2] - first)
            target = t[:, :, first:].transpose(0, 1, 3, 4, 2).reshape(p.shape)
            ce = cross_entropy(p, target).reshape(cls_s.shape)
            terms[:, :, first:] = 0
            terms[:, :, first] = cls_s * ce
        else:
            terms[:, :, first:] = s[:, :, first:] * bce_logits(t[:, :, first:], z[:, :, first:])
        return terms.reshape(len(z), -1).sum(axis=1)

    def input_grad(self, truth: Truth) -> np.ndarray:
        """−delta, through the logistic's derivative on x, y and the objectness (as Darknet's
        backward_region_layer_gpu); classes and w, h as the delta."""
        y = self._entries(self._y)
        grad = -self.assign(truth).delta
        squashed = [0, 1] + ([] if self.settings["background"] else [self.coords])
        grad[:, :, squashed] *= y[:, :, squashed] * (1 - y[:, :, squashed])
        return grad.reshape(-1, *self.in_shape)

    def stats_means(self, stats: dict) -> dict[str, float]:
        count = stats["count"]
        with np.errstate(divide="ignore", invalid="ignore"):
            return {"Avg IOU": F32(stats["iou"]) / F32(count),
                    "Class": F32(stats["class"]) / F32(count),
                    "Obj": F32(stats["obj"]) / F32(count),
                    "No Obj": F32(stats["no_obj"]) / F32(stats["predictions"]),
                    "Avg Recall": F32(stats["recall50"]) / F32(count), "count": count}

    def stats_line(self, stats: dict) -> str:
        """forward_region_layer's line, from `statistics`."""
        return ("Region Avg IOU: %f, Class: %f, Obj: %f, No Obj: %f, Avg Recall: %f,  "
                "count: %d" % tuple(self.stats_means(stats).values()))

    def training_refusal(self):
        st = self.settings
        unsupported = [f"{key}={st[key]}" for key in ("background", "map") if st[key]]
        if self.coords != 4:
            unsupported.append(f"coords={self.coords}")
        if unsupported:
            return (f"{', '.join(unsupported)}: darkbp trains the [region] of coords=4 "
                    "without background or a class map")
        return None

    def to_onnx(self, graph, inputs):
        entries = self.coords + self.classes + 1
        background, softmax = self.settings["background"], self.settings["softmax"]
        logistic = np.zeros(entries, bool)
        logistic[0:2] = True
        logistic[self.coords] = not background
        logistic[self.coords + 1:] = not softmax
        if not softmax:
            return graph.logistic_on(inputs[0], np.tile(logistic, self.num),
                                     graph.head_output(self))
        y = graph.logistic_on(inputs[0], np.tile(logistic, self.num))
        first = self.coords + (0 if background else 1)     # the softmax's first entry
        _, h, w = self.in_shape
        y = graph.reshape(y, [-1, entries, h, w])            # (N·num, entries, H, W)
        scores = graph.node("Softmax", [graph.slice(y, [1], [first], [entries])], axis=1)
        y = graph.node("Concat", [graph.slice(y, [1], [0], [first]), scores], axis=1)
        return graph.reshape(y, [-1, *self.out_shape], graph.head_output(self))


def _first_of_each(keys: np.ndarray) -> np.ndarray:
    """Indexes of the first occurrence of each distinct row of `keys` (k, m)."""
    if not len(keys):
        return np.zeros(0, np.int64)
    return np.unique(keys, axis=0, return_index=True)[1]
