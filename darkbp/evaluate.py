"""Accuracy, per-class accuracy and the confusion matrix of a network on labelled images.

    network = parse_network("cfg/mnist.cfg").initialize(0, np.float32)
    load_weights("backup/mnist_final.weights", network.layers)
    dataset = load_dataset("mnist")
    check_fits(network, dataset)
    result = evaluate(network, dataset.test_images, dataset.test_labels, dataset.classes)
    result.accuracy, result.per_class, result.confusion

Pure library code: `darkbp eval` renders the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from darkbp.datasets import Dataset
from darkbp.errors import DarkbpError
from darkbp.network import Network
from darkbp.parallel import Runner


@dataclass(frozen=True)
class Evaluation:
    """How a network classified `count` labelled images.

    confusion: (K, K) int64, rows = true class, columns = predicted class.
    per_class: (K,) float64, the fraction of each class's images classified
    right (NaN for a class with no images); class_counts: (K,) images per class.
    """

    classes: tuple[str, ...]
    confusion: np.ndarray

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def accuracy(self) -> float:
        return self.correct / self.count

    @property
    def class_counts(self) -> np.ndarray:
        return self.confusion.sum(axis=1)

    @property
    def per_class(self) -> np.ndarray:
        counts = self.class_counts
        hits = np.diagonal(self.confusion).astype(np.float64)
        return np.divide(hits, counts, out=np.full(len(counts), np.nan), where=counts > 0)


def predict(network: Network, images: np.ndarray, batch: int = 500,
            runner: Runner | None = None) -> np.ndarray:
    """The class each image is given: argmax of the network's output, evaluation mode.

    images: (N, H, W) or (N, C, H, W) uint8 -> (N,) int64. Pixels are scaled to
    [0, 1] as in training; `batch` images go through the network at a time, so
    memory stays bounded whatever N is. With a `runner` (darkbp.parallel) each
    chunk is split across its threads.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    predicted = np.empty(len(images), dtype=np.int64)
    for start in range(0, len(images), batch):
        x = images[start:start + batch].astype(np.float32) / 255
        output = runner.forward(x) if runner is not None else network.forward(x)
        predicted[start:start + batch] = np.argmax(output, axis=1)
    return predicted


def evaluate(network: Network, images: np.ndarray, labels: np.ndarray,
             classes: Sequence[str], batch: int = 500,
             runner: Runner | None = None) -> Evaluation:
    """Classify `images` and tally the predictions against `labels` (N,) in 0..K-1."""
    if len(images) != len(labels):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    if len(images) == 0:
        raise ValueError("no images to evaluate")
    k = len(classes)
    if network.outputs != k:
        raise ValueError(f"the network has {network.outputs} outputs for {k} classes")
    truth = np.asarray(labels).astype(np.int64)   # uint8 labels would overflow truth·K
    guess = predict(network, images, batch, runner)
    confusion = np.bincount(truth * k + guess, minlength=k * k).reshape(k, k)
    return Evaluation(classes=tuple(classes), confusion=confusion)


def check_fits(network: Network, dataset: Dataset) -> None:
    """A DarkbpError naming the cfg unless the network takes the dataset's images and classes.

    Every layer must be one darkbp runs (not a detection head), the input must be
    the images' width x height x 1, or a flat `inputs` of as many pixels; the last
    layer must have one output per class.
    """
    network.check_runnable()
    _, height, width = dataset.test_images.shape
    c, h, w = network.input_shape
    if (c, h, w) not in ((1, height, width), (height * width, 1, 1)):
        given = f"{w} x {h} x {c}" if (h, w) != (1, 1) else f"a flat input of {c}"
        raise DarkbpError(f"the network's input is {given} (width x height x channels), but "
                          f"{dataset.name} images are {width} x {height} x 1 "
                          f"(or inputs={height * width})", file=network.file)
    if network.outputs != len(dataset.classes):
        raise DarkbpError(f"the last layer has {network.outputs} outputs, but {dataset.name} "
                          f"has {len(dataset.classes)} classes", file=network.file)
