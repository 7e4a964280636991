"""darkbp from Python: load a cfg (and its .weights), predict, tabulate, save.

    import darkbp
    net = darkbp.load("cfg/mnist.cfg", "backup/mnist_final.weights")
    p = net.predict(x)              # x: (N, 1, 28, 28) or (N, 784) in [0, 1] -> (N, 10) float32
    p = net.classify("seven.png")   # one image file, letterboxed as `darkbp predict` -> (10,)
    found = net.detect(["dog.jpg"])  # a detector: per image, its boxes as `darkbp detect` finds them
    net.summary()                   # the data of `darkbp summary --format json`
    net.save_weights("copy.weights")

The stable names are `darkbp.load`, `darkbp.Net` and `darkbp.DarkbpError`. `net.network`
is the `darkbp.network.Network` the CLI runs on, for those who want the layers; that
module and the rest of the package may change between versions.
"""

from __future__ import annotations

import os

import numpy as np

from darkbp.network import Network, parse_network
from darkbp.classifier import check_input, letterboxed
from darkbp.detector import (HIER, NMS, THRESH, check_detector, detect_files, head_outputs,
                             network_boxes, detections)
from darkbp.summary import darknet_text, summary_data
from darkbp.weights import load_weights, save_weights

__all__ = ["Net", "load"]

PREDICT_BATCH = 256     # images per forward pass of predict: LeNet peaks at ~20 MB with 256


def load(cfg: str | os.PathLike, weights: str | os.PathLike | None = None, *,
         seed: int = 0) -> "Net":
    """The network of a Darknet cfg, its parameters read from a Darknet .weights file.

    Without `weights`, Darknet's random initialisation drawn from `seed` (where
    `darkbp train --seed` starts). A cfg darkbp cannot build or a .weights file that is
    missing or of the wrong size raises the DarkbpError (file, line, message) the CLI
    prints; the cfg's warnings are in `net.warnings`, not printed. A cfg with a
    table-only section (recurrent layers) loads, for its summary; predict refuses it. A
    detector (a cfg with [yolo], [region] or [detection] heads) runs: `detect`.
    """
    network = parse_network(cfg).initialize(seed, np.float32)
    seen = 0 if weights is None else load_weights(weights, network.layers)
    return Net(network, seen)


