"""What the three detection heads ([yolo], [region], [detection]) share as cost layers.

A head trains on a `Truth` (darkbp/ops/detection.py): after a training forward,
`train_targets(y, truth)` is Darknet's training part of the head's forward (its delta, the
statistics) with the scale and target of every output entry's term in darkbp's loss. The
network asks `cost(truth)` (that loss per image) and `input_grad(truth)` (its gradient at
the head's input, from Darknet's delta), and the trainer `darknet_cost` and `statistics`;
the targets are made once per truth and pass.
"""

from __future__ import annotations

import numpy as np

from darkbp.layers.base import Layer
from darkbp.ops.detection import Targets, Truth, sum32


def summed_statistics(stats: list[dict]) -> dict:
    """Heads' `statistics` (dicts of sums and counts) added key by key: those of several
    shards or passes give the statistics of them all."""
    return {key: sum(each[key] for each in stats) for key in stats[0]}


class Head(Layer):
    """Base class of the detection heads (not a section of its own)."""

    detects = True
    _found: Targets | None = None

    def training_refusal(self) -> str | None:
        """Why darkbp cannot train this head as the cfg sets it (None: it can)."""
        return None

    def remember(self, x: np.ndarray, y: np.ndarray, ctx) -> None:
        """Keep a training forward's input and output (what the loss needs)."""
        if ctx.train:
            self._x, self._y, self._found = x, y, None

    def assign(self, truth: Truth) -> Targets:
        """train_targets of the last training forward, made once per truth (once for all
        forwards with a truth whose targets are `fixed`)."""
        if truth.fixed is not None and self.index in truth.fixed:
            return truth.fixed[self.index]
        if self._found is None or self._found.truth is not truth:
            self._found = self.train_targets(self._y, truth)
        if truth.fixed is not None:
            truth.fixed[self.index] = self._found
        return self._found

    def train_targets(self, y: np.ndarray, truth: Truth) -> Targets:
        raise NotImplementedError

    def darknet_cost(self, truth: Truth) -> float:
        """Darknet's *l.cost: |delta|² over the pass (float32, summed in order)."""
        return sum32(self.assign(truth).delta ** 2)

    def split_darknet_cost(self, costs: float, stats: dict) -> float:
        """Darknet's *l.cost of a pass split into shards, from the sum of the shards' own
        costs and their summed `statistics`: that sum, |delta|² being a sum too."""
        return costs

    def statistics(self, truth: Truth) -> dict:
        """The sums and counts behind Darknet's statistics line (`stats_line`), over the
        pass: sums of shards' statistics give the whole batch's line."""
        return self.assign(truth).stats

    def stats_means(self, stats: dict) -> dict[str, float]:
        """The numbers of Darknet's statistics line made from `statistics` (float32
        quotients, by Darknet's names for them, in its order); `stats_line` prints them."""
        raise NotImplementedError

    def stats_line(self, stats: dict) -> str:
        raise NotImplementedError
