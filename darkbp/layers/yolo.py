"""[yolo]: YOLOv3's detection head: its forward and its boxes, as pjreddie's Darknet
(forward_yolo_layer, get_yolo_detections). darkbp does not train it yet."""

from __future__ import annotations

import numpy as np

from darkbp.cfg import Section
from darkbp.layers.base import INPUT, Input, c_float, register
from darkbp.layers.head import Head
from darkbp.boxes import iou
from darkbp.ops.activations import ACTIVATIONS
from darkbp.ops.detection import Targets, Truth, bce_logits, first_best, last_of_each, sum32

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
class YoloLayer(Head):
    """x: (N, C, H, W) -> the same shape, C = len(mask)·(classes + 5): for each anchor of
    the mask, 4 box coordinates, an objectness and `classes` scores, each an H x W plane.

    Forward is Darknet's: the logistic on x, y, the objectness and the classes; w and h
    stay raw. `boxes` decodes an output as get_yolo_detections does. No parameters; its
    training (`train_targets`, `cost`) is Darknet's delta and the loss it descends.
    """

    sections = ("yolo",)
    options = frozenset({"classes", "num", "mask", "max", "jitter", "ignore_thresh",
                         "truth_thresh", "random", "map", "anchors"})
    # AlexeyAB's loss settings: only its table shows them (alexeyab_line); pjreddie ignores them.
    ignored = Head.ignored | {"iou_loss", "iou_normalizer", "obj_normalizer",
                               "cls_normalizer", "delta_normalizer", "scale_x_y"}
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
        self.remember(x, y, ctx)
        return y.reshape(n, *self.out_shape)

    def _entries(self, y: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, A, E, H, W): anchor of the mask, entry, row, column."""
        _, h, w = self.in_shape
        return np.asarray(y).reshape(-1, len(self.mask), self.classes + 5, h, w)

    def _anchors(self) -> np.ndarray:
        """The mask's anchors (A, 2), in pixels of the network input, float32 as Darknet's."""
        return np.array([self.anchors[m] for m in self.mask], F32)

    def _pred_boxes(self, y: np.ndarray, netw: int, neth: int) -> np.ndarray:
        """get_yolo_box of every prediction: (N, A, E, H, W) outputs -> (N, A, H, W, 4)
        boxes relative to the network input: b.x = (i + x)/lw in float, b.w =
        exp(tw)·anchor/netw in double."""
        _, h, w = self.in_shape
        anchors = self._anchors()
        col = np.arange(w, dtype=F32)
        row = np.arange(h, dtype=F32)[:, None]
        with np.errstate(over="ignore"):
            return np.stack([
                (col + y[:, :, 0]) / F32(w), (row + y[:, :, 1]) / F32(h),
                (np.exp(y[:, :, 2].astype(np.float64)) * anchors[:, 0, None, None] / netw
                 ).astype(F32),
                (np.exp(y[:, :, 3].astype(np.float64)) * anchors[:, 1, None, None] / neth
                 ).astype(F32),
            ], axis=-1)

    def boxes(self, y: np.ndarray, thresh: float, hier: float, netw: int, neth: int):
        """The detections of forward outputs y (N, C, H, W), as get_yolo_detections lists
        them: per image (boxes (k, 4) relative to the network input, objectness (k,),
        probabilities (k, classes)), the predictions whose objectness is above `thresh`,
        cell by cell (row-major), the mask's anchors within a cell. A probability is
        objectness·class score, 0 unless above `thresh`. (Darknet averages the output
        with a mirrored copy when its batch is 2; darkbp never does.)"""
        y = self._entries(np.asarray(y, F32))
        n, a, e = y.shape[:3]
        # (N, A, ..., H, W) -> (N, H·W·A, ...): cell-major, anchor inner
        boxes = self._pred_boxes(y, netw, neth).transpose(0, 2, 3, 1, 4).reshape(n, -1, 4)
        scores = y.transpose(0, 3, 4, 1, 2).reshape(n, -1, e)
        found = []
        for box, p in zip(boxes, scores):
            keep = p[:, 4] > F32(thresh)
            objectness = p[keep, 4]
            probs = objectness[:, None] * p[keep, 5:]
            found.append((box[keep], objectness,
                          np.where(probs > F32(thresh), probs, F32(0))))
        return found

    # ------------------------------------------------------------------ training
    def train_targets(self, y: np.ndarray, truth: Truth) -> Targets:
        """forward_yolo_layer's training part for outputs y (N, C, H, W): the delta, the
        scale and target of each entry's term in the loss whose negative gradient the delta
        is (`cost`), and the statistics' sums."""
        y = self._entries(y)
        n, a, e, h, w = y.shape
        netw, neth = truth.netw, truth.neth
        valid = truth.valid
        boxes = truth.boxes[:, :valid.sum(axis=1).max(initial=0)]
        valid = valid[:, :boxes.shape[1]]
        classes = boxes[:, :, 4].astype(np.int64)
        s = np.zeros_like(y)                      # the scale of each entry's term (0: none)
        t = np.zeros_like(y)                      # its target
        obj = y[:, :, 4]

        # Every prediction: objectness towards 0, unless its best IoU with any truth of the
        # image is above ignore_thresh; above truth_thresh, trained as that truth's.
        pred = self._pred_boxes(y, netw, neth)
        ious = iou(pred[:, :, :, :, None], boxes[:, None, None, None, :, :4])
        best_iou, best_t = first_best(ious, valid[:, None, None, None])
        s[:, :, 4] = best_iou <= F32(self.settings["ignore_thresh"])
        matched = np.nonzero(best_iou > F32(self.settings["truth_thresh"]))    # (b, n, j, i)
        truths = best_t[matched]
        cells = matched
        assigned_anchor = np.array(self.mask)[matched[1]]

        # Every truth: its best anchor by shape among all `num`; trained here if in the mask.
        b_idx, t_idx = np.nonzero(valid)
        tb = boxes[b_idx, t_idx]
        i = np.minimum((tb[:, 0] * F32(w)).astype(np.int64), w - 1)
        j = np.minimum((tb[:, 1] * F32(h)).astype(np.int64), h - 1)
        shapes = np.array(self.anchors, F32) / np.array([netw, neth], F32)    # (num, 2)
        zero = np.zeros((len(shapes), 2), F32)
        anchor_ious = iou(np.concatenate([zero, shapes], axis=1)[None],
                          np.concatenate([np.zeros((len(tb), 2), F32), tb[:, 2:4]], axis=1)[:, None])
        _, best_n = first_best(anchor_ious, np.ones_like(anchor_ious, bool))
        position = {m: k for k, m in enumerate(self.mask)}
        mask_n = np.array([position.get(m, -1) for m in best_n], np.int64)
        mine = mask_n >= 0
        b_idx, t_idx, i, j, mask_n, tb = (v[mine] for v in (b_idx, t_idx, i, j, mask_n, tb))

        # Box targets and deltas: the truth_thresh matches first, then the truths; a cell
        # written twice keeps the last write, as in Darknet's loops.
        all_b = np.concatenate([cells[0], b_idx])
        all_n = np.concatenate([cells[1], mask_n])
        all_j = np.concatenate([cells[2], j])
        all_i = np.concatenate([cells[3], i])
        all_box = np.concatenate([boxes[cells[0], truths, :4], tb[:, :4]])
        all_anchor = np.concatenate([assigned_anchor, np.array(self.mask, np.int64)[mask_n]])
        all_class = np.concatenate([classes[cells[0], truths], classes[b_idx, t_idx]])
        last = last_of_each(np.stack([all_b, all_n, all_j, all_i], axis=1))
        lb, ln, lj, li = all_b[last], all_n[last], all_j[last], all_i[last]
        box = all_box[last]
        anchor = np.array(self.anchors, F32)[all_anchor[last]]
        scale = F32(2) - box[:, 2] * box[:, 3]
        targets = np.stack([box[:, 0] * F32(w) - li.astype(F32),
                            box[:, 1] * F32(h) - lj.astype(F32),
                            np.log(box[:, 2] * F32(netw) / anchor[:, 0]),
                            np.log(box[:, 3] * F32(neth) / anchor[:, 1])], axis=1).astype(F32)
        for k in range(4):
            t[lb, ln, k, lj, li] = targets[:, k]
            s[lb, ln, k, lj, li] = scale
        # Objectness 1 and the classes of every truth of a cell (Darknet's second truth in
        # a cell only sets its own class: the targets are the union).
        t[all_b, all_n, 4, all_j, all_i] = 1
        s[all_b, all_n, 4, all_j, all_i] = 1
        s[all_b, all_n, 5:, all_j, all_i] = 1
        t[all_b, all_n, 5 + all_class, all_j, all_i] = 1
        delta = s * (t - y)            # x, y, objectness, classes after the logistic; w, h raw

        # The statistics line, summed in Darknet's order in float32
        found_iou = iou(pred[b_idx, mask_n, j, i], tb[:, :4])
        stats = {
            "iou": sum32(found_iou),
            "class": sum32(y[b_idx, mask_n, 5 + tb[:, 4].astype(np.int64), j, i]),
            "obj": sum32(obj[b_idx, mask_n, j, i]),
            "no_obj": sum32(obj.transpose(0, 2, 3, 1)), "predictions": obj.size,
            "recall50": int((found_iou > F32(.5)).sum()),
            "recall75": int((found_iou > F32(.75)).sum()), "count": len(b_idx),
        }
        return Targets(truth, delta, s, t, stats)

    def cost(self, truth: Truth) -> np.ndarray:
        """Per image (N,), the loss whose negative gradient at this head's input is Darknet's
        delta: s·BCE(t, σ(z)) on x and y (t the offset in the cell, s = 2 − w·h), ½·s·(t − z)²
        on w and h (t = log(truth size / anchor)), BCE on the objectness (t 1 where a truth
        is assigned, else 0; no term where ignored) and on the classes of assigned
        predictions (t one-hot). z is the head's input; the assignment is held fixed."""
        return self.loss(self._x, self.assign(truth))

    def loss(self, x: np.ndarray, found: Targets) -> np.ndarray:
        """`cost` at the input x (N, C, H, W), the targets held fixed (gradcheck's)."""
        z = self._entries(x)
        terms = found.scale * bce_logits(found.target, z)
        terms[:, :, 2:4] = found.scale[:, :, 2:4] * (found.target[:, :, 2:4] - z[:, :, 2:4]) ** 2 / 2
        return terms.reshape(len(z), -1).sum(axis=1)

    def input_grad(self, truth: Truth) -> np.ndarray:
        """d(Σ_images cost)/d(input) = −delta: Darknet adds its delta to the previous layer's
        without the logistic's derivative (that of BCE through σ is σ − t)."""
        return -self.assign(truth).delta.reshape(-1, *self.in_shape)

    def stats_line(self, stats: dict) -> str:
        """forward_yolo_layer's line, from `statistics` (summed over the shards of a pass)."""
        count = stats["count"]
        with np.errstate(divide="ignore", invalid="ignore"):
            values = [F32(stats["iou"]) / F32(count), F32(stats["class"]) / F32(count),
                      F32(stats["obj"]) / F32(count),
                      F32(stats["no_obj"]) / F32(stats["predictions"]),
                      F32(stats["recall50"]) / F32(count), F32(stats["recall75"]) / F32(count)]
        return ("Region %d Avg IOU: %f, Class: %f, Obj: %f, No Obj: %f, .5R: %f, .75R: %f,  "
                "count: %d" % (self.index, *values, count))
    def training_refusal(self):
        if self.settings["map"]:
            return "map= (a class map file) is not trained by darkbp: remove it"
        return None

    def to_onnx(self, graph, inputs):
        # every anchor's entries: x, y, w, h, objectness, classes; w and h stay raw
        entries = np.ones(self.classes + 5, bool)
        entries[2:4] = False
        return graph.logistic_on(inputs[0], np.tile(entries, len(self.mask)),
                                 graph.head_output(self))
