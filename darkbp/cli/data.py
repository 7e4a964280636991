"""`darkbp data list`, `darkbp data fetch NAME` and `darkbp data make mnist-det`: where the
datasets are, getting one, and making the detection set drawn from MNIST."""

from __future__ import annotations

import click
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress,
                           TextColumn, TimeRemainingColumn, TransferSpeedColumn)
from rich.table import Table

from darkbp import catalogue, cifar, datasets
from darkbp.cli import main
from darkbp.fetch import fetch as fetch_dataset
from darkbp.mnistdet import make_mnist_det


@main.group()
def data() -> None:
    """Find and download the datasets darkbp trains on.

    \b
    Examples:
      darkbp data list
      darkbp data fetch mnist
      darkbp data fetch cifar10
      darkbp data make mnist-det
    """


@data.command("list")
@click.option("--data-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Also look in DIR/NAME/ and DIR itself first, as `train --data-dir` does.")
def list_datasets(data_dir: str | None) -> None:
    """Show where each dataset is looked for and whether it is there.

    Folders are listed in look-up order; the first complete one is used. When
    full MNIST is nowhere, darkbp uses the small MNIST sample it ships.

    \b
    Example:
      DARKBP_DATA=~/datasets darkbp data list
    """
    table = Table(title="datasets, in look-up order")
    for column in ("dataset", "status", "folder"):
        table.add_column(column)
    for name in catalogue.NAMES:
        located = [(folder, not _missing(name, folder))
                   for folder in catalogue.candidates(name, data_dir)]
        used = next((folder for folder, found in located if found), None)
        for folder, found in located:
            table.add_row(name, _status(name, folder, found, used), str(folder))
        if name == "mnist":
            sample_found = not datasets.missing_files(datasets.SAMPLE_DIR)
            status = "missing" if not sample_found else (
                "fallback (used)" if used is None else "fallback")
            table.add_row("mnist (sample shipped with darkbp)", status, str(datasets.SAMPLE_DIR))
    _console().print(table)


@data.command("fetch")
@click.argument("name", type=click.Choice(catalogue.NAMES))
@click.option("--mirror", metavar="URL",
              help="Download from this base URL instead of the public mirrors.")
@click.option("--dest", type=click.Path(file_okay=False), metavar="DIR",
              help="Put the files in DIR instead of the cache (~/.cache/darkbp/NAME).")
def fetch(name: str, mirror: str | None, dest: str | None) -> None:
    """Download dataset NAME and check each file's md5.

    cifar10 comes as one archive (cifar-10-binary.tar.gz, 162 MB): it is
    checked, unpacked as cifar-10-batches-bin/ into the cache (or DIR), and removed.

    \b
    Examples:
      darkbp data fetch mnist
      darkbp data fetch fashion-mnist --mirror http://127.0.0.1:8000/fashion/
      darkbp data fetch cifar10
    """
    console = _console()
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    progress = Progress(*columns, console=console)
    tasks = {}

    def on_progress(filename: str, done: int, total: int | None) -> None:
        if filename not in tasks:
            progress.start()  # only once something downloads: no empty bar on an early error
            tasks[filename] = progress.add_task(filename, total=total)
        progress.update(tasks[filename], completed=done)

    try:
        report = fetch_dataset(name, dest=dest, mirror=mirror, on_progress=on_progress)
    finally:
        if tasks:
            progress.stop()

    if name in catalogue.ARCHIVES:
        where = cifar.batches_folder(report.dest)
        if report.downloaded:
            console.print(f"{name}: downloaded {report.downloaded[0]}, which matches its "
                          f"published md5, and unpacked it into {where}")
        else:
            console.print(f"{name}: already complete in {where}")
    else:
        if report.downloaded:
            console.print(f"{name}: downloaded {len(report.downloaded)} file(s) into "
                          f"{report.dest}, each matching its published md5")
        if report.present:
            console.print(f"{name}: {len(report.present)} file(s) already in {report.dest} "
                          "with the right md5")
    if report.dest not in catalogue.candidates(name):
        console.print(f"darkbp does not look in {report.dest} by itself: "
                      f"pass --data {report.dest}")


@data.command("make")
@click.argument("name", type=click.Choice(["mnist-det"]))
@click.option("--out", type=click.Path(file_okay=False), metavar="DIR",
              help="Write DIR/mnist-det/ instead of the cache's (~/.cache/darkbp/mnist-det/).")
@click.option("--train", default=10_000, show_default=True, metavar="N",
              help="Train images, from MNIST's first 50,000 training digits.")
@click.option("--valid", default=1_000, show_default=True, metavar="N",
              help="Valid images, from MNIST's test digits 0..4,999.")
@click.option("--seed", default=0, show_default=True, metavar="S",
              help="Seed of numpy.random.default_rng: the same seed gives the same files.")
def make(name: str, out: str | None, train: int, valid: int, seed: int) -> None:
    """Make the detection dataset NAME in Darknet's layout (images/, labels/, .data file).

    mnist-det: 128 x 128 RGB images of grey noise with 1 to 4 coloured MNIST digits of
    16 to 48 pixels, from the MNIST files `--data mnist` uses (the shipped sample, giving
    fewer images, when the full set is not there). About 20 s and 280 MB for the default
    sizes. An earlier DIR/mnist-det/ is replaced once the new one is complete.

    \b
    Examples:
      darkbp data make mnist-det
      darkbp data make mnist-det --out data/ --train 2000 --valid 200 --seed 1
    """
    console = _console()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=console)
    tasks = {}

    def on_progress(split: str, done: int, total: int) -> None:
        if split not in tasks:
            progress.start()
            tasks[split] = progress.add_task(f"{name} {split}", total=total)
        progress.update(tasks[split], completed=done)

    out_dir = out if out is not None else catalogue.cache_dir(name).parent
    try:
        made = make_mnist_det(out_dir, train=train, valid=valid, seed=seed,
                              progress=on_progress)
    finally:
        if tasks:
            progress.stop()
    if made.notice:
        click.echo(f"darkbp: {made.notice}", err=True)
    console.print(f"{name}: {made.train:,} train and {made.valid:,} valid images; "
                  f"data file {made.data_file}")


def _missing(name: str, folder) -> list[str]:
    """The files of dataset `name` that `folder` lacks."""
    if name in catalogue.ARCHIVES:  # cifar10, the one archive dataset
        return cifar.missing_files(folder)
    return datasets.missing_files(folder)


def _status(name: str, folder, found: bool, used) -> str:
    if found:
        return "found (used)" if folder == used else "found"
    missing = _missing(name, folder)
    every = catalogue.ARCHIVES[name].files if name in catalogue.ARCHIVES else catalogue.FILES
    if len(missing) < len(every):
        return "incomplete, lacks " + ", ".join(missing)
    return "missing"


def _console() -> Console:
    console = Console()
    # Piped or captured output: no wrapping, so paths stay whole for grep and tests.
    return console if console.is_terminal else Console(width=400)
