"""`darkbp map`: a detector's mAP over a .data file's valid list, as AlexeyAB's
`detector map` prints it, and COCO's mAP@[.5:.95]."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import click
import numpy as np

from darkbp.classifier import data_file_names
from darkbp.cli import main
from darkbp.cli.common import load_network
from darkbp.cli.options import threads_option
from darkbp.detector import check_detector, detected_arrays
from darkbp.errors import DarkbpError
from darkbp.mapeval import (MapResult, Scorer, ValidList, as_arrays, image_paths,
                            match_images, read_detections, read_truths, valid_list)
from darkbp.weights import load_weights

NMS = 0.45          # validate_detector_map's
HIER = 0.0          # validate_detector_map passes hier_thresh 0


@main.command("map")
@click.argument("cfg", required=False, type=click.Path(dir_okay=False))
@click.argument("weights", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--data", "data_file", required=True, metavar="FILE.data",
              type=click.Path(exists=True, dir_okay=False),
              help="A Darknet .data file: valid= (the images), names= (else labels=), "
                   "classes=.")
@click.option("--detections", "detections_file", metavar="FILE.json",
              type=click.Path(exists=True, dir_okay=False),
              help="Score the detections of `darkbp detect --format json` instead of "
                   "running a network.")
@click.option("--iou", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="IoU a detection needs (above it) to match a truth (AlexeyAB's "
                   "-iou_thresh).")
@click.option("--thresh", type=click.FloatRange(min=0), default=0.005, show_default=True,
              help="Detections kept for the ranking: probability above this (AlexeyAB's "
                   "fixed .005).")
@click.option("--conf-thresh", type=click.FloatRange(min=0), default=0.25,
              show_default=True, help="Probability above which precision, recall, F1, "
                                      "TP, FP and average IoU count (AlexeyAB's -thresh).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text: AlexeyAB's lines; json: one document.")
@threads_option
def map_command(cfg: str | None, weights: str | None, data_file: str,
                detections_file: str | None, iou: float, thresh: float, conf_thresh: float,
                fmt: str, threads: int) -> None:
    """Score a detector on the .data file's valid= images: AP per class, mAP@IoU (VOC2010+
    all-point), precision, recall, F1 and average IoU, as AlexeyAB's `detector map`, and
    COCO's mAP@[.5:.95].

    Each image's truth is its Darknet label file (images/ or JPEGImages/ or raw/ ->
    labels/, the extension -> .txt; else the .txt beside the image). A missing or empty
    label file is an image without objects (counted, reported once); a bad line stops
    with its file and line.

    \b
    Examples:
      darkbp map cfg/yolo.cfg backup/yolo_final.weights --data data/voc.data
      darkbp detect cfg/yolo.cfg yolo.weights photos/ --thresh 0.005 --format json > d.json
      darkbp map --detections d.json --data data/voc.data --format json
    """
    if detections_file and (cfg or weights):
        raise click.UsageError("give either NET.cfg WEIGHTS or --detections, not both")
    if not detections_file and not (cfg and weights):
        raise click.UsageError("give NET.cfg WEIGHTS, or --detections FILE.json")
    names, names_source, _, warnings = data_file_names(data_file)
    for warning in warnings:
        click.echo(f"darkbp: {warning}", err=True)
    valid = valid_list(data_file, names, str(names_source))
    if detections_file:
        per_image, notes = match_images(read_detections(detections_file, len(names)),
                                           valid, detections_file)
        found = (as_arrays(detections, thresh) for detections in per_image)
    else:
        found, notes = _from_network(cfg, weights, valid, names, str(names_source),
                                        thresh, threads), []
    # Every label is read before anything is scored: a bad line stops the run at once.
    truths, counts = read_truths(valid, len(names))
    for warning in notes + counts.warnings():
        click.echo(f"darkbp: {warning}", err=True)
    scorer = Scorer(len(names), iou, conf_thresh)
    for (boxes, classes, probs), (truth_boxes, truth_classes) in zip(found, truths):
        scorer.add(boxes, classes, probs, truth_boxes, truth_classes)
    result = scorer.result()
    if fmt == "json":
        click.echo(json.dumps(as_json(result, names, thresh), indent=2, ensure_ascii=False))
    else:
        for line in text_lines(result, names):
            click.echo(line)


def _from_network(cfg: str, weights: str, valid: ValidList, names: list[str],
                  names_source: str, thresh: float, threads: int
                  ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each valid image's detections, the network run as validate_detector_map runs it."""
    network = load_network(cfg)
    classes = check_detector(network)
    if classes != len(names):
        raise DarkbpError(f"holds {len(names)} names, but the detection heads of "
                          f"{network.file} have classes={classes}", file=names_source)
    paths = image_paths(valid)
    network.initialize(0, np.float32)
    load_weights(weights, network.layers)
    return detected_arrays(network, paths, thresh=thresh, hier=HIER, nms=NMS, threads=threads)


def text_lines(result: MapResult, names: list[str]) -> list[str]:
    """AlexeyAB's lines (its trailing spaces kept), then COCO's mAP@[.5:.95]."""
    total, tp, fp = int(result.truths.sum()), int(result.tp.sum()), int(result.fp.sum())
    lines = ["", f" detections_count = {result.detections}, unique_truth_count = {total}  "]
    lines += ["class_id = %d, name = %s, ap = %2.2f%%   \t (TP = %d, FP = %d) "
              % (k, name, result.ap50[k] * 100, result.tp[k], result.fp[k])
              for k, name in enumerate(names)]
    lines += ["", " for conf_thresh = %1.2f, precision = %1.2f, recall = %1.2f, F1-score = %1.2f "
              % (result.conf_thresh, result.precision, result.recall, result.f1),
              " for conf_thresh = %0.2f, TP = %d, FP = %d, FN = %d, average IoU = %2.2f %% "
              % (result.conf_thresh, tp, fp, total - tp, np.float32(result.average_iou) * 100),
              "", " IoU threshold = %2.0f %%, used Area-Under-Curve for each unique Recall "
              % (np.float32(result.iou) * 100),
              " mean average precision (mAP@%0.2f) = %f, or %2.2f %% "
              % (result.iou, result.map50, result.map50 * 100),
              " COCO mean average precision (mAP@[.50:.95]) = %f, or %2.2f %% "
              % (result.map50_95, result.map50_95 * 100)]
    return lines


def as_json(result: MapResult, names: list[str], thresh: float) -> dict:
    """The JSON document: the set's scores, then one entry per class (NaN as null)."""
    def number(value: float) -> float | None:
        return None if math.isnan(value) else float(value)

    return {"map50": result.map50, "map50_95": number(result.map50_95), "iou": result.iou,
            "thresh": thresh, "conf_thresh": result.conf_thresh,
            "precision": number(result.precision), "recall": number(result.recall),
            "f1": number(result.f1), "average_iou": result.average_iou,
            "classes": [{"class": k, "name": name, "ap50": float(result.ap50[k]),
                         "tp": int(result.tp[k]), "fp": int(result.fp[k]),
                         "truths": int(result.truths[k])}
                        for k, name in enumerate(names)]}
