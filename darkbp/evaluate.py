"""Top-1 and top-k accuracy, per-class accuracy and the confusion matrix of a network.

    network = parse_network("cfg/mnist.cfg").initialize(0, np.float32)
    load_weights("backup/mnist_final.weights", network.layers)
    dataset = load_dataset("mnist")
    check_fits(network, dataset)
    dataset = dataset.decoded(network.input_shape)       # image files: decoded once
    result = evaluate(network, dataset.test_images, dataset.test_labels, dataset.classes,
                      top=top_k(len(dataset.classes), dataset.top))
    result.accuracy, result.top_accuracy, result.per_class, result.confusion

Pure library code: `darkbp eval` renders the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from darkbp.datasets import Dataset, network_input
from darkbp.errors import DarkbpError
from darkbp.network import Network
from darkbp.parallel import Runner


@dataclass(frozen=True)
class Evaluation:
    """How a network classified `count` labelled images.

    confusion: (K, K) int64, rows = true class, columns = predicted class.
    per_class: (K,) float64, the fraction of each class's images classified
    right (NaN for a class with no images); class_counts: (K,) images per class;
    top_accuracy: the fraction whose label is among the `top` highest outputs.
    """

    classes: tuple[str, ...]
    confusion: np.ndarray
    top: int | None = None           # k of the top-k count, None without one
    top_correct: int | None = None   # images whose label is among the k highest outputs

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
    def top_accuracy(self) -> float | None:
        return None if self.top_correct is None else self.top_correct / self.count

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

    images: (N, H, W) or (N, C, H, W) uint8 -> (N,) int64. Pixels become the network's
    input as in training (`darkbp.datasets.network_input`); `batch` images go through the
    network at a time, so memory stays bounded whatever N is. With a `runner`
    (darkbp.parallel) each chunk is split across its threads.
    """
    predicted = np.empty(len(images), dtype=np.int64)
    for start, output in _outputs(network, images, batch, runner):
        predicted[start:start + len(output)] = np.argmax(output, axis=1)
    return predicted


def evaluate(network: Network, images: np.ndarray, labels: np.ndarray,
             classes: Sequence[str], batch: int = 500,
             runner: Runner | None = None, top: int | None = None) -> Evaluation:
    """Classify `images` and tally the predictions against `labels` (N,) in 0..K-1.

    With `top` = k (2..K), also count the images whose label is among the k highest
    outputs, equal outputs ordered by class index (the lower first). Darknet's top_k
    orders them so too, except where an insertion pushes the earlier of two equal
    outputs down: it then drops that one and keeps the later.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    if len(images) == 0:
        raise ValueError("no images to evaluate")
    k = len(classes)
    if network.outputs != k:
        raise ValueError(f"the network has {network.outputs} outputs for {k} classes")
    if top is not None and not 2 <= top <= k:
        raise ValueError(f"top must be in 2..{k}, got {top}")
    truth = np.asarray(labels).astype(np.int64)   # uint8 labels would overflow truth·K
    guess = np.empty(len(images), dtype=np.int64)
    in_top = 0
    for start, output in _outputs(network, images, batch, runner):
        guess[start:start + len(output)] = np.argmax(output, axis=1)
        if top is not None:
            in_top += int(np.sum(_rank(output, truth[start:start + len(output)]) < top))
    confusion = np.bincount(truth * k + guess, minlength=k * k).reshape(k, k)
    return Evaluation(classes=tuple(classes), confusion=confusion, top=top,
                      top_correct=in_top if top is not None else None)


def _rank(output: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(n, K) scores, (n,) labels -> (n,) the label's place when the scores are sorted
    from the highest, equal ones by class index (0 = first): the scores above it, plus
    the equal ones of lower index."""
    score = output[np.arange(len(output)), truth][:, None]
    lower = np.arange(output.shape[1]) < truth[:, None]
    return np.sum(output > score, axis=1) + np.sum((output == score) & lower, axis=1)


def _outputs(network, images: np.ndarray, batch: int, runner: Runner | None):
    """(start, the network's (n, outputs) output for images[start:start + n]), chunk by chunk."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    for start in range(0, len(images), batch):
        x = network_input(images[start:start + batch], network.input_shape)
        yield start, runner.forward(x) if runner is not None else network.forward(x)


def top_k(classes: int, data_top: int | None = None, requested: int | None = None) -> int | None:
    """The k of the top-k accuracy darkbp reports, None for none.

    `requested` (--top K), else the .data file's top=, else 5 when there are more than 5
    classes (the default of Darknet's training-time top-k); at most the number of
    classes (as AlexeyAB's Darknet caps it); k = 1 is top-1 itself: None.
    """
    k = requested or data_top or (5 if classes > 5 else None)
    if k is None:
        return None
    k = min(k, classes)
    return k if k > 1 else None


def check_fits(network: Network, dataset: Dataset) -> None:
    """A DarkbpError naming the cfg unless the network takes the dataset's images and classes.

    Every layer must be one darkbp runs (not a detection head). Images held as arrays
    (C, H, W) fit an input of H x W with C channels, with 3 channels if C = 1 (grey is
    replicated), with 1 if C = 3 (luma), or a flat `inputs` of C·H·W values. Image files
    are decoded to the input's width x height, so they need an image input of 1 or 3
    channels. The last layer must have one output per class.
    """
    network.check_classifier("eval")
    c, h, w = network.input_shape
    config = network.config
    image_input = bool(config.height and config.width and config.channels)
    given = f"{w} x {h} x {c}" if image_input else f"a flat input of {c}"
    shape = dataset.image_shape
    if shape is None:
        if not image_input or c not in (1, 3):
            raise DarkbpError(f"the network's input is {given} (width x height x channels): "
                              f"darkbp decodes the images of {dataset.name} to a width x "
                              "height x 1 (grey) or 3 (RGB) input", file=network.file)
    else:
        channels, height, width = shape
        fits = ((c, h, w) == (channels * height * width, 1, 1)
                or (image_input and (h, w) == (height, width)
                    and (c == channels or {c, channels} == {1, 3})))
        if not fits:
            takes = "1 or 3" if channels in (1, 3) else str(channels)
            raise DarkbpError(f"the network's input is {given} (width x height x channels), "
                              f"but {dataset.name} images are {width} x {height} x {channels} "
                              f"(a network takes them as {width} x {height} x {takes}, or "
                              f"inputs={channels * height * width})", file=network.file)
    if network.outputs != len(dataset.classes):
        raise DarkbpError(f"the last layer has {network.outputs} outputs, but {dataset.name} "
                          f"has {len(dataset.classes)} classes", file=network.file)
