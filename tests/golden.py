"""Darknet's own numbers (../shared/darknet-golden/, see its README) and darkbp's run of the same.

    fixture = Golden("lenet")
    run = fixture.replay()                 # darkbp repeats Darknet's run from init.weights
    run.forward, run.train_forward         # (8, outputs) float32
    run.losses                             # [(net_cost, loss_per_image)] for steps 1..5
    run.step_weights[1], run.step_weights[5]   # every array of every layer after those steps
    fixture.forward, fixture.losses, fixture.weights_after(1)   # Darknet's

`relative(ours, theirs)` is the error measure the README's compatibility table uses:
max |ours − theirs| / max |theirs| over the tensor. Where CI has ../shared/ (CI=true), a
missing fixture fails the test instead of skipping it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from darkbp.network import Network, parse_network
from darkbp.passes import Noise, Pass
from darkbp.sgd import SGD
from darkbp.weights import load_weights
from tests.conftest import SHARED

GOLDEN = SHARED / "darknet-golden"
STEPS = 5
LEARNING_RATE = 0.02          # every golden cfg: constant policy (README "What the driver did")


def relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    """max |ours − theirs| / max |theirs| (1e-30 floor for an all-zero reference)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))


def arrays(network: Network) -> dict[str, np.ndarray]:
    """Copies of every array a .weights file holds, keyed 'layer.name'."""
    return {f"{layer.index}.{name}": getattr(layer, name).copy()
            for layer in network.layers for name in layer.weights_order()}


@dataclass
class Replay:
    """What darkbp computed repeating the driver's run."""

    forward: np.ndarray
    train_forward: np.ndarray
    losses: list[tuple[float, float]]
    step_weights: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    forward_step5: np.ndarray | None = None
    network: Network | None = None


class Golden:
    """One fixture folder of ../shared/darknet-golden/."""

    def __init__(self, name: str):
        self.name = name
        self.folder = GOLDEN / name
        if not self.folder.is_dir():
            message = f"Darknet's golden fixture {self.folder} is missing"
            if os.environ.get("CI") or SHARED.is_dir():
                pytest.fail(message)
            pytest.skip(message + " (no ../shared/ on this machine)")
        self.cfg = self.folder / f"{name}.cfg"

    def f32(self, name: str, rows: int | None = None) -> np.ndarray:
        values = np.fromfile(self.folder / name, dtype="<f4")
        return values.reshape(rows or self.batch, -1)

    @property
    def batch(self) -> int:
        return parse_network(self.cfg).config.batch

    def network(self, weights: str = "init.weights") -> Network:
        """The fixture's cfg with Darknet's weights from `weights`, float32."""
        network = parse_network(self.cfg).initialize(0, np.float32)
        load_weights(self.folder / weights, network.layers)
        return network

    @property
    def input(self) -> np.ndarray:
        network = parse_network(self.cfg)
        return self.f32("input.f32").reshape((self.batch,) + network.input_shape)

    @property
    def truth(self) -> np.ndarray:
        return self.f32("truth.f32")

    @property
    def forward(self) -> np.ndarray:
        return self.f32("forward.f32")

    @property
    def losses(self) -> list[tuple[float, float]]:
        """(net_cost, loss_per_image) of steps 1..5, as Darknet printed them."""
        rows = [line.split() for line in (self.folder / "losses.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
        return [(float(cost), float(per_image)) for _, cost, per_image in rows]

    def weights_after(self, step: int) -> dict[str, np.ndarray]:
        return arrays(self.network(f"step{step}.weights"))

    def layer_output(self, kind: str, index: int) -> np.ndarray:
        """layers/forward_NN.f32 (kind 'forward') or layers/train1_NN.f32 ('train1')."""
        return self.f32(f"layers/{kind}_{index:02d}.f32")

    def replay(self, noise=None, steps: int = STEPS) -> Replay:
        """darkbp's run of the driver's steps: predict, then `steps` SGD steps on the batch.

        noise(step) -> the Noise of training step `step` (1-based), to inject Darknet's
        recorded dropout draws or crop offsets; default darkbp's own.
        """
        network = self.network()
        config = network.config
        x, truth = self.input, self.truth
        forward = network.forward(x)
        sgd = SGD(network.layers, config.momentum, config.decay, config.batch)
        replay = Replay(forward=forward, train_forward=None, losses=[], network=network)
        for step in range(1, steps + 1):
            ctx = Pass.training(noise(step) if noise else Noise(0, step - 1))
            output = network.forward(x, ctx)
            cost = float(network.cost(truth).sum())
            network.backward(truth)
            sgd.step(LEARNING_RATE)
            if step == 1:
                replay.train_forward = output
            replay.losses.append((cost, cost / config.batch))
            if step in (1, 5):
                replay.step_weights[step] = arrays(network)
        replay.forward_step5 = network.forward(x)
        return replay
