"""`darkbp predict`: the top classes of image files, as Darknet's `classifier predict`
prints them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np

from darkbp.classifier import (check_input, check_names, data_file_names, image_paths,
                               predict_files, ranked)
from darkbp.cli import main
from darkbp.cli.common import load_network
from darkbp.cli.options import names_options, threads_option
from darkbp.imagedata import read_labels
from darkbp.network import Network
from darkbp.weights import load_weights


@main.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(exists=True, dir_okay=False))
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--top", type=click.IntRange(min=1), default=None, metavar="K",
              help="Show the K highest classes of each image (default: the .data file's "
                   "top=, else 1, as Darknet; at most the number of classes).")
@names_options(", and its top=")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text: Darknet's lines; json: one document for "
                                      "scripts.")
@threads_option
def predict(cfg: str, weights: str, images: tuple[str, ...], top: int | None,
            names_file: str | None, data_file: str | None, fmt: str, threads: int) -> None:
    """Classify image files with trained weights, as Darknet's `classifier predict`.

    Each image (PNG or JPEG; a folder: the images directly inside it, sorted) is scaled
    to fit the cfg's width x height with its aspect kept, centred on grey (Darknet's
    letterbox), and its K highest outputs printed as Darknet prints them,
    "%5.2f%%: NAME" (a network without a [softmax] last shows its raw outputs so, as
    Darknet does). With several images, each block starts with the image's path. The
    time of each forward pass goes to stderr, as in Darknet. --threads N: N threads in
    the matrix products, and once the passes left would take more than a second, each
    pass split across N processes.

    \b
    Examples:
      darkbp predict cfg/mnist.cfg backup/mnist_final.weights seven.png
      darkbp predict cfg/mnist.cfg backup/mnist_final.weights digits/ --top 3
      darkbp predict cfg/mnist.cfg fashion.weights shoe.jpg --data data/fashion.data
      darkbp predict cfg/mnist.cfg backup/mnist_final.weights digits/ --format json
    """
    if names_file and data_file:
        raise click.UsageError("give the names with --names or with --data, not both")
    network = load_network(cfg)
    check_input(network)
    names, data_top = [str(i) for i in range(network.outputs)], None
    if names_file:
        names = read_labels(Path(names_file))
        check_names(names, names_file, network)
    elif data_file:
        names, source, data_top, warnings = data_file_names(data_file)
        for warning in warnings:
            click.echo(f"darkbp: {warning}", err=True)
        check_names(names, str(source), network)
    paths = image_paths(images)
    network.initialize(0, np.float32)
    load_weights(weights, network.layers)
    k = min(top or data_top or 1, network.outputs)
    predictions = _predictions(network, paths, k, threads)
    if fmt == "json":
        click.echo(json.dumps({"images": [
            {"path": path, "top": [{"class": i, "name": names[i], "probability": value}
                                   for i, value in best]}
            for path, best in predictions]}, indent=2, ensure_ascii=False))
        return
    for n, (path, best) in enumerate(predictions):
        if len(paths) > 1:
            click.echo(("\n" if n else "") + path)
        for i, value in best:
            # Darknet prints predictions[index]*100, a float product, with "%5.2f%%".
            click.echo("%5.2f%%: %s" % (np.float32(value) * np.float32(100), names[i]))


def _predictions(network: Network, paths: list[str], k: int, threads: int
                 ) -> Iterator[tuple[str, list[tuple[int, float]]]]:
    """(path, its k highest (class, value)) per image, in order; the time of each forward
    pass on stderr, as Darknet's "Predicted in" line."""
    for chunk, outputs, seconds in predict_files(network, paths, threads):
        which = chunk[0] if len(chunk) == 1 else f"{len(chunk)} images"
        click.echo(f"{which}: Predicted in {seconds:f} seconds.", err=True)
        for path, output in zip(chunk, outputs):
            yield path, ranked(output, k)
