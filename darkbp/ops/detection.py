"""What the detection heads' training shares: the truth they train on, and the losses whose
negative gradients are Darknet's deltas.

    truth = Truth(boxes, netw=416, neth=416, seen=64)   # boxes: (N, T, 5) x, y, w, h, class
    truth.valid                                          # (N, T): Darknet's boxes of each image
    bce_logits(t, z)                                     # −t·log σ(z) − (1 − t)·log(1 − σ(z))

Darknet's heads compute a "delta" in their forward pass: the negative gradient, with
respect to the head's input, of a loss Darknet never writes down (it prints |delta|²).
Each head in darkbp/layers/ derives that loss, with its assignments and masks held fixed
(they are piecewise constant in the input), so that gradcheck can prove the delta.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

F32 = np.float32


@dataclass(frozen=True)
class Truth:
    """A training batch's boxes, as Darknet's net->truth holds them for [yolo] and [region].

    boxes: (N, T, 5) float32, per image x, y, w, h relative to the network input, then the
    class; zero padded. As in Darknet, an image's list ends at its first box with x == 0.
    netw, neth: the network input's size (anchors in pixels are divided by it).
    seen: images trained on, this batch's included (Darknet's *net->seen in forward).
    fixed: where the heads keep the targets they make for this truth, to hold them fixed
    over several forwards (gradcheck: the loss with its assignment held fixed); None, as in
    training, makes them anew after each forward.
    """

    boxes: np.ndarray
    netw: int
    neth: int
    seen: int = 0
    fixed: dict | None = field(default=None, compare=False)

    @property
    def valid(self) -> np.ndarray:
        """(N, T) bool: the boxes Darknet reads, those before the first x == 0."""
        return np.cumprod(self.boxes[:, :, 0] != 0, axis=1).astype(bool)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, images: slice) -> "Truth":
        """The truth of some of the batch's images (a subdivision's, a shard's)."""
        return Truth(self.boxes[images], self.netw, self.neth, self.seen, self.fixed)

    @classmethod
    def random(cls, rng: np.random.Generator, images: int, classes: int, netw: int, neth: int,
               fixed: bool = False) -> "Truth":
        """1 to 4 random boxes per image (centres in [0.1, 0.9], sizes in [0.1, 0.6]) of
        random classes, 90 slots as Darknet's default `max`."""
        boxes = np.zeros((images, 90, 5), F32)
        for image in range(images):
            k = int(rng.integers(1, 5))
            boxes[image, :k, :2] = rng.uniform(0.1, 0.9, (k, 2))
            boxes[image, :k, 2:4] = rng.uniform(0.1, 0.6, (k, 2))
            boxes[image, :k, 4] = rng.integers(0, classes, k)
        return cls(boxes, netw, neth, fixed={} if fixed else None)


def bce_logits(t: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of targets t in [0, 1] against σ(z), from the logits z, stably:
    softplus(z) − t·z. Its derivative in z is σ(z) − t.

    softplus(z) = max(z, 0) + log1p(exp(−|z|)): NumPy runs exp and log1p in SIMD, where
    np.logaddexp(0, z) is a scalar loop (921,600 float32 values, yolo-digits' two heads
    at batch 64: 18 against 2.5 ms; they differ by at most one rounding)."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z))) - t * z


def first_best(ious: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Darknet's `if (iou > best_iou)` search from best_iou = 0 over the last axis: (the best
    IoU, 0 if none is above 0; the index of the first that reaches it, 0 if none). Invalid
    entries and NaN IoUs never win."""
    candidates = np.where(valid & (ious > 0), ious, F32(0))
    return candidates.max(axis=-1, initial=F32(0)), candidates.argmax(axis=-1)


def last_of_each(keys: np.ndarray) -> np.ndarray:
    """Indexes of the last occurrence of each distinct row of `keys` (k, m), in input order:
    where Darknet's loop writes the same cell again, the last write stays."""
    if not len(keys):
        return np.zeros(0, np.int64)
    _, first_from_end = np.unique(keys[::-1], axis=0, return_index=True)
    return np.sort(len(keys) - 1 - first_from_end)


def sum32(values: np.ndarray) -> float:
    """The float32 sum of `values` in order, one by one, as Darknet's `float` accumulators add."""
    flat = np.asarray(values, F32).ravel()
    return float(np.cumsum(flat, dtype=F32)[-1]) if flat.size else 0.0


@dataclass(frozen=True)
class Targets:
    """A head's training on one pass: the truth it was made for, Darknet's delta, and the
    loss's scale (0: no term) and target per output entry, with the statistics' sums."""

    truth: Truth
    delta: np.ndarray
    scale: np.ndarray
    target: np.ndarray
    stats: dict
    terms: dict | None = None      # a head's terms outside scale and target ([yolo] iou_loss)
