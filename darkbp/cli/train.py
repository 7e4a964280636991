"""`darkbp train`: trains a cfg on IDX data or image files, with rich progress bars."""

from __future__ import annotations

import contextlib
import itertools
import shlex
import signal
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

from darkbp import chart
from darkbp.cli import main
from darkbp.cli.common import DATA_HELP, DecodeBars, load_network, open_dataset
from darkbp.cli.options import threads_option
from darkbp.detection_train import DetectionTrainer, open_detection_data
from darkbp.train import Trainer, TrainListener, TrainOptions


@main.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.option("--data", "data_spec", required=True, help=DATA_HELP)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Look for the named dataset here first.")
@click.option("--download", is_flag=True,
              help="Download the named dataset into the cache if it is not found.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Train for this many epochs (overrides max_batches).")
@click.option("--max-batches", type=click.IntRange(min=1), default=None,
              help="Train for this many updates (default: the cfg's max_batches).")
@click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Keep an exponential moving average of the weights with this decay, "
                   "e.g. 0.999 (default: the cfg's ema=, else off).")
@click.option("--weights", type=click.Path(dir_okay=False, exists=False), default=None,
              help="Start from these Darknet .weights instead of a fresh initialisation.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for checkpoints, the metrics log and the chart (default: the "
                   ".data file's backup=, else backup).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for initialisation and data order: equal seeds give equal weights.")
@click.option("--resume", is_flag=True,
              help="Continue the run whose state is in --out, exactly where it stopped.")
@click.option("--checkpoint-every", type=click.FloatRange(min=0), default=5.0,
              show_default=True, metavar="MINUTES",
              help="Write the checkpoint after this many minutes of training too, not only "
                   "at the end of each epoch (0: after every update).")
@threads_option
def train(cfg, data_spec, data_dir, download, epochs, max_batches, ema, weights, out, seed,
          resume, checkpoint_every, threads) -> None:
    """Train a network with Darknet's SGD, evaluating on the test split after each epoch.

    Checkpoints in Darknet's .weights format go to --out: NAME_last.weights,
    NAME_ema.weights (with --ema), NAME_final.weights, plus NAME_last.state.npz for
    --resume and NAME_metrics.jsonl. They are written at the end of each epoch, every
    --checkpoint-every minutes, and on Ctrl-C or SIGTERM, which stop the run after the
    update under way (exit 130 or 143; a second Ctrl-C stops at once, keeping the
    checkpoint before). After each epoch NAME_chart.png shows the loss,
    the learning rate, the test accuracies and the time left (with matplotlib:
    pip install 'darkbp[plot]'); `darkbp plot` redraws it from the metrics log.

    Image files (a .data file's lists, an image folder) are decoded once, before the
    first epoch: the test split to the cfg's width x height x channels, the training
    images kept for the augmentation that the [net] keys (min_crop, max_crop, angle,
    aspect, hue, saturation, exposure, flip) and Darknet's defaults ask for; IDX data
    is augmented only when the cfg gives one of those keys. The first lines say which.

    \b
    Examples:
      darkbp train cfg/mnist.cfg --data mnist --epochs 3
      darkbp train cfg/mnist.cfg --data fashion-mnist --epochs 10 --ema 0.999 --out runs/fashion
      darkbp train cfg/mnist.cfg --data mnist --epochs 3 --resume
      darkbp train cfg/mnist.cfg --data data/fashion.data --epochs 3
    """
    network = load_network(cfg)
    network.check_trainable()               # before any data is read or downloaded
    trainer_class = DetectionTrainer if network.heads else Trainer
    if network.heads:
        dataset = open_detection_data(data_spec, data_dir)
        for line in ([dataset.notice] if dataset.notice else []) + list(dataset.warnings):
            click.echo(f"darkbp: {line}", err=True)
    else:
        dataset = open_dataset(data_spec, data_dir=data_dir, download=download)
    options = TrainOptions(out=Path(out or dataset.backup or "backup"), epochs=epochs,
                           max_batches=max_batches, ema=ema, seed=seed, resume=resume,
                           threads=threads, weights=Path(weights) if weights else None,
                           checkpoint_every=60 * checkpoint_every)
    console = Console(stderr=True, highlight=False)
    # The Trainer checks everything quick (the cfg against the data, --out, --resume)
    # before it decodes image files, which the listener shows.
    stop = _Stop()
    try:
        with _ProgressListener(console) as listener:
            trainer = trainer_class(network, dataset, options, listener)
            if trainer.complete:
                click.echo(f"the run in {trainer.out} is complete ({trainer.batch_num} of "
                           f"{trainer.total_batches} batches): nothing to train. Give a larger "
                           "--epochs or --max-batches to train on.")
                click.echo(f"final weights: {trainer.path('final')}")
                return
            with _stop_on_signals(trainer, stop):
                trainer.run()
    except KeyboardInterrupt:
        if stop.signal is None:         # before training started: the usual "interrupted"
            raise
        _stopped(trainer, stop.signal, at_once=True)
    if trainer.stopped:
        _stopped(trainer, stop.signal, at_once=False)
    click.echo(f"final weights: {trainer.path('final')}")


