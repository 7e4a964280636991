"""[detection]: YOLOv1's detection head: its forward and its boxes, as pjreddie's Darknet
(forward_detection_layer, get_detection_detections). darkbp does not train it yet."""

from __future__ import annotations

import numpy as np

from darkbp.boxes import iou
from darkbp.layers.base import register
from darkbp.layers.head import Head
from darkbp.layers.yolo import source_name
from darkbp.ops.detection import Targets, Truth, sum32
from darkbp.ops.softmax import cross_entropy, softmax_forward
from darkbp.passes import EVAL

F32 = np.float32


@register
class DetectionLayer(Head):
    """x: (N, ...) read flat -> (N, side²·((1 + coords)·num + classes), 1, 1), the same values:
    per grid cell the class scores, then each box's confidence, then each box's coordinates.

    Forward is Darknet's: the input unchanged, or with `softmax` a softmax over each
    cell's class scores. `boxes` decodes an output as get_detection_detections does. No
    parameters; its training (`train_targets`, `cost`) is Darknet's delta and its loss.
    """

    sections = ("detection",)
    options = frozenset({"coords", "classes", "rescore", "num", "side", "softmax", "sqrt",
                         "max", "coord_scale", "forced", "object_scale", "noobject_scale",
                         "class_scale", "jitter", "random", "reorg"})
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
        self.remember(x, y, ctx)
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

    # ------------------------------------------------------------------ training
    def cell_truth(self, truth: Truth) -> np.ndarray:
        """The boxes as Darknet's fill_truth_region lays them out for this head: (N, side²,
        1 + classes + 4), per cell is_obj, the one-hot class, then x, y relative to the cell
        and w, h relative to the image. Boxes smaller than .005 are skipped, and the first
        box of a cell wins (Darknet shuffles the boxes before)."""
        side, classes = self.side, self.classes
        cells = np.zeros((len(truth.boxes), side * side, 1 + classes + 4), F32)
        b_idx, t_idx = np.nonzero(truth.valid)
        box = truth.boxes[b_idx, t_idx]
        keep = (box[:, 2] >= F32(.005)) & (box[:, 3] >= F32(.005))
        b_idx, box = b_idx[keep], box[keep]
        col = np.minimum((box[:, 0] * F32(side)).astype(np.int64), side - 1)
        row = np.minimum((box[:, 1] * F32(side)).astype(np.int64), side - 1)
        _, first = np.unique(np.stack([b_idx, row * side + col], axis=1), axis=0,
                             return_index=True)
        b_idx, box, col, row = b_idx[first], box[first], col[first], row[first]
        cell = row * side + col
        cells[b_idx, cell, 0] = 1
        known = box[:, 4] < classes
        cells[b_idx[known], cell[known], 1 + box[known, 4].astype(np.int64)] = 1
        cells[b_idx, cell, 1 + classes:] = np.stack([
            box[:, 0] * F32(side) - col.astype(F32), box[:, 1] * F32(side) - row.astype(F32),
            box[:, 2], box[:, 3]], axis=1)
        return cells

    def train_targets(self, y: np.ndarray, truth: Truth) -> Targets:
        """forward_detection_layer's training part for outputs y (N, outputs, 1, 1): every
        confidence towards 0 (noobject_scale); in a cell with an object, its classes
        (class_scale), and the responsible box, the one of highest IoU with the truth (or of
        lowest RMSE when no IoU is above 0): its confidence towards 1 (rescore: the IoU;
        object_scale) and its coordinates (coord_scale; sqrt: towards √w, √h)."""
        st, side, num, classes = self.settings, self.side, self.num, self.classes
        cells = self.cell_truth(truth)
        s2 = side * side
        y = np.asarray(y).reshape(-1, self.outputs)
        n = len(y)
        scores = y[:, :s2 * classes].reshape(n, s2, classes)
        conf = y[:, s2 * classes:s2 * (classes + num)].reshape(n, s2, num)
        coords = y[:, s2 * (classes + num):].reshape(n, s2, num, 4)
        s = np.zeros_like(y)
        t = np.zeros_like(y)
        s_cls, t_cls = s[:, :s2 * classes].reshape(n, s2, classes), \
            t[:, :s2 * classes].reshape(n, s2, classes)
        s_conf, t_conf = (a[:, s2 * classes:s2 * (classes + num)].reshape(n, s2, num)
                          for a in (s, t))
        s_box, t_box = (a[:, s2 * (classes + num):].reshape(n, s2, num, 4) for a in (s, t))
        s_conf[:] = F32(st["noobject_scale"])

        b_idx, c_idx = np.nonzero(cells[:, :, 0])
        truth_box = cells[b_idx, c_idx, 1 + classes:].copy()
        truth_box[:, 0:2] /= F32(side)
        s_cls[b_idx, c_idx] = F32(st["class_scale"])
        t_cls[b_idx, c_idx] = cells[b_idx, c_idx, 1:1 + classes]
        out = coords[b_idx, c_idx].copy()                       # (k, num, 4)
        out[:, :, 0:2] /= F32(side)
        if st["sqrt"]:
            out[:, :, 2:4] = out[:, :, 2:4] * out[:, :, 2:4]
        ious = iou(out, truth_box[:, None])
        with np.errstate(invalid="ignore"):
            rmse = np.sqrt(((out.astype(np.float64) - truth_box[:, None]) ** 2).sum(axis=2))
        best = _responsible(ious, rmse)
        found_iou = ious[np.arange(len(best)), best]
        s_conf[b_idx, c_idx, best] = F32(st["object_scale"])
        t_conf[b_idx, c_idx, best] = found_iou if st["rescore"] else F32(1)
        target = cells[b_idx, c_idx, 1 + classes:].copy()
        if st["sqrt"]:
            target[:, 2:4] = np.sqrt(target[:, 2:4])
        s_box[b_idx, c_idx, best] = F32(st["coord_scale"])
        t_box[b_idx, c_idx, best] = target
        delta = s * (t - y)

        stats = {
            "iou": sum32(found_iou), "class": sum32((scores * cells[:, :, 1:1 + classes])[
                b_idx, c_idx]), "all_class": sum32(scores[b_idx, c_idx]),
            "obj": sum32(conf[b_idx, c_idx, best]), "no_obj": sum32(conf),
            "predictions": conf.size, "count": len(b_idx),
        }
        return Targets(truth, delta, s, t, stats)

    def cost(self, truth: Truth) -> np.ndarray:
        """Per image (N,), the loss whose negative gradient is Darknet's delta: every output
        linear, ½·s·(t − y)² (the class scores with `softmax`: s·cross-entropy)."""
        return self.loss(self._x, self.assign(truth))

    def loss(self, x: np.ndarray, found: Targets) -> np.ndarray:
        """`cost` at the input x (N, ...), the targets held fixed (gradcheck's)."""
        y = self.forward(x, EVAL).reshape(len(x), self.outputs)
        terms = found.scale * (found.target - y) ** 2 / 2
        if self.settings["softmax"]:
            cells = self.side * self.side * self.classes
            p = y[:, :cells].reshape(-1, self.classes)
            target = found.target[:, :cells].reshape(p.shape)
            scale = found.scale[:, :cells].reshape(p.shape).max(axis=1)
            terms[:, :cells] = 0
            terms[:, 0] += (scale * cross_entropy(p, target)).reshape(len(y), -1).sum(axis=1)
        return terms.sum(axis=1)

    def input_grad(self, truth: Truth) -> np.ndarray:
        """−delta: Darknet passes the delta back as it is."""
        return -self.assign(truth).delta.reshape(-1, *self.in_shape)

    def stats_means(self, stats: dict) -> dict[str, float]:
        count = stats["count"]
        with np.errstate(divide="ignore", invalid="ignore"):
            return {"Avg IOU": F32(stats["iou"]) / F32(count),
                    "Pos Cat": F32(stats["class"]) / F32(count),
                    "All Cat": F32(stats["all_class"]) / F32(count * self.classes),
                    "Pos Obj": F32(stats["obj"]) / F32(count),
                    "Any Obj": F32(stats["no_obj"]) / F32(stats["predictions"]),
                    "count": count}

    def stats_line(self, stats: dict) -> str:
        """forward_detection_layer's line, from `statistics`."""
        return ("Detection Avg IOU: %f, Pos Cat: %f, All Cat: %f, Pos Obj: %f, Any Obj: %f, "
                "count: %d" % tuple(self.stats_means(stats).values()))

    def training_refusal(self):
        chosen = [key for key in ("random", "forced") if self.settings[key]]
        if chosen:
            return (f"{' and '.join(f'{key}=1' for key in chosen)}: darkbp picks the box "
                    "responsible for a truth by IoU only; remove it")
        return None

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


def _responsible(ious: np.ndarray, rmse: np.ndarray) -> np.ndarray:
    """Darknet's choice of the box responsible for each truth, (k, num) -> (k,): the first of
    highest IoU once any IoU is above 0, else the first of lowest RMSE. (Darknet's index is
    -1 when every RMSE is 20 or more, which reads another cell's box; darkbp takes box 0.)"""
    positive = np.where(ious > 0, ious, 0)
    by_rmse = np.where(np.isnan(rmse), np.inf, rmse)
    return np.where(positive.max(axis=1, initial=0) > 0, positive.argmax(axis=1),
                    np.where(by_rmse.min(axis=1, initial=np.inf) < 20, by_rmse.argmin(axis=1), 0))
