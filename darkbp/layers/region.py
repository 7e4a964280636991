"""[region]: YOLOv2's detection head: its forward and its boxes, as pjreddie's Darknet
(forward_region_layer, get_region_detections). darkbp does not train it yet."""

from __future__ import annotations

import numpy as np

from darkbp.layers.base import Layer, register
from darkbp.layers.yolo import channels_error, read_anchors
from darkbp.ops.activations import ACTIVATIONS
from darkbp.ops.softmax import softmax_forward

F32 = np.float32


@register
class RegionLayer(Layer):
    """x: (N, C, H, W) -> the same shape, C = num·(classes + coords + 1): for each anchor,
    `coords` box values, an objectness and `classes` scores.

    Forward is Darknet's: the logistic on x, y and the objectness (none with
    `background`), the classes a softmax (`softmax`) or each a logistic; w, h and any
    coordinates past the fourth stay raw. `boxes` decodes an output as
    get_region_detections does. A `tree` (yolo9000's hierarchical softmax) is tabulated
    only. No parameters; not trainable yet.
    """

    sections = ("region",)
    options = frozenset({"coords", "classes", "num", "log", "sqrt", "softmax", "background",
                         "max", "jitter", "rescore", "thresh", "classfix", "absolute",
                         "random", "coord_scale", "object_scale", "noobject_scale",
                         "mask_scale", "class_scale", "bias_match", "tree", "map", "anchors"})
    trainable = False
    detects = True

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
        return y.reshape(n, *self.out_shape)

    def boxes(self, y: np.ndarray, thresh: float, hier: float, netw: int, neth: int):
        """The detections of forward outputs y (N, C, H, W), as get_region_detections
        lists them: per image (boxes (k, 4) relative to the network input, objectness
        (k,), probabilities (k, classes)) for every anchor of every cell, anchor-major
        (k = num·H·W). Objectness is 0 unless above `thresh`; a probability is
        objectness·class score, 0 unless above `thresh`. Anchors are in grid cells.
        (`hier` serves only a `tree`, which darkbp does not run.)"""
        n = y.shape[0]
        _, h, w = self.in_shape
        entries = self.coords + self.classes + 1
        # (N, A, E, H, W) -> (N, A·H·W, E): anchor-major, cells row-major
        rows = np.asarray(y, F32).reshape(n, self.num, entries, h * w)
        rows = rows.transpose(0, 1, 3, 2).reshape(n, self.num * h * w, entries)
        cell = np.arange(self.num * h * w) % (h * w)
        col, row = (cell % w).astype(F32), (cell // w).astype(F32)
        anchors = np.array(self.anchors, F32)[np.arange(self.num * h * w) // (h * w)]
        found = []
        for p in rows:
            with np.errstate(over="ignore"):
                box = np.stack([
                    (col + p[:, 0]) / F32(w), (row + p[:, 1]) / F32(h),
                    np.exp(p[:, 2].astype(np.float64)) * anchors[:, 0] / w,
                    np.exp(p[:, 3].astype(np.float64)) * anchors[:, 1] / h,
                ], axis=1).astype(F32)
            scale = (np.ones(len(p), F32) if self.settings["background"]
                     else p[:, self.coords])
            objectness = np.where(scale > F32(thresh), scale, F32(0))
            probs = scale[:, None] * p[:, self.coords + 1:]
            probs = np.where((probs > F32(thresh)) & (objectness[:, None] != 0), probs, F32(0))
            found.append((box, objectness, probs))
        return found

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
