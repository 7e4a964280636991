"""Training a detector: darkbp.train's Trainer on Darknet's detection data, scored by mAP.

    data = open_detection_data("mnist-det")        # or a Darknet .data file
    trainer = DetectionTrainer(network, data, TrainOptions(epochs=10), listener)
    trainer.run()

The data is a `.data` file's `train=` and `valid=` lists with Darknet's label files
(darkbp.labels), every label file checked before anything is decoded. Each batch is
Darknet's load_data_detection of the images (darkbp.detdata), drawn from (seed, batch
number) as the classifier's augmentation is, with the truth boxes the heads train on
(darkbp.ops.detection.Truth). After each epoch the valid list is detected as `darkbp map`
detects it (thresh .005, NMS .45) and scored: the epoch's "accuracy" is mAP@0.5.
Everything else (SGD, EMA, checkpoints, --resume, signals) is the Trainer's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from darkbp import catalogue
from darkbp.cfg import CfgWarning
from darkbp.classifier import data_file_names
from darkbp.detdata import DetectionAugment, DetectionList, load_list
from darkbp.detector import NMS, check_detector, detected_arrays
from darkbp.errors import DarkbpError
from darkbp.imagedata import existing_file, read_data_file
from darkbp.layers.head import summed_statistics
from darkbp.mapeval import Scorer, ValidList, image_paths, read_truths, valid_list
from darkbp.mnistdet import make_mnist_det
from darkbp.ops.detection import Truth
from darkbp.train import Trainer

MAP_THRESH = 0.005      # AlexeyAB's detector map: the detections scored


@dataclass
class DetectionData:
    """A detection data set: the lists of a .data file, its names, where it came from."""

    name: str
    source: Path                 # the .data file
    names: list[str]
    train: DetectionList
    valid: ValidList
    backup: Path | None = None
    notice: str | None = None    # one line the user should read (mnist-det from the sample)
    warnings: tuple[CfgWarning, ...] = ()
    is_sample: bool = False

    @property
    def classes(self) -> int:
        return len(self.names)


def open_detection_data(spec: str, data_dir: str | None = None) -> DetectionData:
    """`mnist-det` (made in the dataset cache on first use, darkbp.mnistdet) or a Darknet
    .data file with train=, valid= and names= (or labels=). Every label file of the train
    list is read now: a bad line is a DarkbpError naming it."""
    notice, is_sample = None, False
    if spec == "mnist-det":
        data_file = catalogue.cache_dir("mnist-det") / "mnist-det.data"
        if not data_file.is_file():
            made = make_mnist_det(data_file.parent.parent, data_dir=data_dir)
            notice, data_file = made.notice, made.data_file
        is_sample = "from the sample" in data_file.read_text().split("\n", 1)[0]
        spec = str(data_file)
    elif not spec.endswith(".data") or not Path(spec).is_file():
        raise DarkbpError("a detector trains on a Darknet .data file (train=, valid=, names=) "
                          "or on mnist-det", file=spec)
    names, names_path, _, warnings = data_file_names(spec)
    options, _ = read_data_file(spec)
    if "train" not in options:
        raise DarkbpError("no train= line: a detector trains on the images of the train list",
                          file=spec)
    train = load_list(existing_file(options["train"], "train", Path(spec).parent, spec),
                      len(names))
    valid = valid_list(spec, names, str(names_path))
    backup = Path(options["backup"].value) if "backup" in options else None
    return DetectionData(Path(spec).stem, Path(spec), names, train, valid, backup, notice,
                         tuple(warnings), is_sample)


@dataclass(frozen=True)
class MultiScale:
    """`random=1` in the last head ([yolo] or [region]): every PERIOD batches the network
    input becomes a random size, as AlexeyAB's train_detector draws it: a scale r from
    rand_scale(coef) (uniform in [1, coef], inverted half the time; coef 1.4 for random=1,
    else the value itself), the cfg's width and height times r rounded to multiples of
    STEP. The first PERIOD batches and the last LAST are at the largest size (AlexeyAB's
    memory check, and the batch-norm statistics the weights end with). Each period's draw
    comes from (seed, period), so --resume stays exact.

    AlexeyAB rounds r·size/32 + 1, which keeps every r < 1 at the cfg's size; darkbp rounds
    r·size/32, so the sizes do span 1/coef to coef times the cfg's.
    """

    PERIOD = 10
    STEP = 32
    LAST = 100
    STREAM = 5               # the first word of the draws' seed (detdata.STREAM: the others)

    width: int
    height: int
    coef: float

    @classmethod
    def of_network(cls, network) -> "MultiScale | None":
        """The cfg's multi-scale training; None without it. A DarkbpError when the network
        can not take the sizes (a layer whose parameters depend on them)."""
        head = network.layers[-1]
        random = head.settings.get("random", 0) if head.type in ("yolo", "region") else 0
        if not random:
            return None
        if random < 0:
            raise DarkbpError(f"random={random:g}: expected 0, 1 (sizes from 1/1.4 to 1.4 "
                              "times the cfg's) or the largest scale", file=network.file,
                              line=head.line)
        config = network.config
        scales = cls(config.width, config.height, 1.4 if random == 1 else max(random,
                                                                              1 / random))
        for size in (scales.scaled(1 / scales.coef), scales.largest, scales.cfg_size):
            network.resize(*size)
        return scales

    @property
    def cfg_size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def largest(self) -> tuple[int, int]:
        return self.scaled(self.coef)

    def scaled(self, r: float) -> tuple[int, int]:
        return tuple(max(self.STEP, round(r * side / self.STEP) * self.STEP)
                     for side in (self.width, self.height))

    def size(self, seed: int, batch_num: int, total_batches: int) -> tuple[int, int]:
        """The (width, height) of batch `batch_num` (counted from 0) of a run of
        total_batches."""
        period = batch_num // self.PERIOD
        if period == 0 or period * self.PERIOD >= total_batches - self.LAST:
            return self.largest
        scale, invert = np.random.default_rng([seed, self.STREAM, period]).random(2)
        r = 1 + scale * (self.coef - 1)
        return self.scaled(1 / r if invert < 0.5 else r)

    def describe(self) -> str:
        """One line for the start of training."""
        low, high = self.scaled(1 / self.coef), self.largest
        return (f"multi-scale (random): every {self.PERIOD} batches the input becomes "
                f"{low[0]} x {low[1]} to {high[0]} x {high[1]}, the last {self.LAST} "
                f"batches at {high[0]} x {high[1]}; mAP at the cfg's {self.width} x "
                f"{self.height}")


class _MapEvaluation:
    """What the Trainer reads of an evaluation: mAP@0.5 as its accuracy."""

    def __init__(self, result):
        self.result = result
        self.accuracy = result.map50
        self.top_accuracy = None


RECENT = 10     # batches the progress display's head statistics are running means over


def _added(sums: list[dict] | None, more: list[dict]) -> list[dict]:
    """Per head, the statistics `sums` plus `more` (sums None: `more`)."""
    return list(more) if sums is None else [summed_statistics(pair) for pair in zip(sums, more)]


class DetectionTrainer(Trainer):
    """Trains a detector (a cfg with [yolo], [region] or [detection] heads) on DetectionData."""

    metric = "mAP@0.5"

    def _check_data(self) -> None:
        classes = check_detector(self.network)
        if classes != self.dataset.classes:
            raise DarkbpError(f"the detection heads of {self.network.file} have "
                              f"classes={classes}, but {self.dataset.source} names "
                              f"{self.dataset.classes} classes", file=str(self.dataset.source))
        self.top = None
        self.augment_by_default = True
        self.scales = MultiScale.of_network(self.network)

    @property
    def train_size(self) -> int:
        return len(self.dataset.train)

    def _decode_data(self) -> None:
        self.augment = DetectionAugment.of_network(self.network)
        channels = self.network.input_shape[0]
        source = self.dataset.train.source
        self.images = self.dataset.train.decode(
            channels, lambda done, total: self.listener.decoding(source, done, total),
            self.options.threads)
        self.valid_truths, counts = read_truths(self.dataset.valid, self.dataset.classes)
        self.valid_paths = image_paths(self.dataset.valid)
        for line in self.dataset.train.counts.warnings() + counts.warnings():
            self.listener.notice(line)
        if self.scales:
            self.listener.notice(self.scales.describe())

    def _input(self, images: np.ndarray, batch_num: int):
        """Batch batch_num's input and truth, at its size (this runs in a background
        thread while the network trains at another: it reads no network shape)."""
        augment = self.augment
        if self.scales:
            w, h = self.scales.size(self.options.seed, batch_num, self.total_batches)
            augment = dataclasses.replace(augment, width=w, height=h)
        x, boxes = augment.batch(self.images, self.dataset.train.labels, images,
                                 self.options.seed, batch_num)
        # Darknet's *net->seen in the forward: this batch's images included.
        return x, Truth(boxes, augment.width, augment.height,
                        seen=(batch_num + 1) * self.batch)

    def _batch_passes(self, x: np.ndarray, truth: Truth) -> float:
        self.network.resize(truth.netw, truth.neth)
        return super()._batch_passes(x, truth)

    def run(self):
        try:
            return super().run()
        finally:
            if self.scales:
                self.network.resize(*self.scales.cfg_size)

    # ------------------------------------------------------------------ Darknet's numbers
    def _pass_done(self) -> None:
        """Darknet's cost of the pass (the mean of its heads' |delta|²) and the heads'
        statistics, summed over the batch (the runner's shards and the batch's passes)."""
        numbers = self.runner.head_numbers
        self._batch_cost = getattr(self, "_batch_cost", 0.0) + float(
            np.mean([cost for cost, _ in numbers]))
        self._batch_stats = _added(getattr(self, "_batch_stats", None),
                                   [stats for _, stats in numbers])

    def _batch_done(self) -> dict:
        """Darknet's cost per image of the batch, and each head's running means: its
        statistics line over the last RECENT batches, "count" per batch. The batch's
        statistics join the log's window."""
        cost, self._batch_cost = self._batch_cost / self.batch, 0.0
        stats, self._batch_stats = self._batch_stats, None
        self._window_costs = getattr(self, "_window_costs", []) + [cost]
        self._window_stats = _added(getattr(self, "_window_stats", None), stats)
        self._recent = (getattr(self, "_recent", []) + [stats])[-RECENT:]
        heads = []
        for k, head in enumerate(self.network.heads):
            sums = summed_statistics([batch[k] for batch in self._recent])
            means = head.stats_means(sums)
            means["count"] = sums["count"] / len(self._recent)
            heads.append((f"[{head.header}] {head.index}", means))
        return {"darknet_cost": cost, "heads": tuple(heads)}

    def _log_extras(self) -> dict:
        """Darknet's cost per image (mean over the window) and each head's statistics line
        over the window, as Darknet prints them ("Region 16 Avg IOU: ..."); nothing for an
        empty window."""
        if not getattr(self, "_window_costs", None):
            return {}
        record = {"darknet_cost": float(np.mean(self._window_costs)),
                  "heads": [head.stats_line(stats) for head, stats in
                            zip(self.network.heads, self._window_stats)]}
        self._window_costs, self._window_stats = [], None
        return record

    def test_evaluation(self, ema: bool = False) -> _MapEvaluation:
        """The valid list detected with the raw or the EMA weights and scored (mAP@0.5), at
        the cfg's input size."""
        if self.scales:
            self.network.resize(*self.scales.cfg_size)
        if not ema:
            return _MapEvaluation(self.valid_scores())
        with self.ema.swapped_in():
            return _MapEvaluation(self.valid_scores())

    def valid_scores(self, forward=None):
        """The valid list detected as `darkbp map` detects it (thresh .005, NMS .45) and
        scored (darkbp.mapeval's result); `forward`: the heads' outputs of a batch in place
        of the network's (darkbp.detector.detected_arrays), e.g. a twin's in another framework;
        by default the training Runner's, whose workers split the passes."""
        scorer = Scorer(self.dataset.classes)
        threads = self.options.threads
        if forward is None and self.runner is not None and self.runner.split:
            forward, threads = self.runner.head_outputs, 1      # BLAS: 1 thread beside them
        found = detected_arrays(self.network, self.valid_paths, thresh=MAP_THRESH, hier=0,
                                nms=NMS, threads=threads, forward=forward)
        for image, (boxes, classes) in zip(found, self.valid_truths):
            scorer.add(*image, boxes, classes)
        return scorer.result()
