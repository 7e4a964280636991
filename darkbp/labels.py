"""Darknet's detection label files: where an image's label file is, and what it holds.

    path = label_path("VOC2007/JPEGImages/000001.jpg")   # "VOC2007/labels/000001.txt"
    found = find_label_file("coco/images/val2014/x.jpg", base="lists/")  # or None
    boxes, classes = read_label_file(found, classes=80)  # (n, 4) float32, (n,) int64
    counts = LabelCounts(); counts.add(found, len(classes)); counts.warnings()

Where: Darknet derives a label path from the image path by text replacement. darkbp
follows pjreddie's `fill_truth_detection`, by folder names instead of by substrings:
the first folder named `images`, then the first named `JPEGImages`, then the first named
`raw` is renamed `labels` (Darknet replaces the text anywhere, so that a folder such as
`drawings/` becomes `dlabelsings/`); and, as AlexeyAB's `replace_image_to_label`, only
the extension at the end is replaced by `.txt`: `.jpg`, `.jpeg`, `.png`, `.bmp`, `.ppm`,
`.tif` or `.tiff`, in any case (an image with another extension is a DarkbpError). When
no file is there, darkbp looks beside the image (its own folder, extension -> `.txt`),
where AlexeyAB keeps the labels of a custom data set. Relative paths resolve as
darkbp.imagedata.resolve: first from the current folder, then from `base`, the folder of
the list that names the image.

What: one object per line, `class x_center y_center width height`, separated by spaces or
tabs, the four numbers relative to the image's width and height. Blank lines are skipped
(Darknet's fscanf skips them too). Darknet's reader stops silently at the first line it
cannot parse and indexes arrays by an out-of-range class, so darkbp refuses these, each a
DarkbpError naming the label file and the line:

- a line without exactly five fields;
- a class that is not a whole number from 0 to classes - 1, or a coordinate that is not a
  number (`nan` and `inf` included);
- a coordinate outside [0, 1];
- a width or height of 0 (Darknet drops such a box in training, below .001, and counts it
  as a truth nothing can find in `detector map`).

Not errors, counted and reported once by `LabelCounts` (Darknet reads both as an image
without objects, printing a line per missing file): an image whose label file does not
exist, and an empty label file (a background image).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from darkbp.errors import DarkbpError
from darkbp.imagedata import SHOWN, read_text, resolve

LABEL_FOLDERS = ("images", "JPEGImages", "raw")     # pjreddie's order of replacements
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff")


def label_path(image: str) -> str:
    """The label file Darknet's rule names for an image path (see the module doc). A path
    without one of IMAGE_SUFFIXES is a DarkbpError naming it."""
    stem, suffix = os.path.splitext(image)
    if suffix.lower() not in IMAGE_SUFFIXES:
        raise DarkbpError("cannot name its label file: the extension is not one of "
                          + ", ".join(IMAGE_SUFFIXES) + " (any case)", file=image)
    parts = stem.split("/")
    for name in LABEL_FOLDERS:
        # Folders only: the last part is the file name.
        if name in parts[:-1]:
            parts[parts.index(name)] = "labels"
    return "/".join(parts) + ".txt"


def find_label_file(image: str, base: str) -> str | None:
    """The existing label file of an image of a list in folder `base`: Darknet's
    `label_path`, else the .txt beside the image; None if neither exists."""
    darknet = label_path(image)
    found = resolve(darknet, base)
    if found is None:
        beside = os.path.splitext(image)[0] + ".txt"
        if beside != darknet:
            found = resolve(beside, base)
    return found


def read_label_file(path: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (n, 4) float32 centre form relative to the image, classes (n,) int64) of a
    label file, one row per object line; the rules and errors are the module doc's."""
    rows, ids = [], []
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise DarkbpError(f"expected 5 fields (class x y width height), found "
                              f"{len(fields)}: {line.strip()!r}", file=path, line=number)
        ids.append(_class_id(fields[0], classes, path, number))
        rows.append([_coordinate(text, name, path, number)
                     for text, name in zip(fields[1:], ("x", "y", "width", "height"))])
        for text, size, name in zip(fields[3:], rows[-1][2:], ("width", "height")):
            if size == 0:
                raise DarkbpError(f"{name} {text!r}: a box of no area (the width and height "
                                  "must be above 0)", file=path, line=number)
    return (np.array(rows, np.float32).reshape(-1, 4), np.array(ids, np.int64))


def _class_id(text: str, classes: int, path: str, number: int) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) >= classes:
        raise DarkbpError(f"class {text!r}: expected a whole number from 0 to {classes - 1} "
                          f"(classes={classes})", file=path, line=number)
    return int(text)


def _coordinate(text: str, name: str, path: str, number: int) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:                             # NaN fails this too
        raise DarkbpError(f"{name} {text!r}: expected a number from 0 to 1 (relative to the "
                          "image)", file=path, line=number)
    return value


@dataclass
class LabelCounts:
    """The label problems Darknet lets pass, counted over a list of images: images without
    a label file (the first SHOWN of their Darknet label paths kept, to name them) and
    empty label files."""

    images: int = 0
    missing: int = 0
    empty: int = 0
    missing_shown: list[str] = field(default_factory=list)

    def add(self, image: str, found: str | None, objects: int) -> None:
        """Count one image: its label file as find_label_file found it, and its objects."""
        self.images += 1
        if found is None:
            self.missing += 1
            if len(self.missing_shown) < SHOWN:
                self.missing_shown.append(label_path(image))
        elif objects == 0:
            self.empty += 1

    def warnings(self) -> list[str]:
        """One line per kind of problem seen, for the CLI's `darkbp: ` lines."""
        lines = []
        if self.missing:
            shown = ", ".join(repr(p) for p in self.missing_shown)
            more = ", ..." if self.missing > SHOWN else ""
            lines.append(f"{self.missing:,} of {self.images:,} images have no label file, "
                         f"scored as images without objects (as Darknet): {shown}{more}")
        if self.empty:
            lines.append(f"{self.empty:,} of {self.images:,} images have an empty label "
                         "file: images without objects")
        return lines
