"""Training: Darknet's SGD over batches and subdivisions, evaluation, EMA, checkpoints, resume.

One update per batch of `batch` images (SPEC section 5): the batch is split into
`subdivisions` forward/backward passes whose gradients add up, then `SGD.step`
applies Darknet's rule with the learning rate of the cfg's policy. After each
epoch the test split is evaluated (raw weights, and EMA weights when EMA is on)
and checkpoints are written atomically to the output folder:

    NAME_last.weights        raw weights, Darknet's format
    NAME_ema.weights         bias-corrected EMA weights (with EMA)
    NAME_last.state.npz      everything `--resume` needs to continue bit for bit
    NAME_final.weights       raw weights at the end of the run
    NAME_metrics.jsonl       one JSON object per line, each batch's loss among them
    NAME_chart.png           loss, learning rate and accuracies, drawn from the log
                             (darkbp.chart; needs matplotlib)

Everything random derives from the seed and a counter (the data order of epoch
e from (seed, e), the `random` policy of batch b from (seed, b), the training
augmentation of batch b from (seed, 3, b): darkbp.augment, dropout masks
and crop offsets from (seed, b, subdivision, layer): darkbp.passes), so a
resumed run needs no generator state and ends with the same weights as an
uninterrupted one. The state file's format is darkbp.checkpoint's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from darkbp import chart
from darkbp.atomic import ensure_writable_dir
from darkbp.augment import draws, training_augment
from darkbp.checkpoint import Progress, load_state, save_state
from darkbp.datasets import Dataset, network_input
from darkbp.ema import EMA
from darkbp.errors import DarkbpError, RunFailed
from darkbp.evaluate import Evaluation, check_fits, evaluate, top_k
from darkbp.network import Network
from darkbp.parallel import Runner
from darkbp.passes import Noise
from darkbp.sgd import SGD
from darkbp.weights import load_weights, save_weights

LOG_EVERY = 50          # batches between two "batch" lines of the metrics log


@dataclass
class TrainOptions:
    """What the command line decides; None means 'as the cfg says'."""

    out: Path = Path("backup")
    epochs: int | None = None
    max_batches: int | None = None
    ema: float | None = None
    seed: int = 0
    resume: bool = False
    weights: Path | None = None
    threads: int = 1


@dataclass
class BatchReport:
    batch_num: int          # updates done, including this one
    total_batches: int
    epoch: int              # 1-based epoch this batch belongs to
    loss: float             # mean cost over the batch's images
    lr: float
    images_per_s: float


@dataclass
class EpochReport:
    epoch: int
    batch_num: int
    accuracy: float
    ema_accuracy: float | None
    loss: float             # mean training loss over the epoch
    wall_time: float
    top: int | None = None                  # k of the top-k accuracies, None without them
    top_accuracy: float | None = None
    ema_top_accuracy: float | None = None


class TrainListener:
    """Receives progress; the CLI renders it, tests record it. Every method is optional."""

    def decoding(self, source: str, done: int, total: int) -> None: ...
    def start(self, trainer: "Trainer") -> None: ...
    def batch(self, report: BatchReport) -> None: ...
    def epoch(self, report: EpochReport) -> None: ...
    def saved(self, paths: list[Path]) -> None: ...


class Trainer:
    """Trains `network` (float32) on `dataset` as the cfg and `options` say."""

    def __init__(self, network: Network, dataset: Dataset, options: TrainOptions,
                 listener: TrainListener | None = None):
        self.network, self.dataset, self.options = network, dataset, options
        self.listener = listener or TrainListener()
        config = network.config
        check_fits(network, dataset)
        self.top = top_k(len(dataset.classes), dataset.top)
        network.check_trainable()
        network.check_batch_statistics(config.mini_batch)
        self.out = ensure_writable_dir(options.out)
        self.batch = config.mini_batch * config.subdivisions     # B, as Darknet updates with
        self.batches_per_epoch = len(dataset.train_labels) // self.batch
        if self.batches_per_epoch == 0:
            raise DarkbpError(f"batch={config.batch} is larger than the {len(dataset.train_labels)} "
                              "training images", file=network.file, line=config.line)
        self.total_batches = self._total_batches()
        self.schedule = dataclasses.replace(config.schedule, max_batches=self.total_batches)
        self.ema_decay = config.ema if options.ema is None else options.ema
        if not 0 <= self.ema_decay < 1:
            raise DarkbpError(f"--ema must be in [0, 1), got {self.ema_decay:g}")

        network.initialize(options.seed, np.float32)
        if options.weights is not None:
            load_weights(options.weights, network.layers)
        self.sgd = SGD(network.layers, config.momentum, config.decay, self.batch)
        self.ema = EMA(network.layers, self.ema_decay) if self.ema_decay else None
        self.batch_num = 0
        self.epoch = 0
        self.elapsed = 0.0          # training wall time over all runs, for the metrics log
        if options.resume:
            progress = load_state(self.path("state"), network, self.sgd, self.ema,
                                  Progress(seed=options.seed, ema_decay=self.ema_decay))
            self.batch_num, self.epoch = progress.batch_num, progress.epoch
            self.elapsed = progress.elapsed
        # The augmentation the cfg asks for on this data (None: the images as they are).
        self.augment = training_augment(config, dataset.augment_by_default, network.file)
        # Image files are decoded once, here, after every quick check.
        self.dataset = dataset.decoded(network.input_shape, self.listener.decoding,
                                       options.threads, augment=self.augment)
        self.runner = Runner(network, options.threads)

        # Labels to one-hot rows once; pixels become float input batch by batch, so that
        # the set stays in memory as uint8.
        self.train_truth = np.eye(network.outputs, dtype=np.float32)[dataset.train_labels]

    # ------------------------------------------------------------------ paths
    def path(self, kind: str) -> Path:
        """The output file of `kind`: last, ema, final (.weights), state, metrics or chart."""
        suffix = {"state": "_last.state.npz", "metrics": "_metrics.jsonl",
                  "chart": "_chart.png"}
        return self.out / (self.network.name + suffix.get(kind, f"_{kind}.weights"))

    def _total_batches(self) -> int:
        if self.options.epochs is not None:
            return self.options.epochs * self.batches_per_epoch
        if self.options.max_batches is not None:
            return self.options.max_batches
        if self.network.config.schedule.max_batches:
            return self.network.config.schedule.max_batches
        raise DarkbpError("the cfg sets no max_batches: give --epochs or --max-batches",
                          file=self.network.file, line=self.network.config.line)

    # ------------------------------------------------------------------ loop
    def run(self) -> EpochReport | None:
        """Train until total_batches; returns the last epoch's report."""
        self.listener.start(self)
        self._log({"event": "start", "cfg": self.network.file, "data": self.dataset.name,
                   "data_source": str(self.dataset.source), "sample": self.dataset.is_sample,
                   "batch": self.batch, "subdivisions": self.network.config.subdivisions,
                   "total_batches": self.total_batches, "batch_num": self.batch_num,
                   "ema": self.ema_decay, "seed": self.options.seed})
        report = None
        # Overflow shows up as a non-finite loss, which stops the run with a clear message.
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                while self.batch_num < self.total_batches:
                    report = self._run_epoch()
        finally:
            self.runner.close()
        self._save(final=True)
        return report

    def _run_epoch(self) -> EpochReport:
        config = self.network.config
        # Where we are follows from batch_num alone, so a run that stopped part-way through
        # an epoch (a shorter --max-batches) resumes at the very next batch of that epoch.
        done_epochs, first = divmod(self.batch_num, self.batches_per_epoch)
        epoch = done_epochs + 1
        order = np.random.default_rng([self.options.seed, epoch]).permutation(
            len(self.train_truth))
        last = min(self.batches_per_epoch,
                   self.total_batches - done_epochs * self.batches_per_epoch)
        started = time.perf_counter()
        losses, lrs, lr = [], [], None
        logged = 0          # losses[:logged] are in the log already
        window_start = started
        for images, x in self._batches(order, first, last):
            tic = time.perf_counter()
            lr = self.schedule.rate(self.batch_num,
                                    np.random.default_rng([self.options.seed, 1, self.batch_num]))
            parts = zip(np.split(images, config.subdivisions), np.split(x, config.subdivisions))
            loss = sum(self.runner.train_step(piece, self.train_truth[part],
                                              Noise(self.options.seed, self.batch_num, sub))
                       for sub, (part, piece) in enumerate(parts))
            loss /= self.batch
            if not math.isfinite(loss):
                raise RunFailed(self._diverged_message(loss, epoch))
            self.sgd.step(lr)
            if self.ema is not None:
                self.ema.update()
            self.batch_num += 1
            losses.append(loss)
            lrs.append(lr)
            report = BatchReport(self.batch_num, self.total_batches, epoch, loss, lr,
                                 self.batch / (time.perf_counter() - tic))
            self.listener.batch(report)
            if self.batch_num % LOG_EVERY == 0:
                window = losses[logged:]
                now = time.perf_counter()
                self._log({"event": "batch", "batch_num": self.batch_num, "epoch": epoch,
                           "loss": float(np.mean(window)), "lr": lr,
                           **_per_batch(window, lrs[logged:]),
                           "images_per_s": len(window) * self.batch / (now - window_start),
                           "wall_time": self.elapsed + now - started})
                window_start, logged = now, len(losses)
        epoch_time = time.perf_counter() - started
        self.elapsed += epoch_time
        self.epoch = epoch
        raw = self.test_evaluation()
        ema = self.test_evaluation(ema=True) if self.ema else None
        report = EpochReport(epoch=epoch, batch_num=self.batch_num, accuracy=raw.accuracy,
                             ema_accuracy=ema.accuracy if ema else None,
                             loss=float(np.mean(losses)) if losses else float("nan"),
                             wall_time=self.elapsed, top=self.top,
                             top_accuracy=raw.top_accuracy,
                             ema_top_accuracy=ema.top_accuracy if ema else None)
        self._log({"event": "epoch", **dataclasses.asdict(report), "lr": lr,
                   **_per_batch(losses[logged:], lrs[logged:]),
                   "images_per_s": len(losses) * self.batch / epoch_time})
        self._save(final=False)
        if chart.available():
            # From the log alone, so that `darkbp plot` draws the very same chart.
            chart.write_chart(chart.read_series(self.path("metrics")), self.path("chart"))
        self.listener.epoch(report)
        return report

    def test_accuracy(self, ema: bool = False) -> float:
        """Top-1 accuracy on the test split, with the raw or the EMA weights."""
        return self.test_evaluation(ema).accuracy

    def test_evaluation(self, ema: bool = False) -> Evaluation:
        """The test split classified with the raw or the EMA weights (top-k as self.top)."""
        def run():
            return evaluate(self.network, self.dataset.test_images, self.dataset.test_labels,
                            self.dataset.classes, runner=self.runner, top=self.top)
        if not ema:
            return run()
        with self.ema.swapped_in():
            return run()

    def _batches(self, order: np.ndarray, first: int, last: int):
        """(images, input) of the epoch's batches first..last-1 in `order`: the indexes
        into the training set and their float32 network input.

        With augmentation, the next batch's input is prepared in a background thread while
        this one trains (NumPy releases the interpreter lock in its loops). It depends on
        (seed, batch number) alone, so the overlap changes no number.
        """
        start = self.batch_num - first                # the batch number of the epoch's first

        def prepare(index: int):
            images = order[index * self.batch:(index + 1) * self.batch]
            return images, self._input(images, start + index)

        if self.augment is None or first >= last:
            yield from map(prepare, range(first, last))
            return
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(prepare, first)
            for index in range(first + 1, last + 1):
                batch = pending.result()
                if index < last:
                    pending = pool.submit(prepare, index)
                yield batch

    def _input(self, images: np.ndarray, batch_num: int) -> np.ndarray:
        """The float32 network input of batch `batch_num`, the training images at these
        indexes: augmented, with the draws of (seed, batch_num), when augmentation is on."""
        if self.augment is None:
            return network_input(self.dataset.train_images[images], self.network.input_shape)
        return self.augment.batch(self.dataset.train_images, images,
                                  draws(self.options.seed, batch_num, len(images)))

    def _diverged_message(self, loss: float, epoch: int) -> str:
        kept = self.path("last")
        keep = (f"the last good checkpoint {kept} (epoch {self.epoch}) is kept"
                if kept.exists() else "no checkpoint had been written yet")
        return (f"the loss became {loss} at batch {self.batch_num + 1} (epoch {epoch}); "
                f"training stopped and {keep}. Try a lower learning_rate or a burn_in.")

    # ------------------------------------------------------------------ checkpoints
    def _save(self, final: bool) -> None:
        seen = self.batch_num * self.batch
        layers = self.network.layers
        saved = [self.path("state")]
        save_state(saved[0], self.network, self.sgd, self.ema,
                   Progress(self.batch_num, self.epoch, self.options.seed, self.elapsed,
                            self.ema_decay))
        save_weights(self.path("last"), layers, seen)
        saved.append(self.path("last"))
        if self.ema is not None:
            with self.ema.swapped_in():
                save_weights(self.path("ema"), layers, seen)
            saved.append(self.path("ema"))
        if final:
            save_weights(self.path("final"), layers, seen)
            saved.append(self.path("final"))
        self.listener.saved(saved)

    def _log(self, record: dict) -> None:
        record = {"time": time.time(), **record}
        with open(self.path("metrics"), "a") as log:
            log.write(json.dumps(record) + "\n")


def _per_batch(losses: list[float], lrs: list[float]) -> dict:
    """The log's record of the batches since the last record: every loss, and every learning
    rate only where they differ (else the record's `lr` is that of each), 6 digits each."""
    record = {"losses": [float(f"{loss:.6g}") for loss in losses]}
    if len(set(lrs)) > 1:
        record["lrs"] = [float(f"{lr:.6g}") for lr in lrs]
    return record
