"""[yolo]: YOLOv3's detection head: its forward and its boxes, as pjreddie's Darknet
(forward_yolo_layer, get_yolo_detections). darkbp does not train it yet."""

from __future__ import annotations

import numpy as np

from darkbp.cfg import Section
from darkbp.layers.base import INPUT, Input, Layer, c_float, register
from darkbp.ops.activations import ACTIVATIONS

F32 = np.float32

# AlexeyAB's parse_yolo prints its IOU_LOSS enum (IOU, GIOU, MSE, DIOU, CIOU) beside the name;
# a name it does not know counts as IOU.
ALEXEYAB_IOU_LOSS = {"giou": 1, "mse": 2, "diou": 3, "ciou": 4}


def read_anchors(section: Section, count: int) -> tuple[tuple[float, float], ...]:
    """The section's `anchors`: `count` (width, height) pairs; Darknet's 0.5 x 0.5 for each
    when the cfg gives none. A list of any other length is an error at its line: Darknet
    writes past its 2·count values when there are more, and silently makes the missing
    ones 0.5 when there are fewer (or a width has no height)."""
    values = section.get_floats("anchors")
    if not values:
        return ((0.5, 0.5),) * count
    if len(values) != 2 * count:
        consequence = ("Darknet would write past its anchors" if len(values) > 2 * count
                       else "Darknet would make the missing values 0.5")
        raise section.error(f"anchors has {len(values)} values, but num={count} anchors need "
                            f"{2 * count}, a width,height pair each ({consequence})",
                            section.line_of("anchors"))
    return tuple(zip(values[0::2], values[1::2]))


def source_name(source: Input) -> str:
    """How an error names the input a head reads: the network input or layer i ([type])."""
    return ("the network input" if source.index == INPUT
            else f"layer {source.index} ([{source.header}])")


def channels_error(section: Section, source: Input, need: int, rule: str):
    """The error for a detection head whose input does not have the channels it reads."""
    c, h, w = source.shape
    where = source_name(source)
    hint = (f": set filters={need} there" if source.header in ("convolutional", "conv")
            else "")
    return section.error(f"reads {rule} = {need} channels, but {where} "
                         f"gives {w} x {h} x {c}{hint}")


