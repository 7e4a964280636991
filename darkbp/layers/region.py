"""[region]: YOLOv2's detection head, parsed and tabulated only (darkbp trains classifiers)."""

from __future__ import annotations

from darkbp.layers.base import Layer, register
from darkbp.layers.yolo import channels_error, read_anchors


@register
class RegionLayer(Layer):
    """x: (N, C, H, W) -> the same shape, C = num·(classes + coords + 1): for each anchor,
    `coords` box values, an objectness and `classes` scores.

    Table-only (`trainable` False): the options, the shape rule and Darknet's validations
    (parse_region asserts the channel count), the table line (both Darknets print
    "detection" for it), no parameters. Network.check_runnable refuses to run it.
    """

    sections = ("region",)
    options = frozenset({"coords", "classes", "num", "log", "sqrt", "softmax", "background",
                         "max", "jitter", "rescore", "thresh", "classfix", "absolute",
                         "random", "coord_scale", "object_scale", "noobject_scale",
                         "mask_scale", "class_scale", "bias_match", "tree", "map", "anchors"})
    trainable = False

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
        return cls(source.shape, coords, classes, num, anchors, settings)

    def darknet_line(self):
        return "detection\n"          # make_region_layer's fprintf

    def alexeyab_line(self):
        return "detection\n"          # AlexeyAB's make_region_layer prints the same

    def describe(self):
        return {"coords": self.coords, "classes": self.classes, "num": self.num,
                "anchors": [list(pair) for pair in self.anchors], **self.settings}

    def summary_cells(self):
        return "region", "", f"{self.num} anchors"
