"""Darknet's `classifier predict` on image files: letterboxed inputs, outputs, the top k.

    network = parse_network("cfg/mnist.cfg").initialize(0, np.float32)
    load_weights("backup/mnist_final.weights", network.layers)
    check_input(network)
    paths = image_paths(["digits/", "seven.png"])       # folders expanded, sorted
    for chunk, outputs, seconds in predict_files(network, paths):
        for path, output in zip(chunk, outputs):          # output: (outputs,) float32
            print(path, ranked(output, 3))                # [(class, value), ...]

Each image is read as Darknet's load_image_color reads it (pixel / 255; with the cfg's
channels: grey is replicated to 3, colour becomes grey by luma for a 1-channel network,
see imagedata.read_image) and letterboxed to the cfg's width x height
(imagedata.letterbox). Pure library code: `darkbp predict` renders the results.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from darkbp.cfg import CfgWarning
from darkbp.errors import DarkbpError
from darkbp.imagedata import (IMAGE_EXTENSIONS, existing_file, letterbox, positive_int,
                              read_data_file, read_image, read_labels)
from darkbp.network import Network
from darkbp.parallel import Runner
from darkbp.threads import set_threads

# Images per forward pass: as many as fit in this many bytes of input, at most MAX_PASS
# (LeNet runs 5x faster per image at 16 than at 1; a 224 x 224 x 3 input gets 13).
PASS_BYTES = 8 << 20
MAX_PASS = 64
SPLIT_ABOVE = 1.0      # seconds of forward passes left, on one process, worth workers


def check_input(network: Network, command: str | None = "predict") -> None:
    """A DarkbpError naming the cfg unless the network takes width x height images of 1 or
    3 channels (what images are letterboxed to) and can run (not only be tabulated); with
    a `command`, also unless it is a classifier (Network.check_classifier)."""
    network.check_runnable()
    if command is not None:
        network.check_classifier(command)
    config = network.config
    if not (config.width and config.height and config.channels in (1, 3)):
        c, h, w = network.input_shape
        given = f"{w} x {h} x {c}" if config.width and config.height else \
            f"a flat input of {c}"
        raise DarkbpError(f"the network's input is {given} (width x height x channels): "
                          "darkbp predicts images letterboxed to a width x height x 1 "
                          "(grey) or 3 (RGB) input", file=network.file)


def image_paths(arguments: Sequence[str]) -> list[str]:
    """The image files the arguments name, in order: a file as given, a folder as the
    .png, .jpg and .jpeg files (any case) directly inside it, sorted by name, those
    starting with "." skipped. A missing path or a folder without images is a DarkbpError."""
    paths = []
    for argument in arguments:
        if os.path.isdir(argument):
            found = sorted(entry.name for entry in os.scandir(argument)
                           if entry.is_file() and not entry.name.startswith(".")
                           and entry.name.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise DarkbpError("holds no .png, .jpg or .jpeg file (subfolders are not "
                                  "searched)", file=argument)
            paths += [os.path.join(argument, name) for name in found]
        elif os.path.isfile(argument):
            paths.append(argument)
        else:
            raise DarkbpError("no such file or folder", file=argument)
    return paths


def data_file_names(path: str) -> tuple[list[str], Path, int | None, list[CfgWarning]]:
    """The class names a Darknet .data file names, as `classifier predict` reads them:
    (the lines of its names= file, else of its labels= file; that file; its top=, else
    None; the .data file's warnings). Paths resolve as imagedata's module doc says."""
    options, warnings = read_data_file(path)
    key = next((key for key in ("names", "labels") if key in options), None)
    if key is None:
        raise DarkbpError("no names= or labels= line to name the classes", file=path)
    names_path = existing_file(options[key], key, Path(path).parent, path)
    top = positive_int(options["top"], "top", path) if "top" in options else None
    return read_labels(names_path), names_path, top, warnings


def check_names(names: Sequence[str], source: str, network: Network) -> None:
    """A DarkbpError naming `source` unless there is one name per output of the network."""
    if len(names) != network.outputs:
        raise DarkbpError(f"holds {len(names)} names, but the last layer of {network.file} "
                          f"has {network.outputs} outputs", file=source)


def letterboxed(path: str, shape: tuple[int, int, int], with_size: bool = False):
    """An image file as the network input `shape` (C, h, w) takes it: float32 (C, h, w);
    with_size: (that, the file's (width, height)), which a detector's boxes need.

    A missing, unreadable or corrupt file is a DarkbpError naming it."""
    c, h, w = shape
    image = read_image(path, c)
    boxed = letterbox(image.astype(np.float32) / 255, w, h)
    return (boxed, (image.shape[2], image.shape[1])) if with_size else boxed


def predict_files(network: Network, paths: Sequence[str], threads: int = 1
             ) -> Iterator[tuple[Sequence[str], np.ndarray, float]]:
    """(paths, their outputs (n, outputs) float32, seconds of the forward pass), pass by pass.

    Each pass letterboxes up to PASS_BYTES of input (at most MAX_PASS images) and runs
    the network in evaluation mode. The seconds are the forward pass's alone, as Darknet
    times its predict. `threads` first work inside the matrix products (set_threads); once
    a pass shows that the passes left would take more than SPLIT_ABOVE seconds, they are
    split across `threads` worker processes (darkbp.parallel.Runner), whose start (~0.2 s)
    would only slow a short run down.
    """
    shape = network.input_shape
    per_pass = max(1, min(MAX_PASS, PASS_BYTES // (4 * int(np.prod(shape)))))
    set_threads(threads)
    runner = None
    try:
        for start in range(0, len(paths), per_pass):
            chunk = paths[start:start + per_pass]
            x = np.stack([letterboxed(path, shape) for path in chunk])
            started = time.perf_counter()
            outputs = runner.forward(x) if runner is not None else network.forward(x)
            seconds = time.perf_counter() - started
            yield chunk, outputs, seconds
            left = len(paths) - start - len(chunk)
            if (runner is None and threads > 1 and left >= 2 * threads
                    and seconds / len(chunk) * left > SPLIT_ABOVE):
                runner = Runner(network, threads)
    finally:
        if runner is not None:
            runner.close()


def ranked(output: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k highest of one image's outputs (outputs,) as (class, value), highest first,
    equal values by class index (the lower first)."""
    order = np.argsort(-output, kind="stable")[:k]
    return [(int(i), float(output[i])) for i in order]
