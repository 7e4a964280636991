"""[detection]: YOLOv1's detection head, parsed and tabulated only (darkbp trains classifiers)."""

from __future__ import annotations

from darkbp.layers.base import Layer, register
from darkbp.layers.yolo import source_name


@register
class DetectionLayer(Layer):
    """x: (N, ...) read flat -> (N, side²·((1 + coords)·num + classes), 1, 1), the same values:
    per grid cell the class scores, then each box's confidence, then each box's coordinates.

    Table-only (`trainable` False): the options, the shape rule and Darknet's validation
    (make_detection_layer asserts the input count), the table line, no parameters.
    Network.check_runnable refuses to run it.
    """

    sections = ("detection",)
    options = frozenset({"coords", "classes", "rescore", "num", "side", "softmax", "sqrt",
                         "max", "coord_scale", "forced", "object_scale", "noobject_scale",
                         "class_scale", "jitter", "random", "reorg"})
    trainable = False
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
