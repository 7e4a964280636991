"""Darknet's own numbers (../shared/darknet-golden/, see its README) and darkbp's run of the same.

    fixture = Golden("lenet")              # or Golden("alexeyab-new/sam"): AlexeyAB's fork
    run = fixture.replay()                 # darkbp repeats Darknet's run from init.weights
    run.forward, run.train_forward         # (8, outputs) float32
    run.losses                             # [(net_cost, loss_per_image)] for steps 1..5
    run.step_weights[1], run.step_weights[5]   # every array of every layer after those steps
    fixture.forward, fixture.losses, fixture.weights_after(1)   # Darknet's

`relative(ours, theirs)` is the error measure the README's compatibility table uses:
max |ours − theirs| / max |theirs| over the tensor. Where CI has ../shared/ (CI=true), a
missing fixture fails the test instead of skipping it.

Where a run draws random numbers, Darknet's own draws are replayed (Golden.replay's noise):

    fixture.replay(noise=DropoutDraws.recorded(fixture))   # [dropout]: its recorded l.rand
    fixture.replay(noise=CropDraws.recorded(fixture))      # [crop]: crop_offsets.txt

Both classes also serve alone, as a training pass with chosen draws:
Pass.training(DropoutDraws(draws=mask)), Pass.training(CropDraws(layer, highs, draws)).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pytest

from darkbp.layers.crop import CropLayer
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
        self.cfg = self.folder / f"{self.folder.name}.cfg"   # "alexeyab-new/sam": sam.cfg

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
        recorded dropout draws or crop offsets; default darkbp's own (AlexeyAB's CPU
        training: tests/golden_alexeyab.py cpu_replay).
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


# --- Darknet's recorded random numbers, as a training pass's Noise ----------------------------

@dataclass(frozen=True)
class DropoutDraws(Noise):
    """A pass whose uniform draws (darkbp/passes.py Noise.uniform, what [dropout] reads) are
    given: Darknet's recorded l.rand, or a chosen mask (a draw < probability drops).

    `draws` is reshaped to the shape asked for; with `layer` set, only that layer may ask.
    """

    draws: np.ndarray | None = None
    layer: int | None = None

    def uniform(self, layer, shape):
        assert self.layer is None or layer == self.layer, (layer, self.layer)
        return np.asarray(self.draws, np.float32).reshape(shape)

    @classmethod
    def recorded(cls, fixture: "Golden", layer: int = 3):
        """noise(step) for Golden.replay: Darknet's uniform draws of training step `step` for
        its [dropout] `layer` (dropout_rand_step{step}_layer{layer}.f32, batch x outputs:
        layer 3 in darknet-golden/dropout and dropout_logistic)."""
        return lambda step: cls(draws=fixture.f32(f"dropout_rand_step{step}_layer{layer}.f32"),
                                layer=layer)


@dataclass(frozen=True)
class CropDraws(Noise):
    """A pass whose integer draws (Noise.integers, what [crop] reads) are given: `draws`
    for the layer `layer`, which must ask for the ranges (the `highs`) `highs` — (dh, dw)
    in [0, H − crop_height] x [0, W − crop_width], with flip=1 a mirror bit in [0, 2) first.
    """

    layer: int = 0
    highs: tuple = ()
    draws: tuple = ()

    def integers(self, layer, highs):
        assert (layer, tuple(highs)) == (self.layer, self.highs)
        return self.draws

    @staticmethod
    def offsets(fixture: "Golden") -> dict[str, tuple[int, int, int]]:
        """{pass: (dh, dw, flip)} of the fixture's crop_offsets.txt, lines such as
        'train1 layer 0 dh 0 dw 3 flip 0 abs_err 0' ('predict', 'train1'..'train5',
        'predict_step5'): the window Darknet cut, identified by an exact match."""
        found = {}
        for line in (fixture.folder / "crop_offsets.txt").read_text().splitlines():
            words = line.split()
            fields = dict(zip(words[1::2], words[2::2]))
            assert fields["layer"] == "0" and float(fields["abs_err"]) == 0    # an exact match
            found[words[0]] = (int(fields["dh"]), int(fields["dw"]), int(fields["flip"]))
        return found

    @classmethod
    def recorded(cls, fixture: "Golden"):
        """noise(step) for Golden.replay: the window Darknet cut in training step `step` with
        its [crop] (layer 0, flip=0), from crop_offsets.txt. The ranges asked for are rand()'s
        moduli in Darknet's forward_crop_layer: (H − crop_height + 1, W − crop_width + 1)."""
        offsets = cls.offsets(fixture)
        layer = parse_network(fixture.cfg).layers[0]
        assert isinstance(layer, CropLayer) and not layer.flip, fixture.cfg
        _, h, w = layer.in_shape
        ranges = (h - layer.crop_height + 1, w - layer.crop_width + 1)

        def noise(step):
            dh, dw, flip = offsets[f"train{step}"]
            assert flip == 0                # the cfg has flip=0: Darknet draws no mirror
            return cls(layer=0, highs=ranges, draws=(dh, dw))

        return noise
