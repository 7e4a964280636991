"""Finite-difference check of every gradient the network computes (SPEC section 8).

In float64, the analytic gradient of the summed loss L (cross-entropy, a [cost], or a
detector's heads' losses with their assignment held fixed) (from one
forward and one backward pass) is compared, element by element, with the
central difference (L(θ+ε) − L(θ−ε)) / 2ε, for every parameter tensor of
every layer and for the input. Small tensors are checked in full; large ones
on a seeded random sample whose size is reported.

The relative error of an element is |a − n| / max(|a|, |n|, floor / tol), floor =
NOISE_FLOOR·max(1, |L|/LOSS_SCALE): the floor is what float64 rounding of L leaves in a
central difference (about 1e-9 for a loss up to LOSS_SCALE, proportionally more for a
larger one, such as a detector's ~100), scaled so that pure noise never fails and a real
error of relative size tol in a gradient as small as floor / tol still does. An element fails when its relative error exceeds tol. A wrong sign, a
missing term or a transposed kernel gives relative errors near 1.

Large tensors are sampled half from the elements whose analytic gradient is
not zero (so that dead relu units do not make the sample trivial) and half
uniformly.

Every forward of the check is the same training pass (`Pass`): random layers
draw the same dropout mask and crop offset each time, so the loss is one
smooth function of the parameters.

The network is initialised as for training, then its biases and batch-norm
scales are drawn at random too (zero biases would put every all-zero window
exactly on relu's kink), and the parameters a layer calls `tied` are moved apart
([shortcut]'s weights all start at 1, on the kink of softmax's max). Inputs are
drawn so that no pre-activation sits within `MARGIN_EPS`·ε of a kink of its
activation (relu at 0, hardtan at ±1, ...) and no max-pooling window has two
values that close to its maximum: a central difference then never straddles a
kink, and a correct network passes for every seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from darkbp.errors import DarkbpError
from darkbp.layers.base import INPUT
from darkbp.network import Network
from darkbp.ops.detection import Truth
from darkbp.passes import Noise, Pass

MARGIN_EPS = 10       # distance kept from activation kinks and max-pool ties, in units of eps
NOISE_FLOOR = 1e-8    # absolute errors below this are float64 rounding in L, not gradients,
LOSS_SCALE = 10.0     # for a loss up to this size; a larger L rounds (and floors) in proportion
DRAWS = 200           # inputs tried before giving up on finding one away from kinks


@dataclass
class CheckRow:
    """The result for one tensor: which, how many elements, errors and verdict."""

    layer: int | None          # None for the network input
    layer_type: str
    tensor: str
    size: int
    checked: int
    max_abs: float
    max_rel: float
    passed: bool


@dataclass
class CheckReport:
    rows: list[CheckRow]
    seed: int
    input_seed: int
    batch: int
    eps: float
    tol: float
    loss: float
    floor: float              # the absolute error that counts as rounding (see the module doc)

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)


def gradcheck(network: Network, batch: int = 2, eps: float = 1e-6, tol: float = 1e-6,
              seed: int = 0, max_elements: int = 64) -> CheckReport:
    """Check every gradient of `network` (re-initialised in float64 with `seed`)."""
    network.check_runnable()          # a detector's heads train nothing, but pass gradients
    network.cost_layers()
    for head in network.heads:
        reason = getattr(head, "gradient_refusal", lambda: None)()
        if reason:
            raise DarkbpError(reason, file=network.file, line=head.line, section=head.header)
    network.check_batch_statistics(batch)
    network.initialize(seed, np.float64)
    rng = np.random.default_rng(seed)
    _randomize_biases_and_scales(network, rng)
    ctx = Pass.training(Noise(seed))
    x, truth, input_seed = _draw_input(network, batch, rng, MARGIN_EPS * eps, ctx)

    network.zero_grads()
    # Layers may reuse their output buffers from one call to the next: keep copies.
    outputs = [y.copy() for y in network.run(x, ctx, keep=True)]
    loss = float(network.cost(truth).sum())
    dx = network.backward(truth, input_grad=True)
    analytic = {(i, name): grad.copy() for i, layer in enumerate(network.layers)
                for name, _, grad in layer.parameters()}
    state = _save_state(network)

    def loss_from(start: int) -> float:
        network.run(x, ctx, start=start, outputs=outputs[:start])
        return float(network.cost(truth).sum())

    floor = NOISE_FLOOR * max(1.0, abs(loss) / LOSS_SCALE)
    rows = []
    sample_rng = np.random.default_rng(seed + 1)
    for i, layer in enumerate(network.layers):
        for name, value, _ in layer.parameters():
            rows.append(_check_tensor(
                i, layer.type, name, value, analytic[(i, name)],
                lambda: loss_from(i), eps, tol, floor, max_elements, sample_rng))
    rows.append(_check_tensor(None, "input", "input", x, dx, lambda: loss_from(0), eps, tol,
                              floor, max_elements, sample_rng))
    _restore_state(network, state)
    return CheckReport(rows=rows, seed=seed, input_seed=input_seed, batch=batch, eps=eps,
                       tol=tol, loss=loss, floor=floor)


def _check_tensor(layer, layer_type, name, value, analytic, loss, eps, tol, floor,
                  max_elements, rng):
    flat = value.reshape(-1)                     # a view: perturbing it perturbs the tensor
    grads = analytic.reshape(-1)
    indices = _sample(grads, max_elements, rng)
    numeric = np.empty(indices.size)
    for k, index in enumerate(indices):
        original = flat[index]
        flat[index] = original + eps
        plus = loss()
        flat[index] = original - eps
        minus = loss()
        flat[index] = original
        numeric[k] = (plus - minus) / (2 * eps)
    a = grads[indices]
    abs_err = np.abs(a - numeric)
    rel_err = abs_err / np.maximum(np.maximum(np.abs(a), np.abs(numeric)), floor / tol)
    return CheckRow(layer=layer, layer_type=layer_type, tensor=name, size=int(flat.size),
                    checked=int(indices.size), max_abs=float(abs_err.max(initial=0.0)),
                    max_rel=float(rel_err.max(initial=0.0)),
                    passed=bool(np.all(rel_err <= tol)))


def _sample(grads: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """All indices of a small tensor; else half non-zero-gradient elements, half uniform."""
    if grads.size <= count:
        return np.arange(grads.size)
    nonzero = np.flatnonzero(grads)
    picked = rng.choice(nonzero, size=min(count // 2, nonzero.size), replace=False)
    rest = np.setdiff1d(np.arange(grads.size), picked, assume_unique=True)
    picked = np.concatenate([picked, rng.choice(rest, size=count - picked.size, replace=False)])
    return np.sort(picked)


def _randomize_biases_and_scales(network: Network, rng: np.random.Generator) -> None:
    for layer in network.layers:
        for name, value, _ in layer.parameters():
            if name == "biases":
                value[...] = rng.uniform(-0.2, 0.2, value.shape)
            elif name == "scales":
                value[...] = rng.uniform(0.5, 1.5, value.shape)
            elif name in layer.tied:
                value += rng.uniform(-0.2, 0.2, value.shape)


def _draw_input(network: Network, batch: int, rng: np.random.Generator, margin: float,
                ctx: Pass):
    """Random input in [0, 1) and a random truth, redrawn until away from kinks and ties.
    A classifier's truth is one-hot; a detector's is boxes (Truth.random) whose assignment
    to predictions the check holds fixed (the loss it defines, README "Detection")."""
    if batch < 1:
        raise DarkbpError(f"--batch must be at least 1, got {batch}")
    for _ in range(DRAWS):
        input_seed = int(rng.integers(2**31))
        draw = np.random.default_rng(input_seed)
        x = draw.random((batch,) + network.input_shape)
        truth = _draw_truth(network, batch, draw)
        if _margin(network, x, ctx) > margin:
            return x, truth, input_seed
    raise DarkbpError(f"could not draw an input whose pre-activations stay {margin:g} away from "
                      f"activation kinks and max-pool ties in {DRAWS} tries; try another --seed",
                      file=network.file)


def _draw_truth(network: Network, batch: int, draw: np.random.Generator):
    if network.heads:
        _, h, w = network.input_shape
        return Truth.random(draw, batch, network.heads[0].classes, w, h, fixed=True)
    groups = network.cost_layer().truth_groups()
    per_group = network.outputs // groups
    truth = np.zeros((batch, groups, per_group))
    picks = draw.integers(per_group, size=(batch, groups))
    np.put_along_axis(truth, picks[:, :, None], 1.0, axis=2)
    return truth.reshape(batch, -1)


def _margin(network: Network, x: np.ndarray, ctx: Pass) -> float:
    """Smallest distance of any layer's values to a point where its derivative jumps."""
    outputs = network.run(x, ctx, keep=True)
    return min((layer.margin([x if source == INPUT else outputs[source]
                              for source in layer.sources]) for layer in network.layers),
               default=np.inf)


def _save_state(network: Network):
    return [(layer, name, getattr(layer, name).copy()) for layer in network.layers
            for name in layer.state_names]


def _restore_state(network: Network, saved) -> None:
    for layer, name, value in saved:
        getattr(layer, name)[...] = value
