"""`darkbp export`: a network with trained weights as an ONNX model (darkbp/export.py)."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from darkbp.cli import main
from darkbp.cli.common import human_bytes, load_network
from darkbp.export import DEFAULT_OPSET, MIN_OPSET, check_exportable, check_opset, export_onnx
from darkbp.weights import load_weights


class _Batch(click.ParamType):
    """A batch size of at least 1, or 'dynamic' (None)."""

    name = "N|dynamic"

    def convert(self, value, param, ctx):
        if value is None or value == "dynamic":
            return None
        try:
            batch = int(value)
        except (TypeError, ValueError):
            batch = 0
        if batch < 1:
            self.fail(f"{value!r} is neither a batch size of at least 1 nor 'dynamic'",
                      param, ctx)
        return batch


@main.command("export")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              metavar="NET.onnx", help="The ONNX file to write (replaced atomically).")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, metavar="N",
              help=f"The ONNX opset: {MIN_OPSET} up to the newest your onnx package knows.")
@click.option("--batch", type=_Batch(), default="dynamic", show_default=True,
              metavar="N|dynamic",
              help="The model's batch size: a number, or 'dynamic' (any batch, named N).")
def export_command(cfg: str, weights: str, output: str, opset: int, batch: int | None) -> None:
    """Export a network and its weights as an ONNX model of darkbp's inference.

    The model's input "input" is (N, channels, height, width) float32 images, or
    (N, inputs) for a cfg without an image size; its output "output" is (N, outputs):
    the last layer's output in evaluation mode (a final [cost] is not exported: the
    output is what it reads). A detector's model has instead one output per detection
    head, in order, named after it ("yolo_16", "yolo_23"): the head's output (N, C, H, W),
    which darkbp.detector.network_boxes decodes. Needs the onnx package:
    pip install "darkbp[onnx]".

    \b
    Examples:
      darkbp export cfg/mnist.cfg backup/mnist_final.weights -o mnist.onnx
      darkbp export cfg/mnist.cfg mnist.weights -o mnist.onnx --batch 1 --opset 13
    """
    check_opset(opset)                       # before any file is read: onnx is installed
    network = load_network(cfg)
    check_exportable(network)                # before the weights are read
    network.initialize(0, np.float32)
    load_weights(weights, network.layers)
    start = time.perf_counter()
    export_onnx(network, output, opset=opset, batch=batch, weights=weights)
    seconds = time.perf_counter() - start
    size = Path(output).stat().st_size
    shape = "dynamic batch N" if batch is None else f"batch {batch}"
    click.echo(f"{output}: {cfg} with {weights}, ONNX opset {opset}, {shape}, "
               f"{human_bytes(size)}, written in {seconds:.2f} s")
