"""Training: Darknet's SGD over batches and subdivisions, evaluation, EMA, checkpoints, resume.

One update per batch of `batch` images (SPEC section 5): the batch is split into
`subdivisions` forward/backward passes whose gradients add up, then `SGD.step`
applies Darknet's rule (darkbp.adam's with `adam=1`) with the learning rate of the
cfg's policy. After each epoch the test split is evaluated (raw weights, and EMA
weights when EMA is on).
Checkpoints are written atomically to the output folder at the end of each epoch,
after every `checkpoint_every` seconds of training, and when a stop is requested
(`request_stop`: the CLI calls it on SIGINT and SIGTERM):

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
uninterrupted one, wherever it stopped. The state file's format is
darkbp.checkpoint's.

For the same reason a batch can be run again: when a worker process stops during
one (killed, out of memory), a new process takes its place and the batch is
redone from its inputs, so the run stays bit for bit. The third such stop within
a minute writes a checkpoint and ends the run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from darkbp import chart
from darkbp.atomic import append_whole, ensure_writable_dir
from darkbp.adam import optimizer
from darkbp.augment import draws, training_augment
from darkbp.checkpoint import Progress, RunIdentity, load_state, save_state
from darkbp.datasets import Dataset, network_input
from darkbp.ema import EMA
from darkbp.errors import DarkbpError, RunFailed
from darkbp.evaluate import Evaluation, check_fits, evaluate, top_k
from darkbp.network import Network
from darkbp.parallel import Runner, WorkerDied, exit_text
from darkbp.passes import Noise
from darkbp.weights import load_weights, save_weights

LOG_EVERY = 50          # batches between two "batch" lines of the metrics log
DEATHS, DEATH_WINDOW = 3, 60.0   # this many worker processes stopping within so many seconds
                                 # end a run: something kills them, redoing will not help


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
    checkpoint_every: float = 300.0     # seconds of training between checkpoints in an epoch


@dataclass
class BatchReport:
    batch_num: int          # updates done, including this one
    total_batches: int
    epoch: int              # 1-based epoch this batch belongs to
    loss: float             # mean cost over the batch's images
    lr: float
    images_per_s: float
    darknet_cost: float | None = None   # a detector's: Darknet's printed cost, per image
    # A detector's: per head, its name and the running means of its statistics line
    # (Head.stats_means over the last RECENT batches; "count" per batch).
    heads: tuple[tuple[str, dict[str, float]], ...] | None = None


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
    metric: str = "accuracy"                # what accuracy holds: a detector's "mAP@0.5"


class TrainListener:
    """Receives progress; the CLI renders it, tests record it. Every method is optional."""

    def decoding(self, source: str, done: int, total: int) -> None: ...
    def start(self, trainer: "Trainer") -> None: ...
    def batch(self, report: BatchReport) -> None: ...
    def epoch(self, report: EpochReport) -> None: ...
    def saved(self, paths: list[Path]) -> None: ...
    def notice(self, message: str) -> None: ...       # one line the user should read


class Trainer:
    """Trains `network` (float32) on `dataset` as the cfg and `options` say."""

    def __init__(self, network: Network, dataset: Dataset, options: TrainOptions,
                 listener: TrainListener | None = None):
        self.network, self.dataset, self.options = network, dataset, options
        self.listener = listener or TrainListener()
        config = network.config
        self._check_data()
        network.check_trainable()
        network.check_batch_statistics(config.mini_batch)
        self.out = ensure_writable_dir(options.out)
        self.batch = config.mini_batch * config.subdivisions     # B, as Darknet updates with
        self.batches_per_epoch = self.train_size // self.batch
        if self.batches_per_epoch == 0:
            raise DarkbpError(f"batch={config.batch} is larger than the {self.train_size} "
                              "training images", file=network.file, line=config.line)
        self.total_batches = self._total_batches()
        self.schedule = dataclasses.replace(config.schedule, max_batches=self.total_batches)
        self.ema_decay = config.ema if options.ema is None else options.ema
        if not 0 <= self.ema_decay < 1:
            raise DarkbpError(f"--ema must be in [0, 1), got {self.ema_decay:g}")
        self.identity = RunIdentity.of(network, self.batch, options.seed, self.ema_decay,
                                       f"{dataset.name} ({self.train_size:,} images)")

        network.initialize(options.seed, np.float32)
        if options.weights is not None:
            load_weights(options.weights, network.layers)
        self.sgd = optimizer(network.layers, config, self.batch)    # SGD, or Adam (adam=1)
        self.ema = EMA(network.layers, self.ema_decay) if self.ema_decay else None
        progress = Progress()
        if options.resume:
            progress = load_state(self.path("state"), network, self.sgd, self.ema,
                                  self.identity)
        self.batch_num, self.epoch = progress.batch_num, progress.epoch
        self.elapsed = progress.elapsed      # training wall time over all runs, epochs done
        # The loss and learning rate of each update so far in the epoch under way.
        self.losses, self.lrs = progress.losses, progress.lrs
        # The batch number of the checkpoint on disk, None before the first.
        self.saved_batch = self.batch_num if options.resume else None
        self.complete = self.batch_num >= self.total_batches
        self.stopping = False           # request_stop was called
        self._deaths: list[float] = []  # when worker processes stopped (time.monotonic)
        self._checkpointed = 0.0        # when the last checkpoint was written (monotonic)
        self._epoch_started = None      # perf_counter at the epoch's start, None between epochs
        if self.complete:
            # Nothing to train: run() returns at once; no images decoded, no workers started.
            self.runner = None
            return
        self._decode_data()
        self.runner = Runner(network, options.threads)

    # ------------------------------------------------------------------ the data
    # A classifier's; darkbp.detection_train.DetectionTrainer gives a detector's.
    metric = "accuracy"

    def _check_data(self) -> None:
        """The quick checks of the data against the cfg, before anything is decoded."""
        check_fits(self.network, self.dataset)
        self.top = top_k(len(self.dataset.classes), self.dataset.top)

    @property
    def train_size(self) -> int:
        return len(self.dataset.train_labels)

    def _decode_data(self) -> None:
        """Decode the image files once, after every quick check; the augmentation."""
        config, network = self.network.config, self.network
        # The augmentation the cfg asks for on this data (None: the images as they are).
        self.augment = training_augment(config, self.dataset.augment_by_default, network.file)
        self.dataset = self.dataset.decoded(network.input_shape, self.listener.decoding,
                                            self.options.threads, augment=self.augment)
        # Labels to truth rows once; pixels become float input batch by batch, so that
        # the set stays in memory as uint8.
        self.train_truth = smoothed_truth(network.outputs, config.label_smooth_eps)[
            self.dataset.train_labels]

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
    def request_stop(self) -> None:
        """Stop after the update under way, with a checkpoint (safe from a signal handler).

        An epoch's last update is still followed by its test and checkpoint."""
        self.stopping = True

    @property
    def stopped(self) -> bool:
        """Whether the run stopped at a request before its end (its checkpoint is written)."""
        return self.stopping and self.batch_num < self.total_batches

    def run(self) -> EpochReport | None:
        """Train until total_batches, or until `request_stop`; returns the last epoch's
        report (None when none ended, or the run was complete already)."""
        if self.complete:
            return None
        self.listener.start(self)
        self._log({"event": "start", "cfg": self.network.file, "data": self.dataset.name,
                   "data_source": str(self.dataset.source), "sample": self.dataset.is_sample,
                   "batch": self.batch, "subdivisions": self.network.config.subdivisions,
                   "total_batches": self.total_batches, "batch_num": self.batch_num,
                   "ema": self.ema_decay, "seed": self.options.seed})
        report = None
        self._checkpointed = time.monotonic()
        # Overflow shows up as a non-finite loss, which stops the run with a clear message.
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                while self.batch_num < self.total_batches and not self.stopping:
                    report = self._run_epoch() or report
        finally:
            self.runner.close()
        return report

    def _run_epoch(self) -> EpochReport | None:
        """Train the rest of the epoch batch_num is in, test, checkpoint; None when a stop
        was requested before the epoch's last update (its checkpoint is then written)."""
        # Where we are follows from batch_num alone, so a run that stopped part-way through
        # an epoch resumes at the very next batch of that epoch.
        done_epochs, first = divmod(self.batch_num, self.batches_per_epoch)
        epoch = done_epochs + 1
        order = np.random.default_rng([self.options.seed, epoch]).permutation(self.train_size)
        last = min(self.batches_per_epoch,
                   self.total_batches - done_epochs * self.batches_per_epoch)
        end = done_epochs * self.batches_per_epoch + last      # batch_num after the last
        started = self._epoch_started = time.perf_counter()
        # self.losses[:logged] are in the log already: a batch line every LOG_EVERY batches.
        logged = max(0, len(self.losses) - self.batch_num % LOG_EVERY)
        window_start, lr = started, None
        for x, truth in self._batches(order, first, last):
            tic = time.perf_counter()
            lr = self.schedule.rate(self.batch_num,
                                    np.random.default_rng([self.options.seed, 1, self.batch_num]))
            loss = self._batch_passes(x, truth) / self.batch
            if not math.isfinite(loss):
                raise RunFailed(self._diverged_message(loss, epoch))
            self.sgd.step(lr)
            if self.ema is not None:
                self.ema.update()
            self.batch_num += 1
            self.losses.append(loss)
            self.lrs.append(lr)
            report = BatchReport(self.batch_num, self.total_batches, epoch, loss, lr,
                                 self.batch / (time.perf_counter() - tic),
                                 **self._batch_done())
            self.listener.batch(report)
            if self.batch_num % LOG_EVERY == 0:
                window = self.losses[logged:]
                now = time.perf_counter()
                self._log({"event": "batch", "batch_num": self.batch_num, "epoch": epoch,
                           "loss": float(np.mean(window)), "lr": lr,
                           **_per_batch(window, self.lrs[logged:]),
                           "images_per_s": len(window) * self.batch / (now - window_start),
                           "wall_time": self.elapsed + now - started, **self._log_extras()})
                window_start, logged = now, len(self.losses)
            # The epoch's last update is followed by its test and checkpoint instead.
            if self.batch_num < end and self._checkpoint_if_due():
                return None
        epoch_time = time.perf_counter() - started
        self.elapsed += epoch_time
        self._epoch_started = None
        self.epoch = epoch
        what = f"epoch {epoch}'s evaluation"
        raw = self._despite_worker_deaths(self.test_evaluation, what)
        ema = (self._despite_worker_deaths(lambda: self.test_evaluation(ema=True), what)
               if self.ema else None)
        report = EpochReport(epoch=epoch, batch_num=self.batch_num, accuracy=raw.accuracy,
                             ema_accuracy=ema.accuracy if ema else None,
                             loss=float(np.mean(self.losses)) if self.losses else float("nan"),
                             wall_time=self.elapsed, top=self.top,
                             top_accuracy=raw.top_accuracy,
                             ema_top_accuracy=ema.top_accuracy if ema else None,
                             metric=self.metric)
        self._log({"event": "epoch", **dataclasses.asdict(report), "lr": lr,
                   **_per_batch(self.losses[logged:], self.lrs[logged:]),
                   "images_per_s": (last - first) * self.batch / epoch_time,
                   **self._log_extras()})
        if self.batch_num % self.batches_per_epoch == 0:
            self.losses, self.lrs = [], []      # a run that ends mid-epoch keeps them
        self._checkpoint(final=self.batch_num == self.total_batches)
        if chart.available():
            # From the log alone, so that `darkbp plot` draws the very same chart.
            with self._writing():
                chart.write_chart(chart.read_series(self.path("metrics")), self.path("chart"))
        self.listener.epoch(report)
        return report

    def _checkpoint_if_due(self) -> bool:
        """Between two updates of an epoch: a checkpoint when a stop was requested or
        checkpoint_every has passed since the last; whether to stop."""
        if self.stopping or time.monotonic() - self._checkpointed >= self.options.checkpoint_every:
            self._checkpoint()
        return self.stopping

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
        """(input, truth) of the epoch's batches first..last-1 in `order`: the float32
        network input of the training images at those indexes, and their truth.

        With augmentation, the next batch's input is prepared in a background thread while
        this one trains (NumPy releases the interpreter lock in its loops). It depends on
        (seed, batch number) alone, so the overlap changes no number.
        """
        start = self.batch_num - first                # the batch number of the epoch's first

        def prepare(index: int):
            return self._input(order[index * self.batch:(index + 1) * self.batch],
                               start + index)

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

    def _input(self, images: np.ndarray, batch_num: int) -> tuple[np.ndarray, np.ndarray]:
        """(the float32 network input, the one-hot truth) of batch `batch_num`, the training
        images at these indexes: augmented, with the draws of (seed, batch_num), when
        augmentation is on."""
        truth = self.train_truth[images]
        if self.augment is None:
            return (network_input(self.dataset.train_images[images], self.network.input_shape),
                    truth)
        return self.augment.batch(self.dataset.train_images, images,
                                  draws(self.options.seed, batch_num, len(images))), truth

    def _batch_passes(self, x: np.ndarray, truth) -> float:
        """The forward and backward passes of batch batch_num + 1, one per subdivision, their
        gradients added up; the summed cost of its images.

        A pass changes the gradients (zero before the batch: SGD.step zeroes them) and the
        batch-norm rolling statistics; when a worker process stops in one, both are put
        back and the batch is run again, as its inputs and random numbers are the same.
        """
        config = self.network.config
        state = [(array, array.copy()) for layer in self.network.layers
                 for array in (getattr(layer, name) for name in layer.state_names)]

        def passes():
            size = len(x) // config.subdivisions
            total = 0.0
            for sub in range(config.subdivisions):
                part = truth[sub * size:(sub + 1) * size]
                total += self.runner.train_step(x[sub * size:(sub + 1) * size], part,
                                                Noise(self.options.seed, self.batch_num, sub))
                self._pass_done()
            return total

        def undo():
            self.network.zero_grads()
            for array, saved in state:
                np.copyto(array, saved)
        return self._despite_worker_deaths(passes, f"batch {self.batch_num + 1}", undo)

    # Hooks for what a kind of network reports beside its loss (a detector: Darknet's cost
    # and its heads' statistics lines); a classifier has nothing more.
    def _pass_done(self) -> None:
        """After each training pass (a subdivision): the runner holds its numbers."""

    def _batch_done(self) -> dict:
        """After a batch's passes: more of its BatchReport (a detector's Darknet numbers)."""
        return {}

    def _log_extras(self) -> dict:
        """More of the metrics log's batch record, for the batches since the last."""
        return {}

    def _despite_worker_deaths(self, work, what: str, undo=lambda: None):
        """work(), run again (after undo()) in new worker processes when one stops in it; at
        the DEATHS-th stop within DEATH_WINDOW seconds, a checkpoint and RunFailed."""
        while True:
            try:
                return work()
            except WorkerDied as died:
                undo()
                now = time.monotonic()
                self._deaths = [t for t in self._deaths if now - t < DEATH_WINDOW] + [now]
                if len(self._deaths) >= DEATHS:
                    self._checkpoint()
                    raise RunFailed(
                        f"worker processes stopped {DEATHS} times within a minute, the last "
                        f"in {what} ({exit_text(died.code)}); the checkpoint of batch "
                        f"{self.batch_num} is in {self.path('state')}: go on with --resume, "
                        "perhaps with fewer --threads (--threads 1 starts no worker "
                        "processes)") from None
                codes = self.runner.restart_stopped_workers()
                self.listener.notice(
                    f"a worker process stopped in {what} ({exit_text(died.code)}); "
                    f"{'new ones' if len(codes) > 1 else 'a new one'} took its place and "
                    f"{what} was run again")

    def _diverged_message(self, loss: float, epoch: int) -> str:
        return (f"the loss became {loss} at batch {self.batch_num + 1} (epoch {epoch}); "
                f"training stopped and {self._kept()}. Try a lower learning_rate or a burn_in.")

    def _kept(self) -> str:
        """What is left on disk to resume from, for a message."""
        if self.saved_batch is None:
            return "no checkpoint had been written yet"
        return f"the last good checkpoint, {self.path('state')} (batch {self.saved_batch}), is kept"

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, final: bool = False) -> None:
        """Write the checkpoint files, the state last: it is the one --resume reads, so a
        write that fails (a full disk) leaves the previous checkpoint whole."""
        seen = self.batch_num * self.batch
        layers = self.network.layers
        saved = [self.path("last")]
        with self._writing():
            save_weights(saved[0], layers, seen)
            if self.ema is not None:
                with self.ema.swapped_in():
                    save_weights(self.path("ema"), layers, seen)
                saved.append(self.path("ema"))
            if final:
                save_weights(self.path("final"), layers, seen)
                saved.append(self.path("final"))
            elapsed = self.elapsed + (0.0 if self._epoch_started is None
                                      else time.perf_counter() - self._epoch_started)
            save_state(self.path("state"), self.network, self.sgd, self.ema, self.identity,
                       Progress(self.batch_num, self.epoch, elapsed, self.losses, self.lrs))
        saved.append(self.path("state"))
        self.saved_batch = self.batch_num
        self._checkpointed = time.monotonic()
        self.listener.saved(saved)

    @contextmanager
    def _writing(self):
        """A write into --out that fails (a full disk, a folder gone) ends the run (exit 1),
        saying what is kept."""
        try:
            yield
        except RunFailed:
            raise
        except (DarkbpError, OSError) as error:
            why = f"cannot write {error.filename}: {error.strerror}" if isinstance(
                error, OSError) else str(error)
            why += f"; {self._kept()}"
            if self.saved_batch is not None:
                why += f": go on with --resume once {self.out} takes files again"
            raise RunFailed(why) from None

    def _log(self, record: dict) -> None:
        with self._writing():
            append_whole(self.path("metrics"),
                         (json.dumps({"time": time.time(), **record}) + "\n").encode())


def smoothed_truth(classes: int, eps: float = 0.0) -> np.ndarray:
    """(classes, classes) float32: row k the training target of label k. One-hot, or with
    AlexeyAB's label_smooth_eps (its fill_truth_smooth) 1 − eps at k and eps / (classes − 1)
    elsewhere, each rounded to a float as there."""
    truth = np.full((classes, classes), np.float32(eps) / np.float32(max(classes - 1, 1)),
                    np.float32)
    np.fill_diagonal(truth, np.float32(1) - np.float32(eps))
    return truth


def _per_batch(losses: list[float], lrs: list[float]) -> dict:
    """The log's record of the batches since the last record: every loss, and every learning
    rate only where they differ (else the record's `lr` is that of each), 6 digits each."""
    record = {"losses": [float(f"{loss:.6g}") for loss in losses]}
    if len(set(lrs)) > 1:
        record["lrs"] = [float(f"{lr:.6g}") for lr in lrs]
    return record
