"""`darkbp train`: trains a cfg on MNIST-like data with a rich progress bar."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from darkbp.cli import main
from darkbp.cli.common import load_network
from darkbp.cli.options import threads_option
from darkbp.datasets import load_dataset
from darkbp.train import Trainer, TrainListener, TrainOptions


@main.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.option("--data", "data_spec", required=True,
              help="mnist, fashion-mnist, or a folder with the four IDX files.")
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
@click.option("--out", type=click.Path(file_okay=False), default="backup", show_default=True,
              help="Folder for checkpoints and the metrics log.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for initialisation and data order: equal seeds give equal weights.")
@click.option("--resume", is_flag=True,
              help="Continue the run whose state is in --out, exactly where it stopped.")
@threads_option
def train(cfg, data_spec, data_dir, download, epochs, max_batches, ema, weights, out, seed,
          resume, threads) -> None:
    """Train a network with Darknet's SGD, evaluating on the test split after each epoch.

    Checkpoints in Darknet's .weights format go to --out: NAME_last.weights,
    NAME_ema.weights (with --ema), NAME_final.weights, plus NAME_last.state.npz for
    --resume and NAME_metrics.jsonl.

    \b
    Examples:
      darkbp train cfg/mnist.cfg --data mnist --epochs 3
      darkbp train cfg/mnist.cfg --data fashion-mnist --epochs 10 --ema 0.999 --out runs/fashion
      darkbp train cfg/mnist.cfg --data mnist --epochs 3 --resume
    """
    network = load_network(cfg)
    network.check_trainable()               # before any data is read or downloaded
    dataset = load_dataset(data_spec, data_dir=data_dir, download=download)
    if dataset.notice:
        click.echo(f"darkbp: {dataset.notice}", err=True)
    options = TrainOptions(out=Path(out), epochs=epochs, max_batches=max_batches, ema=ema,
                           seed=seed, resume=resume, threads=threads,
                           weights=Path(weights) if weights else None)
    console = Console(stderr=True, highlight=False)
    with _ProgressListener(console) as listener:
        trainer = Trainer(network, dataset, options, listener)
        trainer.run()
    click.echo(f"final weights: {trainer.path('final')}")


class _ProgressListener(TrainListener):
    """A rich progress bar (batch, loss, learning rate, images/s, ETA) and a line per epoch."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.3g}  "
                       "{task.fields[speed]:.0f} img/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self.task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def start(self, trainer):
        data = f"{trainer.dataset.name} ({len(trainer.dataset.train_labels):,} images)"
        self.console.print(f"training {trainer.network.file} on {data}: {trainer.total_batches} "
                           f"batches of {trainer.batch}, {trainer.batches_per_epoch} per epoch"
                           + (f", EMA {trainer.ema_decay:g}" if trainer.ema else ""))
        epoch = trainer.batch_num // trainer.batches_per_epoch + 1
        self.task = self.progress.add_task("train", total=trainer.total_batches,
                                           completed=trainer.batch_num, epoch=epoch,
                                           loss=float("nan"), lr=0.0, speed=0.0)
        self.smoothed = None

    def batch(self, report):
        speed = report.images_per_s
        self.smoothed = speed if self.smoothed is None else 0.9 * self.smoothed + 0.1 * speed
        self.progress.update(self.task, completed=report.batch_num, epoch=report.epoch,
                             loss=report.loss, lr=report.lr, speed=self.smoothed)

    def epoch(self, report):
        ema = ("" if report.ema_accuracy is None
               else f", EMA weights {100 * report.ema_accuracy:.2f}%")
        self.console.print(f"epoch {report.epoch}: train loss {report.loss:.4f}, test accuracy "
                           f"{100 * report.accuracy:.2f}%{ema} ({report.wall_time:.1f} s)")