class _Stop:
    signal: int | None = None       # the last SIGINT or SIGTERM received


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer, stop: _Stop):
    """SIGINT (Ctrl-C) and SIGTERM ask the trainer to stop after the update under way, with
    a checkpoint; a second one raises KeyboardInterrupt, to stop at once. `stop` records
    the signal.

    And SIGXFSZ is ignored: a file-size limit then fails the write that exceeds it, which
    the trainer reports as it does a full disk, instead of killing darkbp."""
    def handler(signum, frame):
        first = stop.signal is None
        stop.signal = signum
        if not first:
            raise KeyboardInterrupt
        trainer.request_stop()
    previous = {kind: signal.signal(kind, handler) for kind in (signal.SIGINT, signal.SIGTERM)}
    if hasattr(signal, "SIGXFSZ"):      # POSIX
        previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        for kind, action in previous.items():
            signal.signal(kind, action)


def _stopped(trainer: Trainer, signum: int, at_once: bool) -> None:
    """Say where the run stopped, what is on disk and how to go on; exit 128 + signum."""
    name = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
    how = "at once by a second " if at_once else "by "
    where = (f"after batch {trainer.batch_num} of {trainer.total_batches}" if not at_once
             else f"in batch {trainer.batch_num + 1} of {trainer.total_batches}")
    if trainer.saved_batch is None:
        kept = "no checkpoint was written yet"
    else:
        kept = f"the checkpoint of batch {trainer.saved_batch} is in {trainer.path('state')}"
    command = shlex.join(["darkbp", *sys.argv[1:]])
    if "--resume" not in sys.argv[1:]:
        command += " --resume"
    click.echo(f"darkbp: stopped {how}{name} {where}; {kept}. To go on: {command}", err=True)
    sys.exit(128 + signum)


class _NumbersBelowProgress(Progress):
    """A progress bar whose task's numbers (its `stats` field, one or more lines) go below
    it, so that on an 80-column terminal neither is cut short."""

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            if task.fields.get("stats"):
                yield Text(task.fields["stats"], overflow="fold")


def _head_lines(heads) -> list[str]:
    """A detector's heads' running statistics (BatchReport.heads) as a small table: a row
    of Darknet's names, then a row a head, right-aligned; the names again where the next
    heads' differ."""
    if not heads:
        return []
    lines = []
    width = max(len(label) for label, _ in heads)
    for names, group in itertools.groupby(heads, key=lambda head: tuple(head[1])):
        rows = [(label, [f"{value:.1f}" if name == "count" else f"{value:.4f}"
                         for name, value in means.items()]) for label, means in group]
        widths = [max(len(name), *(len(figures[k]) for _, figures in rows))
                  for k, name in enumerate(names)]
        lines.append(" " * width + "".join(f"  {name:>{w}}" for name, w in zip(names, widths)))
        lines += [f"{label:<{width}}" + "".join(f"  {figure:>{w}}"
                                                for figure, w in zip(figures, widths))
                  for label, figures in rows]
    return lines


class _ProgressListener(TrainListener):
    """Bars while image files are decoded, then a rich progress bar (epoch, batch, time
    taken and left) above the batch's numbers (loss, learning rate, images/s; a detector's
    Darknet cost, and its heads' statistics over the last batches), and a line per
    epoch."""

    def __init__(self, console: Console):
        self.console = console
        self.decoding = DecodeBars(console)
        self.progress = _NumbersBelowProgress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self.task = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.decoding.stop()
        if self.task is not None:
            self.progress.stop()

    def start(self, trainer):
        self.decoding.stop()
        if not chart.available():
            self.console.print(f"darkbp: {chart.MISSING} (training goes on without "
                               f"{trainer.path('chart').name})", markup=False, soft_wrap=True)
        self.progress.start()
        data = f"{trainer.dataset.name} ({trainer.train_size:,} images)"
        self.console.print(f"training {trainer.network.file} on {data}: {trainer.total_batches} "
                           f"batches of {trainer.batch}, {trainer.batches_per_epoch} per epoch"
                           + (f", EMA {trainer.ema_decay:g}" if trainer.ema else ""))
        self.console.print("augmentation: " + (trainer.augment.describe() if trainer.augment
                                               else "none (the images as they are)"))
        epoch = trainer.batch_num // trainer.batches_per_epoch + 1
        self.task = self.progress.add_task("train", total=trainer.total_batches,
                                           completed=trainer.batch_num, epoch=epoch,
                                           stats="")
        self.smoothed = None

    def batch(self, report):
        speed = report.images_per_s
        self.smoothed = speed if self.smoothed is None else 0.9 * self.smoothed + 0.1 * speed
        darknet = ("" if report.darknet_cost is None else
                   f" (Darknet's cost {report.darknet_cost:.2f})")
        numbers = f"loss {report.loss:.4f}{darknet}  lr {report.lr:.3g}  {self.smoothed:.0f} img/s"
        self.progress.update(self.task, completed=report.batch_num, epoch=report.epoch,
                             stats="\n".join([numbers, *_head_lines(report.heads or ())]))

    def notice(self, message):
        self.console.print(f"darkbp: {message}", markup=False, soft_wrap=True)

    def epoch(self, report):
        def accuracy(top1, topk):
            return f"{100 * top1:.2f}%" + ("" if topk is None
                                           else f" (top-{report.top} {100 * topk:.2f}%)")
        ema = ("" if report.ema_accuracy is None else
               f", EMA weights {accuracy(report.ema_accuracy, report.ema_top_accuracy)}")
        self.console.print(f"epoch {report.epoch}: train loss {report.loss:.4f}, "
                           f"test {report.metric} "
                           f"{accuracy(report.accuracy, report.top_accuracy)}{ema} "
                           f"({report.wall_time:.1f} s)")
