"""[Gaussian_yolo]: AlexeyAB's Gaussian YOLOv3 head, tabulated only.

Gaussian YOLOv3 (Choi et al., 2019) predicts, for each anchor of the mask, a mean and an
uncertainty for each of the 4 box coordinates, an objectness and `classes` scores: 8 + 1 +
classes planes per anchor where [yolo] has 5 + classes. AlexeyAB's parser knows the section
only under this spelling (string_to_layer_type compares "[Gaussian_yolo]" exactly);
pjreddie's Darknet has no such layer. darkbp parses it, checks its input and prints
AlexeyAB's table line; it does not run or train it.
"""

from __future__ import annotations

from darkbp.layers.base import Layer, register
from darkbp.layers.yolo import channels_error, printed_loss_settings, read_anchors

# AlexeyAB's YOLO_POINT enum (yolo_point=): the table prints its value; any other name is center.
YOLO_POINT = {"center": 1, "left_top": 2, "right_bottom": 4}


@register
class GaussianYoloLayer(Layer):
    """x: (N, C, H, W) -> the same shape, C = len(mask)·(classes + 9). Tabulated only."""

    sections = ("Gaussian_yolo",)
    options = frozenset({"classes", "num", "mask", "anchors", "iou_loss", "iou_normalizer",
                         "obj_normalizer", "cls_normalizer", "delta_normalizer", "scale_x_y",
                         "yolo_point"})
    # What parse_gaussian_yolo also reads, for training and detection only.
    ignored = Layer.ignored | {"max", "max_delta", "counters_per_class", "label_smooth_eps",
                               "objectness_smooth", "uc_normalizer", "iou_thresh_kind",
                               "beta_nms", "nms_kind", "jitter", "resize", "ignore_thresh",
                               "truth_thresh", "iou_thresh", "random", "map"}
    runnable = trainable = False       # darkbp only tabulates this head
    fork_rule = "AlexeyAB's fork's only (pjreddie's Darknet has no such layer)"

    def __init__(self, in_shape, classes: int, num: int, mask: tuple[int, ...],
                 anchors: tuple[tuple[float, float], ...], alexeyab: dict):
        super().__init__(in_shape, in_shape)
        self.classes, self.num, self.mask, self.anchors = classes, num, mask, anchors
        self.alexeyab = alexeyab        # the loss settings its table line prints

    @classmethod
    def build(cls, s, inputs):
        source = inputs[0]
        classes = s.get_int("classes", 20, minimum=0)
        num = s.get_int("num", 1, minimum=1)
        mask = s.get_ints("mask") or tuple(range(num))    # no mask: every anchor
        for index in mask:
            if not 0 <= index < num:
                raise s.error(f"mask entry {index} is not one of the num={num} anchors "
                              f"(0 to {num - 1}): Darknet would read past its anchors",
                              s.line_of("mask"))
        anchors = read_anchors(s, num)
        need = len(mask) * (classes + 9)
        if source.shape[0] != need:
            written = ",".join(map(str, mask))
            raise channels_error(s, source, need, f"{len(mask)} anchor(s) (mask={written}) x "
                                                  f"(classes={classes} + 4 means + 4 "
                                                  f"uncertainties + 1 objectness)")
        alexeyab = {
            "iou_loss": s.get_str("iou_loss", "mse"),
            "yolo_point": s.get_str("yolo_point", "center"),
            **{key: s.get_float(key, default) for key, default in (
                ("iou_normalizer", 0.75), ("obj_normalizer", 1.0), ("cls_normalizer", 1.0),
                ("delta_normalizer", 1.0), ("scale_x_y", 1.0))},
        }
        return cls(source.shape, classes, num, tuple(mask), anchors, alexeyab)

    def darknet_line(self):
        raise NotImplementedError("pjreddie's Darknet has no [Gaussian_yolo] layer "
                                  "(AlexeyAB's fork only): use --format alexeyab")

    def alexeyab_line(self):
        # make_gaussian_yolo_layer prints nothing; parse_gaussian_yolo one line.
        return ("[Gaussian_yolo] iou loss: %s (%d), iou_norm: %2.2f, obj_norm: %2.2f, "
                "cls_norm: %2.2f, delta_norm: %2.2f, scale: %2.2f, point: %d\n"
                % (*printed_loss_settings(self.alexeyab),
                   YOLO_POINT.get(self.alexeyab["yolo_point"], 1)))

    def describe(self):
        return {"classes": self.classes, "num": self.num, "mask": list(self.mask),
                "anchors": [list(pair) for pair in self.anchors]}

    def summary_cells(self):
        return "Gaussian_yolo", "", "mask " + ",".join(map(str, self.mask))
