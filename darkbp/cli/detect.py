"""`darkbp detect`: objects in image files, as Darknet's `detector test` finds and prints
them, with a picture of the boxes per image."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from darkbp.atomic import atomic_open, ensure_writable_dir
from darkbp.classifier import data_file_names, image_paths
from darkbp.cli import main
from darkbp.cli.common import load_network
from darkbp.cli.options import names_options, threads_option
from darkbp.detector import HIER, NMS, THRESH, check_detector, detect_passes
from darkbp.errors import DarkbpError
from darkbp.imagedata import read_image, read_labels
from darkbp.weights import load_weights


@main.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(exists=True, dir_okay=False))
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@names_options()
@click.option("--thresh", type=click.FloatRange(min=0), default=THRESH, show_default=True,
              help="Keep a box's class when objectness x class probability is above this.")
@click.option("--hier", type=click.FloatRange(min=0), default=HIER, show_default=True,
              help="Darknet's hierarchical threshold (used only by a [region] tree, which "
                   "darkbp does not run; accepted for Darknet's command lines).")
@click.option("--nms", type=click.FloatRange(min=0, max=1), default=NMS, show_default=True,
              help="Darknet's do_nms_sort: a box's class is dropped when a more probable box "
                   "of that class overlaps it with an IoU above this (0: no NMS).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".",
              show_default=True, metavar="DIR",
              help="Where the pictures go (made if missing): DIR/predictions.png for one "
                   "image, DIR/NAME_predictions.png for several.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text: Darknet's lines; json: one document for "
                                      "scripts (and darkbp map --detections).")
@click.option("--batchnorm", type=click.Choice(["darkbp", "pjreddie"]), default="darkbp",
              show_default=True,
              help="Batch norm's inference: darkbp (and AlexeyAB's Darknet) divides by "
                   "sqrt(var + 1e-5), pjreddie's Darknet by sqrt(var) + 1e-6; pjreddie "
                   "gives its detections to float32 rounding.")
@threads_option
def detect(cfg: str, weights: str, images: tuple[str, ...], names_file: str | None,
           data_file: str | None, thresh: float, hier: float, nms: float, out_dir: str,
           fmt: str, batchnorm: str, threads: int) -> None:
    """Detect objects in image files with trained weights, as Darknet's `detector test`.

    Each image (PNG or JPEG; a folder: the images directly inside it, sorted) is
    letterboxed to the cfg's width x height, every detection head's boxes are decoded
    and NMS applied as Darknet does, and each (box, class) whose probability is above
    --thresh printed as Darknet prints it, "NAME: 97%". With several images, each block
    starts with the image's path. The time of each forward pass goes to stderr. A
    picture of the boxes is written per image (see --out).

    \b
    Examples:
      darkbp detect cfg/yolo-digits.cfg backup/yolo-digits_final.weights digits.png
      darkbp detect yolov3-tiny.cfg yolov3-tiny.weights photos/ --data coco.data --out boxes
      darkbp detect yolov3-tiny.cfg yolov3-tiny.weights dog.jpg --names coco.names \\
          --format json --thresh 0.25
    """
    if names_file and data_file:
        raise click.UsageError("give the names with --names or with --data, not both")
    network = load_network(cfg)
    classes = check_detector(network)
    names, source = [str(k) for k in range(classes)], None
    if names_file:
        names, source = read_labels(Path(names_file)), names_file
    elif data_file:
        names, names_path, _, warnings = data_file_names(data_file)
        source = str(names_path)
        for warning in warnings:
            click.echo(f"darkbp: {warning}", err=True)
    if len(names) != classes:
        raise DarkbpError(f"holds {len(names)} names, but the detection heads of "
                          f"{network.file} have classes={classes}", file=source)
    paths = image_paths(images)
    network.initialize(0, np.float32)
    load_weights(weights, network.layers)
    ensure_writable_dir(out_dir)
    found = []                          # kept for JSON only: text is printed as it comes
    done = 0
    for chunk, seconds in detect_passes(network, paths, thresh, hier, nms, threads, names,
                                        batchnorm == "pjreddie"):
        which = chunk[0]["path"] if len(chunk) == 1 else f"{len(chunk)} images"
        click.echo(f"{which}: Predicted in {seconds:f} seconds.", err=True)
        for image in chunk:
            picture = (Path(out_dir) / "predictions.png" if len(paths) == 1 else
                       Path(out_dir) / f"{Path(image['path']).stem}_predictions.png")
            _write_picture(image, classes, picture)
            if fmt == "json":
                found.append(image)
                continue
            if len(paths) > 1:
                click.echo(("\n" if done else "") + image["path"])
            _print_text(image)
            done += 1
    if fmt == "json":
        click.echo(json.dumps({"images": found}, indent=2, ensure_ascii=False))


def _print_text(image: dict) -> None:
    for d in image["detections"]:
        # Darknet prints prob*100, a float product, with "%.0f%%".
        click.echo("%s: %.0f%%" % (d["name"], np.float32(d["confidence"]) * np.float32(100)))


def _write_picture(image: dict, classes: int, path: Path) -> None:
    """The photo with its boxes drawn (darkbp.draw), as a PNG written atomically."""
    from PIL import Image

    from darkbp.draw import draw_detections

    pixels = read_image(image["path"], 3).transpose(1, 2, 0)
    drawn = draw_detections(Image.fromarray(np.ascontiguousarray(pixels)), image["detections"],
                            classes)
    with atomic_open(path) as f:
        drawn.save(f, format="PNG")
