"""`darkbp eval`: top-1 and top-k accuracy, per-class accuracy and the confusion matrix on a
test split (a .data file's valid list)."""

from __future__ import annotations

import click
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from darkbp.cli import main
from darkbp.cli.common import (DATA_HELP, DecodeBars, load_network, open_dataset,
                               print_rich)
from darkbp.cli.options import threads_option
from darkbp.evaluate import Evaluation, check_fits, evaluate, top_k
from darkbp.parallel import Runner
from darkbp.weights import load_weights


@main.command("eval")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", "data", required=True, metavar="mnist|fashion-mnist|PATH",
              help="The dataset whose test split (a .data file's valid list) is "
                   "classified: " + DATA_HELP)
@click.option("--data-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Look for the named dataset in DIR/NAME/ and DIR first.")
@click.option("--download", is_flag=True,
              help="Download the named dataset into the cache if it is not found.")
@click.option("--top", type=click.IntRange(min=1), default=None, metavar="K",
              help="Also count the images whose class is among the K highest outputs "
                   "(default: the .data file's top=, else 5 when there are more than 5 "
                   "classes).")
@click.option("--batch", type=click.IntRange(min=1), default=500, show_default=True,
              metavar="N", help="Images per forward pass (bounds the memory used).")
@threads_option
def eval_command(cfg: str, weights: str, data: str, data_dir: str | None, download: bool,
                 top: int | None, batch: int, threads: int) -> None:
    """Classify the test split of a dataset with trained weights.

    Prints the top-1 and top-k accuracy, the accuracy of each class and the confusion
    matrix (rows: true class, columns: predicted class). Image files get Darknet's
    `classifier valid` preprocessing: the shorter side resized to the cfg's width, then
    the centre cut out.

    \b
    Examples:
      darkbp eval cfg/mnist.cfg backup/mnist_final.weights --data mnist
      darkbp eval cfg/mnist.cfg backup/mnist_ema.weights --data fashion-mnist --threads 2
      darkbp eval cfg/mnist.cfg mnist.weights --data ~/datasets/kmnist --batch 1000
      darkbp eval cfg/mnist.cfg backup/mnist_final.weights --data data/fashion.data --top 3
    """
    network = load_network(cfg)
    network.check_classifier("eval")        # before any data is read or downloaded
    dataset = open_dataset(data, data_dir=data_dir, download=download)
    check_fits(network, dataset)
    network.initialize(0, np.float32)
    seen = load_weights(weights, network.layers)
    bars = DecodeBars(Console(stderr=True, highlight=False))
    try:
        dataset = dataset.decoded(network.input_shape, bars, threads, train=False)
    finally:
        bars.stop()
    runner = Runner(network, threads)
    k = top_k(len(dataset.classes), dataset.top, top)
    result = evaluate(network, dataset.test_images, dataset.test_labels, dataset.classes,
                      batch=batch, runner=runner, top=k)
    runner.close()
    click.echo(f"{cfg} with {weights} (trained on {seen:,} images)")
    split = f"{dataset.test_split} of the shipped sample" if dataset.is_sample else \
        dataset.test_split
    where = "" if dataset.name == str(dataset.source) else f" ({dataset.source})"
    click.echo(f"{dataset.name} {split}{where}: accuracy "
               f"{result.accuracy:.2%} ({result.correct:,} of {result.count:,} images)")
    if k is not None:
        click.echo(f"top-{k} accuracy {result.top_accuracy:.2%} "
                   f"({result.top_correct:,} of {result.count:,} images)")
    print_rich(_per_class_table(result))
    print_rich(_confusion_table(result))


def _per_class_table(result: Evaluation) -> Table:
    table = Table(title="per class", title_justify="left")
    for name, justify in (("class", "left"), ("images", "right"), ("correct", "right"),
                          ("accuracy", "right")):
        table.add_column(name, justify=justify)
    hits = np.diagonal(result.confusion)
    for label, (count, correct, accuracy) in enumerate(
            zip(result.class_counts, hits, result.per_class)):
        table.add_row(_class_name(result, label), f"{count:,}", f"{correct:,}",
                      "-" if count == 0 else f"{accuracy:.2%}")
    return table


def _confusion_table(result: Evaluation) -> Table:
    table = Table(title="confusion matrix (rows: true class, columns: predicted)",
                  title_justify="left")
    table.add_column("true \\ predicted", justify="left")
    for label in range(len(result.classes)):
        table.add_column(str(label), justify="right")
    for label, row in enumerate(result.confusion):
        cells = [f"[bold]{n}[/bold]" if j == label else str(n) for j, n in enumerate(row)]
        table.add_row(_class_name(result, label), *cells)
    return table


def _class_name(result: Evaluation, label: int) -> str:
    """'3' for a digit, '3 Dress' for a named class: the label heads the confusion columns."""
    name = result.classes[label]
    return escape(name) if name == str(label) else f"{label} {escape(name)}"
