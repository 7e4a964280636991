"""[yolo]: YOLOv3's detection head: its forward, its boxes and its training, as pjreddie's
Darknet (forward_yolo_layer, get_yolo_detections) or, when the section names any option only
AlexeyAB's fork reads (`iou_loss=mse` suffices), as AlexeyAB's (its src/yolo_layer.c):

    pjreddie   ignore: best IoU with any truth; box delta written (the last assignment of a
               cell wins); x, y, w, h delta s·(t − out); cost |delta|²; max=90 boxes
    AlexeyAB   ignore: only if some class score of the prediction is above 0.25; box deltas
               of all assignments to a cell added (iou_thresh: also other anchors of the
               mask, then divided by the cell's classes); iou_normalizer (0.75 by default)
               on the box delta; obj_normalizer; label_smooth_eps; iou_loss; cost and
               statistics line its own; max=200 boxes; objectness_smooth: objectness
               targets an ignored prediction's best IoU, a truth_thresh match's IoU² (its
               class too), and a truth's cell keeps the target it had (0 or that IoU)

The AlexeyAB options also act in inference: scale_x_y on x and y, new_coords (no logistic;
w = 4·x²·anchor), nms_kind and beta_nms in detection (`nms_overlap`)."""

from __future__ import annotations

import numpy as np

from darkbp.cfg import CfgWarning, Section
from darkbp.layers.base import INPUT, Input, c_float, register
from darkbp.layers.head import Head
from darkbp.boxes import iou
from darkbp.ops.activations import ACTIVATIONS
from darkbp.ops.detection import Targets, Truth, bce_logits, first_best, last_of_each, sum32
from darkbp.ops.iou_loss import KINDS, ab_iou, box_step, diou, diounms, iou_kind, iou_kind64

F32 = np.float32

# AlexeyAB's parse_yolo prints its IOU_LOSS enum (IOU, GIOU, MSE, DIOU, CIOU) beside the name;
# a name it does not know counts as IOU.
ALEXEYAB_IOU_LOSS = {"giou": 1, "mse": 2, "diou": 3, "ciou": 4}


def printed_loss_settings(alexeyab: dict) -> tuple:
    """What AlexeyAB's parse_yolo (and parse_gaussian_yolo) print of a head's loss: its
    iou_loss, that loss's number (one it does not know counts as IOU, 0), and the
    normalizers and scale_x_y as C floats (the float32 value is what "%2.2f" rounds)."""
    return (alexeyab["iou_loss"], ALEXEYAB_IOU_LOSS.get(alexeyab["iou_loss"], 0),
            *(c_float(alexeyab[key]) for key in ("iou_normalizer", "obj_normalizer",
                                                 "cls_normalizer", "delta_normalizer",
                                                 "scale_x_y")))

# The [yolo] options darkbp reads that only AlexeyAB's fork knows: naming any of them (or of
# ALEXEYAB_IGNORED) makes the head AlexeyAB's.
ALEXEYAB_OPTIONS = frozenset({
    "iou_loss", "iou_normalizer", "obj_normalizer", "cls_normalizer", "delta_normalizer",
    "scale_x_y", "new_coords", "max_delta", "iou_thresh", "iou_thresh_kind",
    "label_smooth_eps", "nms_kind", "beta_nms", "show_details", "objectness_smooth"})
# AlexeyAB's options darkbp reads but does not act on: data loading, tracking, logging.
ALEXEYAB_IGNORED = frozenset({
    "resize", "track_history_size", "sim_thresh", "dets_for_track", "dets_for_show",
    "track_ciou_norm", "uc_normalizer", "beta1"})
# AlexeyAB's options that change its training and that darkbp does not train (refused when
# set to anything else than their default).
ALEXEYAB_UNTRAINED = {"focal_loss": "0", "counters_per_class": None, "embedding_layer": None}
NMS_KINDS = ("default", "greedynms", "diounms")


def read_anchors(section: Section, count: int) -> tuple[tuple[float, float], ...]:
    """The section's `anchors`: `count` (width, height) pairs; Darknet's 0.5 x 0.5 for each
    when the cfg gives none. Both Darknets read every value of the list into an array of
    2·count made 0.5 first: with fewer values the missing ones stay 0.5 (a width may have
    no height); with more, AlexeyAB's stops at 2·count and pjreddie's writes the rest past
    the array (a mask beyond num reads them there: YoloLayer.build).
    darkbp takes the same 2·count values and warns (AlexeyAB's own cspx-p7-mish.cfg has
    40 values for its 16 anchors, its cspx-p7-mish_hp.cfg 31)."""
    values = section.get_floats("anchors")
    if not values:
        return ((0.5, 0.5),) * count
    if len(values) != 2 * count:
        extra = len(values) - 2 * count
        what = (f"darkbp reads the first {2 * count} (AlexeyAB's Darknet reads no more, "
                f"pjreddie's writes the other {extra} past its anchors)" if extra > 0 else
                f"the missing {-extra} are 0.5, as in Darknet")
        section.notes.setdefault("anchors", CfgWarning(
            section.file, section.line_of("anchors"),
            f"[{section.header}] anchors has {len(values)} values, but num={count} anchors "
            f"need {2 * count}, a width,height pair each: {what}"))
        values = (tuple(values) + (0.5,) * (2 * count))[:2 * count]
    return tuple(zip(values[0::2], values[1::2]))