class Net:
    """A network with its parameters, as `darkbp.load` returns it.

    network: the darkbp.network.Network (layers, shapes, parameter arrays), float32.
    warnings: the cfg's warnings, a tuple of darkbp.cfg.CfgWarning (file, line, message;
    str() is the line the CLI prints).
    """

    def __init__(self, network: Network, seen: int = 0):
        if network.dtype is None:
            raise ValueError("the network has no parameters yet: call network.initialize()")
        self.network = network
        self.warnings = tuple(network.warnings)
        self._seen = seen       # images trained on, from the .weights header; save_weights keeps it

    def __repr__(self) -> str:
        c, h, w = self.network.input_shape
        return (f"<darkbp.Net {self.network.file}: {len(self.network.layers)} layers, "
                f"{w} x {h} x {c} -> {self.network.outputs}>")

    def predict(self, x, batch: int = PREDICT_BATCH) -> np.ndarray:
        """The last layer's output for every image, in evaluation mode: (N, outputs) float32.

        x: (N, C, H, W) with the cfg's channels, height and width, or (N, C·H·W) (the cfg's
        `inputs`), holding floats in [0, 1] — or uint8 pixels 0..255, divided by 255 as
        `darkbp train` and `darkbp eval` do. With a [softmax] last the rows are class
        probabilities; a [cost] last passes its input through. `batch` images go through
        the network at a time, so memory stays bounded whatever N is. x is never written to.
        """
        self.network.check_runnable()
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        x = np.asarray(x)
        c, h, w = self.network.input_shape
        if x.ndim < 2 or x.shape[1:] not in ((c, h, w), (c * h * w,)):
            raise ValueError(f"x must have the shape (N, {c}, {h}, {w}) or (N, {c * h * w}) "
                             f"for {self.network.file}, got {x.shape}")
        if x.dtype != np.uint8 and x.dtype.kind != "f":
            raise TypeError(f"x must hold floats in [0, 1] or uint8 pixels 0..255, "
                            f"got {x.dtype}")
        out = np.empty((len(x), self.network.outputs), np.float32)
        for start in range(0, len(x), batch):
            chunk = x[start:start + batch]
            if chunk.dtype == np.uint8:
                chunk = chunk.astype(np.float32) / 255    # darkbp.evaluate.predict's scaling
            # Copied out: the last layer's output may be its own buffer, or (a [cost]) x itself.
            out[start:start + batch] = self.network.forward(chunk)
        return out

    def classify(self, path: str | os.PathLike) -> np.ndarray:
        """One PNG or JPEG file's outputs as `darkbp predict` (Darknet's `classifier
        predict`) computes them: (outputs,) float32, probabilities with a [softmax] last.

        The image is read with the cfg's channels, scaled to [0, 1] and letterboxed to the
        cfg's width x height (darkbp.imagedata.letterbox). A file that cannot be read or
        decoded, or a cfg without a width x height x 1 or 3 input, raises a DarkbpError.
        """
        check_input(self.network)
        return self.predict(letterboxed(str(path), self.network.input_shape)[None])[0]

    def detect(self, images, thresh: float = THRESH, nms: float = NMS, *,
               names=None, hier: float = HIER, sizes=None,
               pjreddie_batchnorm: bool = False) -> list[list[dict]]:
        """A detector's objects in each image, as `darkbp detect --format json` lists them:
        per image a list of {"class", "name", "confidence", "objectness", "box" [x, y, w, h]
        relative centre form, unclipped, "pixels" [x1, y1, x2, y2] clipped}, one per
        (box, class) whose probability is above `thresh` after Darknet's NMS (`nms`; 0:
        none), in Darknet's order.

        images: an image file (PNG or JPEG), or a list of them, letterboxed as `darkbp
        detect` does; or already letterboxed network inputs, an array (N, C, h, w) at the
        cfg's size (floats in [0, 1] or uint8), with `sizes` the photos' (width, height)
        for the boxes (default: the input's own size). names: the class names (default
        "0", "1", ...). pjreddie_batchnorm: batch norm as pjreddie's Darknet's inference
        (darkbp.passes.Pass). A cfg without a detection head raises a DarkbpError.
        """
        classes = check_detector(self.network)
        names = list(names) if names is not None else [str(k) for k in range(classes)]
        if len(names) != classes:
            raise ValueError(f"names has {len(names)} entries, but the detection heads have "
                             f"classes={classes}")
        if isinstance(images, (str, os.PathLike)):
            images = [images]
        if not isinstance(images, np.ndarray):
            return [image["detections"] for image in detect_files(
                self.network, [str(path) for path in images], thresh, hier, nms,
                names=names, pjreddie_batchnorm=pjreddie_batchnorm)]
        c, h, w = self.network.input_shape
        if images.ndim != 4 or images.shape[1:] != (c, h, w):
            raise ValueError(f"images must be files or an array (N, {c}, {h}, {w}) for "
                             f"{self.network.file}, got {images.shape}")
        x = images.astype(np.float32) / 255 if images.dtype == np.uint8 else images
        sizes = [(w, h)] * len(x) if sizes is None else [tuple(s) for s in sizes]
        if len(sizes) != len(x):
            raise ValueError(f"sizes has {len(sizes)} entries for {len(x)} images")
        found = []
        for start in range(0, len(x), PREDICT_BATCH):
            chunk = sizes[start:start + PREDICT_BATCH]
            outputs = head_outputs(self.network, x[start:start + PREDICT_BATCH],
                                   pjreddie_batchnorm)
            found += [detections(*image, width, height, thresh, names) for image, (width, height)
                      in zip(network_boxes(self.network, outputs, chunk, thresh, hier, nms),
                             chunk)]
        return found

    def summary(self, batch: int | None = None) -> dict:
        """The layer table as data: what `darkbp summary --format json [--batch N]` prints.

        `batch` sets the activation-memory total (default: the cfg's batch).
        """
        if batch is not None and batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        return summary_data(self.network, batch)

    def darknet_table(self) -> str:
        """The layer table Darknet prints for this cfg, byte for byte
        (`darkbp summary --format darknet`)."""
        return darknet_text(self.network)

    def save_weights(self, path: str | os.PathLike) -> None:
        """Write the parameters as a Darknet .weights file, atomically (a reader sees the old
        file or the new one), with the loaded file's `seen` (images trained on; 0 without
        a file)."""
        save_weights(path, self.network.layers, self._seen)
