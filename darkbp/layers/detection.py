"""[detection]: YOLOv1's detection head: its forward and its boxes, as pjreddie's Darknet
(forward_detection_layer, get_detection_detections). darkbp does not train it yet."""

from __future__ import annotations

import numpy as np

from darkbp.layers.base import Layer, register
from darkbp.layers.yolo import source_name
from darkbp.ops.softmax import softmax_forward

F32 = np.float32


@register
class DetectionLayer(Layer):
    """x: (N, ...) read flat -> (N, side²·((1 + coords)·num + classes), 1, 1), the same values:
    per grid cell the class scores, then each box's confidence, then each box's coordinates.

    Forward is Darknet's: the input unchanged, or with `softmax` a softmax over each
    cell's class scores. `boxes` decodes an output as get_detection_detections does. No
    parameters; not trainable yet.
    """

    sections = ("detection",)
    options = frozenset({"coords", "classes", "rescore", "num", "side", "softmax", "sqrt",
                         "max", "coord_scale", "forced", "object_scale", "noobject_scale",
                         "class_scale", "jitter", "random", "reorg"})
    trainable = False
    detects = True
    flat = True                       # Darknet leaves out_w, out_h and out_c at 0

    def __init__(self, in_shape, coords: int, classes: int, num: int, side: int,
                 settings: dict):
        c, h, w = in_shape
        super().__init__(in_shape, (c * h * w, 1, 1))
        self.coords, self.classes, self.num, self.side = coords, classes, num, side
        self.settings = settings        # what Darknet's training reads: rescore, sqrt, ...

    @classmethod
    def build(cls, s, inputs):
        source = inputs[0]
        coords = s.get_int("coords", 1, minimum=0)
        classes = s.get_int("classes", 1, minimum=0)
        num = s.get_int("num", 1, minimum=1)
        side = s.get_int("side", 7, minimum=1)
        need = side * side * ((1 + coords) * num + classes)
        c, h, w = source.shape
        if c * h * w != need:
            raise s.error(f"reads side²·((1 + coords)·num + classes) = "
                          f"{side}²·((1 + {coords})·{num} + {classes}) = {need} inputs, but "
                          f"{source_name(source)} gives {c * h * w} ({w} x {h} x {c})")
        settings = {key: s.get_int(key, 0) for key in ("rescore", "softmax", "sqrt", "forced",
                                                       "reorg")}
        settings["max"] = s.get_int("max", 90, minimum=0)
        settings["random"] = s.get_float("random", 0.0)    # pjreddie an int, AlexeyAB a float
        settings.update({key: s.get_float(key, default) for key, default in (
            ("coord_scale", 1.0), ("object_scale", 1.0), ("noobject_scale", 1.0),
            ("class_scale", 1.0), ("jitter", 0.2))})
        return cls(source.shape, coords, classes, num, side, settings)

    def darknet_line(self):
        return "Detection Layer\n"    # make_detection_layer's fprintf

    def alexeyab_line(self):
        return "Detection Layer\n"    # AlexeyAB's make_detection_layer prints the same

    def alexeyab_size(self, sizes):
        return self.side, self.side   # make_detection_layer sets l.w = l.h = side

    def describe(self):
        return {"coords": self.coords, "classes": self.classes, "num": self.num,
                "side": self.side, **self.settings}

    def summary_cells(self):
        return "detection", "", f"{self.side} x {self.side} x {self.num}"

    # ------------------------------------------------------------------ inference
    def forward(self, x, ctx):
        n = x.shape[0]
        y = np.array(x, order="C").reshape(n, self.outputs)
        if self.settings["softmax"]:
            cells = self.side * self.side * self.classes
            y[:, :cells] = softmax_forward(y[:, :cells].reshape(-1, self.classes)).reshape(
                n, cells)
        return y.reshape(n, *self.out_shape)

    def boxes(self, y: np.ndarray, thresh: float, hier: float, netw: int, neth: int):
        """The detections of forward outputs y (N, outputs, 1, 1), as
        get_detection_detections lists them: per image (boxes (k, 4) relative to the
        network input, objectness (k,), probabilities (k, classes)) for every box of every
        cell, cell-major (k = side²·num). The objectness is the raw confidence; a
        probability is confidence·class score, 0 unless above `thresh`. With `sqrt` the
        predicted w and h are squared. (Darknet scales these boxes to the image's pixels
        although its callers take them as relative: darkbp keeps them relative.)"""
        n = y.shape[0]
        s2, num, classes = self.side * self.side, self.num, self.classes
        flat = np.asarray(y, F32).reshape(n, self.outputs)
        scores = flat[:, :s2 * classes].reshape(n, s2, 1, classes)
        confidence = flat[:, s2 * classes:s2 * (classes + num)].reshape(n, s2 * num)
        coords = flat[:, s2 * (classes + num):].reshape(n, s2 * num, 4)
        cell = np.arange(s2 * num) // num
        col, row = (cell % self.side).astype(F32), (cell // self.side).astype(F32)
        power = 2 if self.settings["sqrt"] else 1
        found = []
        for image in range(n):
            c = coords[image]
            box = np.stack([(c[:, 0] + col) / F32(self.side), (c[:, 1] + row) / F32(self.side),
                            c[:, 2] ** power, c[:, 3] ** power], axis=1).astype(F32)
            objectness = confidence[image]
            probs = (objectness.reshape(s2, num, 1) * scores[image]).reshape(s2 * num, classes)
            found.append((box, objectness, np.where(probs > F32(thresh), probs, F32(0))))
        return found

    def to_onnx(self, graph, inputs):
        shape = [0, *self.out_shape]                         # (N, outputs, 1, 1)
        if not self.settings["softmax"]:
            return graph.reshape(inputs[0], shape, graph.head_output(self))
        cells = self.side * self.side * self.classes
        y = graph.flatten(inputs[0])                          # (N, outputs), read flat
        scores = graph.reshape(graph.slice(y, [1], [0], [cells]), [0, -1, self.classes])
        scores = graph.reshape(graph.node("Softmax", [scores], axis=2), [0, cells])
        y = graph.node("Concat", [scores, graph.slice(y, [1], [cells], [self.outputs])], axis=1)
        return graph.reshape(y, shape, graph.head_output(self))