def read_alexeyab(s: Section) -> dict:
    """AlexeyAB's [yolo] settings (parse_yolo's defaults), each name checked."""
    settings = {
        **{key: s.get_float(key, default) for key, default in (
            ("iou_normalizer", 0.75), ("obj_normalizer", 1.0), ("cls_normalizer", 1.0),
            ("delta_normalizer", 1.0), ("scale_x_y", 1.0), ("label_smooth_eps", 0.0),
            ("iou_thresh", 1.0), ("beta_nms", 0.6))},
        "max_delta": s.get_float("max_delta", float("inf"), positive=True),
        "new_coords": s.get_int("new_coords", 0, minimum=0) != 0,
        "show_details": s.get_int("show_details", 1) != 0,
        "objectness_smooth": s.get_int("objectness_smooth", 0) != 0,
    }
    # A name AlexeyAB does not know counts as its default kind, as in parse_yolo (its table
    # prints the name as written): an advice says so.
    advice = []
    for key, default, fallback, names in (("iou_loss", "mse", "iou", ("mse",) + KINDS),
                                          ("iou_thresh_kind", "iou", "iou", KINDS),
                                          ("nms_kind", "default", "default", NMS_KINDS)):
        settings[key] = s.get_str(key, default)
        if settings[key] not in names:
            advice.append(f"line {s.line_of(key)}: {key}={settings[key]} is not one of "
                          f"{', '.join(names)}; AlexeyAB's Darknet and darkbp take {fallback}")
        settings[key + "_used"] = settings[key] if settings[key] in names else fallback
    settings["advice"] = tuple(advice)
    for key, default in ALEXEYAB_UNTRAINED.items():
        if key in s.options and s.get_str(key, "") != default:
            settings.setdefault("untrained", f"{key}={s.get_str(key, '')}")
    return settings


def cell_sums(values: np.ndarray, cells: tuple, shape: tuple) -> np.ndarray:
    """Σ of `values` (k,) or (k, m) over the assignments that share a cell: (shape) or
    (shape + (m,)) float64, zero elsewhere, each cell summed in the assignments' order (as
    np.add.at, without its per-element cost)."""
    flat = np.ravel_multi_index(cells, shape)
    size = int(np.prod(shape))
    if values.ndim == 1:
        return np.bincount(flat, values, size).reshape(shape)
    return np.stack([np.bincount(flat, column, size) for column in values.T],
                    axis=-1).reshape(shape + (values.shape[1],))


