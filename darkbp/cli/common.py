"""Helpers shared by the commands: loading a cfg or a dataset with its warnings, consoles,
decoding bars, number formats."""

from __future__ import annotations

import io
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from darkbp.datasets import Dataset, load_dataset
from darkbp.network import Network, parse_network


def print_rich(renderable) -> None:
    """Print on stdout: with colour on a terminal; as plain text, unwrapped, otherwise."""
    console = Console(highlight=False)
    if console.is_terminal:
        console.print(renderable)
        return
    plain = Console(highlight=False, width=200, no_color=True, record=True, file=io.StringIO())
    plain.print(renderable)
    for line in plain.export_text().splitlines():
        click.echo(line.rstrip())


def load_network(cfg: str) -> Network:
    """Parse a cfg and print its warnings (one line each) on stderr."""
    network = parse_network(cfg)
    for warning in network.warnings:
        click.echo(f"darkbp: {warning}", err=True)
    return network


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


DATA_HELP = ("mnist, fashion-mnist, a folder with the four IDX files, a folder with train/ "
             "and val/ (or valid/, test/) holding one folder of images per class, or a "
             "Darknet classifier .data file.")


def open_dataset(spec: str, data_dir: str | None, download: bool) -> Dataset:
    """load_dataset, printing its notice and the .data file's warnings on stderr."""
    dataset = load_dataset(spec, data_dir=data_dir, download=download)
    if dataset.notice:
        click.echo(f"darkbp: {dataset.notice}", err=True)
    for warning in dataset.warnings:
        click.echo(f"darkbp: {warning}", err=True)
    return dataset


class DecodeBars:
    """A rich progress bar per list (or folder) of image files being decoded: a
    `progress(source, done, total)` for Dataset.decoded."""

    def __init__(self, console: Console):
        self.progress = Progress(TextColumn("decoding {task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=console)
        self.tasks = {}

    def __call__(self, source: str, done: int, total: int) -> None:
        if not self.tasks:
            self.progress.start()
        if source not in self.tasks:
            self.tasks[source] = self.progress.add_task(Path(source).name, total=total)
        self.progress.update(self.tasks[source], completed=done)

    def stop(self) -> None:
        if self.tasks:                  # rich prints a newline when it stops, even unstarted
            self.progress.stop()