@register
class YoloLayer(Layer):
    """x: (N, C, H, W) -> the same shape, C = len(mask)·(classes + 5): for each anchor of
    the mask, 4 box coordinates, an objectness and `classes` scores, each an H x W plane.

    Forward is Darknet's: the logistic on x, y, the objectness and the classes; w and h
    stay raw. `boxes` decodes an output as get_yolo_detections does. No parameters; not
    trainable yet (Network.check_trainable refuses it).
    """

    sections = ("yolo",)
    options = frozenset({"classes", "num", "mask", "max", "jitter", "ignore_thresh",
                         "truth_thresh", "random", "map", "anchors"})
    # AlexeyAB's loss settings: only its table shows them (alexeyab_line); pjreddie ignores them.
    ignored = Layer.ignored | {"iou_loss", "iou_normalizer", "obj_normalizer",
                               "cls_normalizer", "delta_normalizer", "scale_x_y"}
    trainable = False
    detects = True

    def __init__(self, in_shape, classes: int, num: int, mask: tuple[int, ...],
                 anchors: tuple[tuple[float, float], ...], settings: dict, alexeyab: dict):
        super().__init__(in_shape, in_shape)
        self.classes, self.num, self.mask, self.anchors = classes, num, mask, anchors
        self.settings = settings        # what Darknet's training reads: max, jitter, ...
        self.alexeyab = alexeyab        # AlexeyAB's loss settings, as its table prints them

    @classmethod
    def build(cls, s, inputs):
        source = inputs[0]
        classes = s.get_int("classes", 20, minimum=0)
        num = s.get_int("num", 1, minimum=1)
        mask = s.get_ints("mask") or tuple(range(num))    # Darknet: no mask, every anchor
        for index in mask:
            if not 0 <= index < num:
                raise s.error(f"mask entry {index} is not one of the num={num} anchors "
                              f"(0 to {num - 1}): Darknet would read past its anchors",
                              s.line_of("mask"))
        anchors = read_anchors(s, num)
        need = len(mask) * (classes + 5)
        if source.shape[0] != need:
            anchors_read = f"{len(mask)} anchor{'s' if len(mask) != 1 else ''}"
            written = ",".join(map(str, mask))
            raise channels_error(s, source, need,
                                 f"{anchors_read} (mask={written}) x (classes={classes} + 5)")
        settings = {
            "max": s.get_int("max", 90, minimum=0),
            "jitter": s.get_float("jitter", 0.2),
            "ignore_thresh": s.get_float("ignore_thresh", 0.5),
            "truth_thresh": s.get_float("truth_thresh", 1.0),
            "random": s.get_float("random", 0.0),    # pjreddie an int, AlexeyAB a float
            "map": s.get_str("map", "") or None,     # a file Darknet reads; not opened here
        }
        alexeyab = {
            "iou_loss": s.get_str("iou_loss", "mse"),
            **{key: s.get_float(key, default) for key, default in (
                ("iou_normalizer", 0.75), ("obj_normalizer", 1.0), ("cls_normalizer", 1.0),
                ("delta_normalizer", 1.0), ("scale_x_y", 1.0))},
        }
        return cls(source.shape, classes, num, tuple(mask), anchors, settings, alexeyab)

    def darknet_line(self):
        return "yolo\n"               # make_yolo_layer's fprintf; parse_yolo prints nothing

    def alexeyab_line(self):
        # make_yolo_layer prints "yolo", then parse_yolo its loss settings with "%2.2f" of
        # C floats (so the float32 value is what is rounded).
        a = self.alexeyab
        f32 = [c_float(a[key]) for key in ("iou_normalizer", "obj_normalizer",
                                           "cls_normalizer", "delta_normalizer", "scale_x_y")]
        return ("yolo\n[yolo] params: iou loss: %s (%d), iou_norm: %2.2f, obj_norm: %2.2f, "
                "cls_norm: %2.2f, delta_norm: %2.2f, scale_x_y: %2.2f\n"
                % (a["iou_loss"], ALEXEYAB_IOU_LOSS.get(a["iou_loss"], 0), *f32))

    def describe(self):
        return {"classes": self.classes, "num": self.num, "mask": list(self.mask),
                "anchors": [list(pair) for pair in self.anchors], **self.settings}

    def summary_cells(self):
        return "yolo", "", "mask " + ",".join(map(str, self.mask))

    # ------------------------------------------------------------------ inference
    def forward(self, x, ctx):
        n = x.shape[0]
        _, h, w = self.in_shape
        y = np.array(x, order="C").reshape(n, len(self.mask), self.classes + 5, h, w)
        logistic = ACTIVATIONS["logistic"].forward
        y[:, :, 0:2] = logistic(y[:, :, 0:2])
        y[:, :, 4:] = logistic(y[:, :, 4:])
        return y.reshape(n, *self.out_shape)

    def boxes(self, y: np.ndarray, thresh: float, hier: float, netw: int, neth: int):
        """The detections of forward outputs y (N, C, H, W), as get_yolo_detections lists
        them: per image (boxes (k, 4) relative to the network input, objectness (k,),
        probabilities (k, classes)), the predictions whose objectness is above `thresh`,
        cell by cell (row-major), the mask's anchors within a cell. A probability is
        objectness·class score, 0 unless above `thresh`. (Darknet averages the output
        with a mirrored copy when its batch is 2; darkbp never does.)"""
        n = y.shape[0]
        _, h, w = self.in_shape
        a = len(self.mask)
        # (N, A, E, H, W) -> (N, H·W·A, E): cell-major, anchor inner
        rows = np.asarray(y, F32).reshape(n, a, self.classes + 5, h, w)
        rows = rows.transpose(0, 3, 4, 1, 2).reshape(n, h * w * a, self.classes + 5)
        cell = np.arange(h * w * a) // a
        col, row = (cell % w).astype(F32), (cell // w).astype(F32)
        anchors = np.array([self.anchors[m] for m in self.mask], F32)[np.arange(h * w * a) % a]
        found = []
        for image in rows:
            keep = np.flatnonzero(image[:, 4] > F32(thresh))
            p = image[keep]
            with np.errstate(over="ignore"):
                # b.x = (i + x)/lw in float; b.w = exp(tw)·anchor/netw in double
                box = np.stack([
                    (col[keep] + p[:, 0]) / F32(w), (row[keep] + p[:, 1]) / F32(h),
                    np.exp(p[:, 2].astype(np.float64)) * anchors[keep, 0] / netw,
                    np.exp(p[:, 3].astype(np.float64)) * anchors[keep, 1] / neth,
                ], axis=1).astype(F32)
            objectness = p[:, 4]
            probs = objectness[:, None] * p[:, 5:]
            found.append((box, objectness, np.where(probs > F32(thresh), probs, F32(0))))
        return found

    def to_onnx(self, graph, inputs):
        # every anchor's entries: x, y, w, h, objectness, classes; w and h stay raw
        entries = np.ones(self.classes + 5, bool)
        entries[2:4] = False
        return graph.logistic_on(inputs[0], np.tile(entries, len(self.mask)),
                                 graph.head_output(self))