def _rounds(flat: np.ndarray) -> list[np.ndarray]:
    """The positions of `flat` (k,) in rounds: round r holds each value's r-th occurrence,
    so a round's values are distinct, and adding round after round adds each value's
    occurrences one by one in their order (as np.add.at does, a round per occurrence
    rather than a Python step per element)."""
    order = np.argsort(flat, kind="stable")
    ranked = flat[order]
    first = np.r_[True, ranked[1:] != ranked[:-1]] if len(flat) else np.zeros(0, bool)
    steps = np.arange(len(flat))
    rank = np.empty(len(flat), np.int64)
    rank[order] = steps - np.maximum.accumulate(np.where(first, steps, 0))
    return [np.flatnonzero(rank == r) for r in range(int(rank.max(initial=-1)) + 1)]


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
                         "truth_thresh", "random", "map", "anchors"}) | ALEXEYAB_OPTIONS
    ignored = Head.ignored | ALEXEYAB_IGNORED | frozenset(ALEXEYAB_UNTRAINED)

    def __init__(self, in_shape, classes: int, num: int, mask: tuple[int, ...],
                 anchors: tuple[tuple[float, float], ...], settings: dict, alexeyab: dict,
                 fork: str = "pjreddie"):
        super().__init__(in_shape, in_shape)
        self.classes, self.num, self.mask, self.anchors = classes, num, mask, anchors
        self.settings = settings        # what Darknet's training reads: max, jitter, ...
        self.alexeyab = alexeyab        # AlexeyAB's settings (its table prints some of them)
        self.fork = fork                # whose training: "pjreddie" or "alexeyab"

    @classmethod
    def build(cls, s, inputs):
        source = inputs[0]
        classes = s.get_int("classes", 20, minimum=0)
        num = s.get_int("num", 1, minimum=1)
        mask = s.get_ints("mask") or tuple(range(num))    # Darknet: no mask, every anchor
        anchors = read_anchors(s, num)
        beyond = [index for index in mask if index >= num]
        listed = len(s.get_floats("anchors")) // 2
        for index in mask:
            if index < 0 or index >= max(num, listed):
                raise s.error(f"mask entry {index} is not one of the num={num} anchors "
                              f"(0 to {num - 1}): Darknet would read past its anchors",
                              s.line_of("mask"))
        if beyond:
            # AlexeyAB's cspx-p7-mish.cfg: mask = 16,17,18,19 with num=16 and 20 anchors
            # listed. Darknet reads those anchors past its 2·num values: pjreddie's finds the
            # cfg's there (it wrote every listed value), AlexeyAB's memory it never wrote.
            values = s.get_floats("anchors")
            anchors += tuple(zip(values[2 * num::2], values[2 * num + 1::2]))
            s.notes.setdefault("mask", CfgWarning(
                s.file, s.line_of("mask"),
                f"[{s.header}] mask entries {','.join(map(str, beyond))} are beyond the "
                f"num={num} anchors: Darknet reads them past its anchors (pjreddie's finds the "
                f"cfg's values there, AlexeyAB's memory it never wrote); darkbp uses the cfg's "
                f"anchors {num} to {max(beyond)} for them, and only the first {num} for "
                f"training's best anchor"))
        need = len(mask) * (classes + 5)
        if source.shape[0] != need:
            anchors_read = f"{len(mask)} anchor{'s' if len(mask) != 1 else ''}"
            written = ",".join(map(str, mask))
            raise channels_error(s, source, need,
                                 f"{anchors_read} (mask={written}) x (classes={classes} + 5)")
        fork = ("alexeyab" if any(key in s.options for key in
                                  ALEXEYAB_OPTIONS | ALEXEYAB_IGNORED | set(ALEXEYAB_UNTRAINED))
                else "pjreddie")
        settings = {
            "max": s.get_int("max", 200 if fork == "alexeyab" else 90, minimum=0),
            "jitter": s.get_float("jitter", 0.2),
            "ignore_thresh": s.get_float("ignore_thresh", 0.5),
            "truth_thresh": s.get_float("truth_thresh", 1.0),
            "random": s.get_float("random", 0.0),    # pjreddie an int, AlexeyAB a float
            "map": s.get_str("map", "") or None,     # a file Darknet reads; not opened here
        }
        alexeyab = read_alexeyab(s)
        layer = cls(source.shape, classes, num, tuple(mask), anchors, settings, alexeyab, fork)
        layer.advice = alexeyab.pop("advice")
        return layer

    def darknet_line(self):
        return "yolo\n"               # make_yolo_layer's fprintf; parse_yolo prints nothing

    def alexeyab_line(self):
        # make_yolo_layer prints "yolo", then parse_yolo its loss settings with "%2.2f" of
        # C floats (so the float32 value is what is rounded).
        return ("yolo\n[yolo] params: iou loss: %s (%d), iou_norm: %2.2f, obj_norm: %2.2f, "
                "cls_norm: %2.2f, delta_norm: %2.2f, scale_x_y: %2.2f\n"
                % printed_loss_settings(self.alexeyab))

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
        if not self.alexeyab["new_coords"]:    # new_coords: the conv before has the logistic
            logistic = ACTIVATIONS["logistic"].forward
            y[:, :, 0:2] = logistic(y[:, :, 0:2])
            y[:, :, 4:] = logistic(y[:, :, 4:])
        scale = self.alexeyab["scale_x_y"]
        if scale != 1:                         # scal_add_cpu: x·s + (−(s − 1)/2), in float
            y[:, :, 0:2] = y[:, :, 0:2] * y.dtype.type(scale) + y.dtype.type(-0.5 * (scale - 1))
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
        exp(tw)·anchor/netw in double (new_coords: 4·tw²·anchor/netw in float)."""
        _, h, w = self.in_shape
        anchors = self._anchors()
        col = np.arange(w, dtype=F32)
        row = np.arange(h, dtype=F32)[:, None]
        if self.alexeyab["new_coords"]:        # b.w = x·x·4·anchor / netw, in float
            y = y.astype(F32)
            return np.stack([
                (col + y[:, :, 0]) / F32(w), (row + y[:, :, 1]) / F32(h),
                y[:, :, 2] * y[:, :, 2] * F32(4) * anchors[:, 0, None, None] / F32(netw),
                y[:, :, 3] * y[:, :, 3] * F32(4) * anchors[:, 1, None, None] / F32(neth),
            ], axis=-1)
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
        is (`cost`), and the statistics' sums (pjreddie's or AlexeyAB's: `fork`)."""
        if self.fork == "alexeyab":
            return self._alexeyab_targets(self._entries(y), truth)
        return self._pjreddie_targets(self._entries(y), truth)

    def _pjreddie_targets(self, y: np.ndarray, truth: Truth) -> Targets:
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
        shapes = np.array(self.anchors[:self.num], F32) / np.array([netw, neth], F32)  # (num, 2)
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

    def _alexeyab_targets(self, y: np.ndarray, truth: Truth) -> Targets:
        """AlexeyAB's process_batch for outputs y (N, A, E, H, W), all images at once.

        Assignments, in the order its loops make them: each prediction whose best IoU with a
        truth is above truth_thresh; then each truth, at its cell, with its best anchor by
        shape (if in the mask) and, with iou_thresh < 1, every other anchor of the mask whose
        shape's IoU (of iou_thresh_kind) with it is above iou_thresh. Box deltas of a cell add
        up; the objectness target is 1; the class targets are the union of its truths'.
        objectness_smooth: the ignored predictions' objectness targets their best IoU, a
        truth_thresh match's objectness and class their IoU², and a truth's objectness 1
        only where the delta before it is 0 (AlexeyAB's test of that delta): held fixed
        like the assignment, these targets keep the delta the loss's gradient."""
        a = self.alexeyab
        n, na, e, h, w = y.shape
        f = y.dtype.type
        netw, neth = truth.netw, truth.neth
        valid = truth.valid
        boxes = truth.boxes[:, :valid.sum(axis=1).max(initial=0)]
        classes = boxes[:, :, 4].astype(np.int64)
        valid = valid[:, :boxes.shape[1]] & (classes >= 0) & (classes < self.classes)
        s = np.zeros_like(y)
        t = np.zeros_like(y)
        delta = np.zeros_like(y)
        obj = y[:, :, 4]
        anchors = np.array(self.anchors, F32)

        # Every prediction: objectness towards 0, unless one class score is above 0.25 and
        # its best IoU with a truth is above ignore_thresh.
        pred = self._pred_boxes(y, netw, neth)
        ious = ab_iou(pred[:, :, :, :, None], boxes[:, None, None, None, :, :4])
        best_iou, best_t = first_best(ious, valid[:, None, None, None])
        class_match = (y[:, :, 5:] > F32(0.25)).any(axis=2)
        ignored = class_match & (best_iou > F32(self.settings["ignore_thresh"]))
        if a["objectness_smooth"]:
            # objectness_smooth: an ignored prediction's objectness goes towards that best
            # IoU instead (AlexeyAB takes that delta where it is the larger of the two)
            norm = f(F32(a["obj_normalizer"]))
            larger = norm * (best_iou.astype(y.dtype) - obj) > norm * (0 - obj)
            t[:, :, 4] = np.where(ignored & larger, best_iou, 0)
            s[:, :, 4] = a["obj_normalizer"]
        else:
            s[:, :, 4] = np.where(ignored, 0, a["obj_normalizer"])
        matched = np.nonzero(best_iou > F32(self.settings["truth_thresh"]))    # (b, n, j, i)
        cells = [matched[0], matched[1], matched[2], matched[3]]
        truth_box = [boxes[matched[0], best_t[matched], :4]]
        anchor = [np.array(self.mask, np.int64)[matched[1]]]
        label = [classes[matched[0], best_t[matched]]]

        # Every truth: its best anchor among all `num`, then the others above iou_thresh.
        b_idx, t_idx = np.nonzero(valid)
        tb = boxes[b_idx, t_idx]
        col = np.minimum((tb[:, 0] * F32(w)).astype(np.int64), w - 1)
        row = np.minimum((tb[:, 1] * F32(h)).astype(np.int64), h - 1)
        shapes = np.concatenate([np.zeros((len(anchors), 2), F32),
                                 anchors / np.array([netw, neth], F32)], axis=1)
        shift = np.concatenate([np.zeros((len(tb), 2), F32), tb[:, 2:4]], axis=1)
        _, best_n = first_best(ab_iou(shapes[None], shift[:, None]),
                               np.ones((len(tb), len(anchors)), bool))
        in_mask = np.isin(np.arange(len(anchors)), self.mask)
        # (truths, 1 + num): column 0 the best anchor, column 1 + k anchor k by iou_thresh
        chosen = np.zeros((len(tb), 1 + len(anchors)), bool)
        chosen[:, 0] = in_mask[best_n]
        if a["iou_thresh"] < 1:
            close = iou_kind(a["iou_thresh_kind_used"], shapes[None], shift[:, None]) > F32(
                a["iou_thresh"])
            chosen[:, 1:] = close & in_mask & (np.arange(len(anchors)) != best_n[:, None])
        which, column = np.nonzero(chosen)
        truth_anchor = np.where(column == 0, best_n[which], column - 1)
        position = np.full(len(anchors), -1, np.int64)
        position[list(self.mask)] = np.arange(na)
        from_truths = [b_idx[which], position[truth_anchor], row[which], col[which]]
        for k in range(4):
            cells[k] = np.concatenate([cells[k], from_truths[k]])
        truth_box = np.concatenate(truth_box + [tb[which, :4]])
        anchor = np.concatenate(anchor + [truth_anchor])
        label = np.concatenate(label + [classes[b_idx[which], t_idx[which]]])
        bb, bn, bj, bi = cells

        # The box: each assignment's delta added to its cell's.
        step, iou_found = self._box_deltas(y[bb, bn, :4, bj, bi], pred[bb, bn, bj, bi],
                                           truth_box, anchors[anchor], bi, bj, w, h, netw, neth)
        # In y's dtype, added one by one as AlexeyAB's float deltas are (not cell_sums'
        # float64 sums, which round otherwise where three or more share a cell).
        box_delta = np.zeros((n, na, 4, h, w), y.dtype)
        for rows in _rounds(np.ravel_multi_index((bb, bn, bj, bi), (n, na, h, w))):
            box_delta[bb[rows], bn[rows], :, bj[rows], bi[rows]] += step[rows]

        # Objectness 1 and the classes (targets the union; label_smooth_eps: towards 0.5).
        s[bb, bn, 4, bj, bi] = a["obj_normalizer"]
        if a["objectness_smooth"]:
            # objectness_smooth: a truth_thresh match's objectness goes towards its IoU²; a
            # truth's towards 1 only where the delta so far is 0 (as good as never: the
            # prediction keeps its ignore target, 0 or its best IoU).
            m = len(matched[0])
            squared = best_iou[matched] * best_iou[matched]
            t[matched[0], matched[1], 4, matched[2], matched[3]] = squared
            so_far = s[:, :, 4] * (t[:, :, 4] - obj)
            own = (bb[m:], bn[m:], bj[m:], bi[m:])
            t[own[0], own[1], 4, own[2], own[3]] = np.where(so_far[own] == 0, 1,
                                                             t[own[0], own[1], 4, own[2], own[3]])
        else:
            t[bb, bn, 4, bj, bi] = 1
        s[bb, bn, 5:, bj, bi] = 1
        t[bb, bn, 5 + label, bj, bi] = 1
        eps = a["label_smooth_eps"]
        if eps:
            assigned = s[:, :, 5:] > 0
            t[:, :, 5:] = np.where(assigned, (t[:, :, 5:] * (F32(1) - F32(eps))
                                              ).astype(np.float64) + 0.5 * float(F32(eps)), 0)
        if a["objectness_smooth"]:
            # ... and its class towards IoU² too (no label_smooth_eps), unless a truth of
            # the cell has that class (its target is then the truth's).
            truths_class = np.zeros(t[:, :, 5:].shape, bool)
            truths_class[bb[m:], bn[m:], label[m:], bj[m:], bi[m:]] = True
            mine = ~truths_class[matched[0], matched[1], label[:m], matched[2], matched[3]]
            t[matched[0][mine], matched[1][mine], 5 + label[:m][mine], matched[2][mine],
              matched[3][mine]] = squared[mine]
        delta[:, :, 4:] = s[:, :, 4:] * (t[:, :, 4:] - y[:, :, 4:])

        # iou_thresh < 1: a cell's box delta divided by its number of classes whose delta is
        # positive (the cells with an objectness delta).
        shares = np.ones((n, na, h, w), y.dtype)
        if a["iou_thresh"] < 1:
            positive = (delta[:, :, 5:] > 0).sum(axis=2)
            shares = np.where((delta[:, :, 4] != 0) & (positive > 0), positive, 1).astype(y.dtype)
            box_delta = box_delta / shares[:, :, None]
        delta[:, :, :4] = box_delta

        # The loss's scale and target of the box entries: with c the sum of the
        # assignments' iou_normalizer·(2 − w·h) over the cell (divided by its share) and T
        # their weighted mean target, the delta is c·(T − out), out = s·σ(z) − (s − 1)/2
        # on x and y: the gradient of c·s·BCE((T + (s − 1)/2)/s, σ(z)).
        terms = None
        if a["iou_loss_used"] == "mse":
            weight = ((F32(2) - truth_box[:, 2] * truth_box[:, 3]).astype(y.dtype)
                      * f(F32(a["iou_normalizer"])))
            coeff = cell_sums(weight.astype(np.float64), (bb, bn, bj, bi), (n, na, h, w))
            coeff /= shares
            targets = self._mse_targets(truth_box, anchors[anchor], bi, bj, w, h, netw, neth)
            target_sum = np.moveaxis(cell_sums(
                weight[:, None] * targets / shares[bb, bn, bj, bi][:, None], (bb, bn, bj, bi),
                (n, na, h, w)), -1, 2)                                    # (n, na, 4, h, w)
            live = coeff > 0
            mean = np.where(live[:, :, None], target_sum / np.where(live, coeff, 1)[:, :, None], 0)
            sxy = a["scale_x_y"]
            s[:, :, 0:2] = coeff[:, :, None] * sxy
            t[:, :, 0:2] = (mean[:, :, 0:2] + (sxy - 1) / 2) / sxy
            s[:, :, 2:4] = coeff[:, :, None]
            t[:, :, 2:4] = mean[:, :, 2:4]
        else:
            # AlexeyAB's box delta is not a gradient (ops/iou_loss.py): darkbp's loss holds
            # the IoU term it steps towards, iou_normalizer·(1 − IoU) per assignment.
            terms = {"cells": (bb, bn, bj, bi), "truths": truth_box, "anchors": anchors[anchor],
                     "weight": F32(a["iou_normalizer"]) / shares[bb, bn, bj, bi],
                     "netw": netw, "neth": neth}

        # The statistics, from the truths' assignments (not truth_thresh's)
        own = slice(len(matched[0]), None)
        image_of = bb[own]
        found_iou = iou_found[own]
        all_kinds = {kind: iou_kind(kind, pred[bb, bn, bj, bi][own], truth_box[own])
                     for kind in ("giou",)}
        no_box = delta.copy()
        no_box[:, :, :4] = 0
        stats = {
            "iou": sum32([sum32(found_iou[image_of == b]) for b in range(n)]),
            "iou_loss": sum32([sum32(F32(1) - found_iou[image_of == b]) for b in range(n)]),
            "giou_loss": sum32([sum32(F32(1) - all_kinds["giou"][image_of == b])
                                for b in range(n)]),
            "count": int(len(found_iou)), "images": n,
            "delta2": sum32(delta.astype(F32) ** 2), "class2": sum32(no_box.astype(F32) ** 2),
            "recall50": int((found_iou > F32(.5)).sum()),
            "recall75": int((found_iou > F32(.75)).sum()),
        }
        return Targets(truth, delta, s, t, stats, terms)

    def _mse_targets(self, box, anchor, i, j, w, h, netw, neth) -> np.ndarray:
        """(k, 4) float32 targets of the mse box delta: the truth's offset in its cell and
        log(size / anchor) (new_coords: sqrt(size / (4·anchor)))."""
        tx = box[:, 0] * F32(w) - i.astype(F32)
        ty = box[:, 1] * F32(h) - j.astype(F32)
        rw = (box[:, 2] * F32(netw) / anchor[:, 0]).astype(np.float64)
        rh = (box[:, 3] * F32(neth) / anchor[:, 1]).astype(np.float64)
        if self.alexeyab["new_coords"]:
            tw, th = np.sqrt(box[:, 2] * F32(netw) / (F32(4) * anchor[:, 0])).astype(np.float64), \
                np.sqrt(box[:, 3] * F32(neth) / (F32(4) * anchor[:, 1])).astype(np.float64)
        else:
            tw, th = np.log(rw), np.log(rh)
        return np.stack([tx, ty, tw, th], axis=1).astype(F32)

    def _box_deltas(self, out, pred, box, anchor, i, j, w, h, netw, neth):
        """delta_yolo_box of each assignment: (k, 4) its delta of x, y, w, h from the outputs
        `out` (k, 4) and the predicted boxes `pred` (k, 4), and the (k,) IoU of the two."""
        a = self.alexeyab
        f = out.dtype.type
        norm = F32(a["iou_normalizer"])
        found = ab_iou(pred, box)
        if a["iou_loss_used"] == "mse":
            scale = F32(2) - box[:, 2] * box[:, 3]
            targets = self._mse_targets(box, anchor, i, j, w, h, netw, neth)
            return (scale[:, None] * (targets - out) * norm).astype(out.dtype), found
        pred = pred.copy()
        pred[:, 2:4] = np.where(pred[:, 2:4] == 0, F32(1), pred[:, 2:4])   # as AlexeyAB
        step = box_step(pred, box, a["iou_loss_used"]).astype(np.float64)
        if not a["new_coords"]:
            step[:, 2:4] = (step[:, 2:4] * np.exp(out[:, 2:4].astype(np.float64))
                            ).astype(F32)
        step = (step.astype(F32) * norm).astype(F32)
        step = np.where(np.isfinite(step), step, F32(0))
        if np.isfinite(a["max_delta"]):
            step = np.clip(step, -F32(a["max_delta"]), F32(a["max_delta"]))
        return step.astype(f), found

    def cost(self, truth: Truth) -> np.ndarray:
        """Per image (N,), the loss whose negative gradient at this head's input is Darknet's
        delta: s·BCE(t, σ(z)) on x and y (t the offset in the cell, s = 2 − w·h), ½·s·(t − z)²
        on w and h (t = log(truth size / anchor)), BCE on the objectness (t 1 where a truth
        is assigned, else 0; no term where ignored) and on the classes of assigned
        predictions (t one-hot). z is the head's input; the assignment is held fixed."""
        return self.loss(self._x, self.assign(truth))

    def loss(self, x: np.ndarray, found: Targets) -> np.ndarray:
        """`cost` at the input x (N, C, H, W), the targets held fixed (gradcheck's).

        AlexeyAB's: the same terms with its scales and targets (scale_x_y folded into the
        target of x and y, see _alexeyab_targets), ½·s·(t − z)² on every entry with
        new_coords (no logistic), times delta_normalizer; with an iou_loss, the box's term
        is iou_normalizer·(1 − IoU of iou_loss) instead (its delta is AlexeyAB's step)."""
        z = np.ascontiguousarray(self._entries(x))   # as the targets (a CHWN conv's output
                                                     # would make every pass below strided)
        if self.fork == "alexeyab" and self.alexeyab["new_coords"]:
            terms = found.scale * (found.target - z) ** 2 / 2
        else:
            terms = found.scale * bce_logits(found.target, z)
            wh = np.s_[:, :, 2:4]
            terms[wh] = found.scale[wh] * (found.target[wh] - z[wh]) ** 2 / 2
        total = terms.reshape(len(z), -1).sum(axis=1)
        if found.terms is not None:
            total = total + self._iou_terms(z, found.terms)
        if self.fork == "alexeyab":
            total = total * self.alexeyab["delta_normalizer"]
        return total

    def _iou_terms(self, z: np.ndarray, terms: dict) -> np.ndarray:
        """Per image, Σ weight·(1 − IoU of iou_loss) of the assignments' boxes at input z."""
        y = z.copy()
        if not self.alexeyab["new_coords"]:
            y[:, :, 0:2] = 1 / (1 + np.exp(-z[:, :, 0:2]))
        sxy = self.alexeyab["scale_x_y"]
        y[:, :, 0:2] = y[:, :, 0:2] * sxy - (sxy - 1) / 2
        bb, bn, bj, bi = terms["cells"]
        _, h, w = self.in_shape
        out = y[bb, bn, :4, bj, bi]
        anchor = terms["anchors"]
        if self.alexeyab["new_coords"]:
            size = out[:, 2:4] ** 2 * 4 * anchor
        else:
            size = np.exp(out[:, 2:4]) * anchor
        pred = np.stack([(bi + out[:, 0]) / w, (bj + out[:, 1]) / h,
                         size[:, 0] / terms["netw"], size[:, 1] / terms["neth"]], axis=1)
        value = iou_kind64(self.alexeyab["iou_loss_used"], pred, terms["truths"])
        return cell_sums(np.asarray(terms["weight"] * (1 - value), np.float64), (bb,), (len(z),))

    def input_grad(self, truth: Truth) -> np.ndarray:
        """d(Σ_images cost)/d(input) = −delta: Darknet adds its delta to the previous layer's
        without the logistic's derivative (that of BCE through σ is σ − t). AlexeyAB's GPU
        backward multiplies it by delta_normalizer (its CPU backward does not)."""
        delta = self.assign(truth).delta
        if self.fork == "alexeyab" and self.alexeyab["delta_normalizer"] != 1:
            delta = delta * delta.dtype.type(self.alexeyab["delta_normalizer"])
        return -delta.reshape(-1, *self.in_shape)

    def darknet_cost(self, truth: Truth) -> float:
        """Darknet's *l.cost. AlexeyAB's (show_details, its default): |delta|² with mse; with
        another iou_loss, iou_normalizer·(mean 1 − IoU, or 1 − GIoU for giou) plus
        obj_normalizer·|delta without the box entries|²."""
        stats = self.assign(truth).stats
        if self.fork == "pjreddie":
            return super().darknet_cost(truth)
        return self._alexeyab_costs(stats)[0]

    def split_darknet_cost(self, costs: float, stats: dict) -> float:
        """AlexeyAB's cost with an IoU loss holds a mean over the pass's truths, made again
        from the shards' summed statistics (a sum of the shards' means would be wrong)."""
        if self.fork == "pjreddie":
            return costs
        return self._alexeyab_costs(stats)[0]

    def _alexeyab_costs(self, stats: dict) -> tuple[float, float, float]:
        """(*l.cost, |delta|², obj_normalizer·|delta without the boxes|²) in float32."""
        a = self.alexeyab
        loss = F32(stats["delta2"])
        classification = F32(a["obj_normalizer"]) * F32(stats["class2"])
        if a["iou_loss_used"] == "mse" or not a["show_details"]:
            return float(loss), float(loss), float(classification)
        count = stats["count"] or 1
        total = stats["giou_loss"] if a["iou_loss_used"] == "giou" else stats["iou_loss"]
        cost = F32(a["iou_normalizer"]) * (F32(total) / F32(count)) + classification
        return float(cost), float(loss), float(classification)

    def stats_means(self, stats: dict) -> dict[str, float]:
        if self.fork == "alexeyab":
            return self._alexeyab_means(stats)
        count = stats["count"]
        with np.errstate(divide="ignore", invalid="ignore"):
            return {"Avg IOU": F32(stats["iou"]) / F32(count),
                    "Class": F32(stats["class"]) / F32(count),
                    "Obj": F32(stats["obj"]) / F32(count),
                    "No Obj": F32(stats["no_obj"]) / F32(stats["predictions"]),
                    ".5R": F32(stats["recall50"]) / F32(count),
                    ".75R": F32(stats["recall75"]) / F32(count), "count": count}

    def stats_line(self, stats: dict) -> str:
        """forward_yolo_layer's line, from `statistics` (summed over the shards of a pass)."""
        means = self.stats_means(stats)
        if self.fork == "alexeyab":
            return self._alexeyab_stats_line(means)
        return ("Region %d Avg IOU: %f, Class: %f, Obj: %f, No Obj: %f, .5R: %f, .75R: %f,  "
                "count: %d" % (self.index, *means.values()))

    def _alexeyab_means(self, stats: dict) -> dict[str, float]:
        """AlexeyAB's numbers: the IoU over the truths, then the losses per image."""
        count = stats["count"] or 1
        _, loss, classification = self._alexeyab_costs(stats)
        images = F32(stats["images"])
        means = {"Avg IOU": F32(stats["iou"]) / F32(count), "count": count}
        if self.alexeyab["show_details"]:
            means["class_loss"] = F32(classification) / images
            means["iou_loss"] = (F32(loss) - F32(classification)) / images
        means["total_loss"] = F32(loss) / images
        return means

    def _alexeyab_stats_line(self, means: dict) -> str:
        """AlexeyAB's fprintf in forward_yolo_layer (diou and ciou print as "iou")."""
        a = self.alexeyab
        name = a["iou_loss_used"] if a["iou_loss_used"] in ("mse", "giou") else "iou"
        head = ("v3 (%s loss, Normalizer: (iou: %.2f, obj: %.2f, cls: %.2f) Region %d Avg "
                "(IOU: %f), count: %d, " % (name, F32(a["iou_normalizer"]),
                                            F32(a["obj_normalizer"]), F32(a["cls_normalizer"]),
                                            self.index, means["Avg IOU"], means["count"]))
        if not a["show_details"]:
            return head + "total_loss = %f " % means["total_loss"]
        return head + "class_loss = %f, iou_loss = %f, total_loss = %f " % (
            means["class_loss"], means["iou_loss"], means["total_loss"])

    def nms_overlap(self):
        """The overlap detection's NMS compares with `--nms` for this head's nms_kind: None
        for Darknet's box_iou (default), AlexeyAB's DIoU for greedynms, its DIoU with the
        distance to the power beta_nms for diounms (diounms_sort)."""
        kind = self.alexeyab["nms_kind_used"]
        if kind == "greedynms":
            return diou
        if kind == "diounms":
            beta = self.alexeyab["beta_nms"]
            return lambda a, b: diounms(a, b, beta)
        return None

    def gradient_refusal(self) -> str | None:
        """Why gradcheck cannot check this head (None: it can): AlexeyAB's iou_loss delta."""
        kind = self.alexeyab["iou_loss_used"]
        if self.fork == "alexeyab" and kind != "mse":
            return (f"iou_loss={self.alexeyab['iou_loss']}: AlexeyAB's box delta (trained as "
                    f"it is) is no loss's gradient, so gradcheck has nothing to check it "
                    f"against; use iou_loss=mse to gradcheck the rest of the network")
        return None

    def training_refusal(self):
        if "untrained" in self.alexeyab:
            return f"{self.alexeyab['untrained']} is not trained by darkbp: remove it"
        if self.settings["map"]:
            return "map= (a class map file) is not trained by darkbp: remove it"
        return None

    def to_onnx(self, graph, inputs):
        # every anchor's entries: x, y, w, h, objectness, classes; w and h stay raw
        # (new_coords: all raw); scale_x_y: x·s − (s − 1)/2 on x and y
        entries = np.ones(self.classes + 5, bool)
        entries[2:4] = False
        if self.alexeyab["new_coords"]:
            entries[:] = False
        scale = self.alexeyab["scale_x_y"]
        if scale == 1:
            return graph.logistic_on(inputs[0], np.tile(entries, len(self.mask)),
                                     graph.head_output(self))
        y = graph.logistic_on(inputs[0], np.tile(entries, len(self.mask)))
        factor = np.ones(self.classes + 5, np.float32)
        offset = np.zeros(self.classes + 5, np.float32)
        factor[0:2], offset[0:2] = scale, -0.5 * (scale - 1)
        shape = (1, -1, 1, 1)
        y = graph.node("Mul", [y, graph.constant(np.tile(factor, len(self.mask)).reshape(shape),
                                                 "scale_x_y")])
        return graph.node("Add", [y, graph.constant(
            np.tile(offset, len(self.mask)).reshape(shape), "offset_x_y")],
            graph.head_output(self))
