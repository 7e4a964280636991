"""Finite-difference check of every gradient the network computes (SPEC section 8).

In float64, the analytic gradient of the summed cross-entropy L (from one
forward and one backward pass) is compared, element by element, with the
central difference (L(θ+ε) − L(θ−ε)) / 2ε, for every parameter tensor of
every layer and for the input. Small tensors are checked in full; large ones
on a seeded random sample whose size is reported.

The relative error of an element is |a − n| / max(|a|, |n|, NOISE_FLOOR / tol):
the floor in the denominator is what float64 rounding of L leaves in a central
difference (about 1e-9 here), scaled so that pure noise never fails and a real
error of relative size tol in a gradient as small as NOISE_FLOOR / tol still
does. An element fails when its relative error exceeds tol. A wrong sign, a
missing term or a transposed kernel gives relative errors near 1.

Large tensors are sampled half from the elements whose analytic gradient is
not zero (so that dead relu units do not make the sample trivial) and half
uniformly.

The network is initialised as for training, then its biases and batch-norm
scales are drawn at random too (zero biases would put every all-zero window
exactly on relu's kink). Inputs are drawn so that no pre-activation sits within
`MARGIN_EPS`·ε of a kink of its activation (relu at 0, hardtan at ±1, ...) and
no max-pooling window has two values that close to its maximum: a central
difference then never straddles a kink, and a correct network passes for every
seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from darkbp.errors import DarkbpError
from darkbp.network import Network

MARGIN_EPS = 10       # distance kept from activation kinks and max-pool ties, in units of eps
NOISE_FLOOR = 1e-8    # absolute errors below this are float64 rounding in L, not gradients
DRAWS = 200           # inputs tried before giving up on finding one away from kinks

# Points where an activation's derivative jumps (gradcheck must stay away from them).
_KINKS = {
    "relu": (0.0,), "leaky": (0.0,), "ramp": (0.0,), "relie": (0.0,), "selu": (0.0,),
    "hardtan": (-1.0, 1.0), "lhtan": (0.0, 1.0), "plse": (-4.0, 4.0),
}


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

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)


def gradcheck(network: Network, batch: int = 2, eps: float = 1e-6, tol: float = 1e-6,
              seed: int = 0, max_elements: int = 64) -> CheckReport:
    """Check every gradient of `network` (re-initialised in float64 with `seed`)."""
    network.check_batch_statistics(batch)
    network.initialize(seed, np.float64)
    rng = np.random.default_rng(seed)
    _randomize_biases_and_scales(network, rng)
    x, truth, input_seed = _draw_input(network, batch, rng, MARGIN_EPS * eps)

    network.zero_grads()
    layer_inputs = _forward_recording(network, x)
    loss = float(network.cost(truth).sum())
    dx = network.backward(truth, input_grad=True)
    analytic = {(i, name): grad.copy() for i, layer in enumerate(network.layers)
                for name, _, grad in layer.parameters()}
    state = _save_state(network)

    def loss_from(start: int, layer_input: np.ndarray) -> float:
        y = layer_input
        for layer in network.layers[start:]:
            y = layer.forward(y, True)
        return float(network.cost(truth).sum())

    rows = []
    sample_rng = np.random.default_rng(seed + 1)
    for i, layer in enumerate(network.layers):
        for name, value, _ in layer.parameters():
            rows.append(_check_tensor(
                i, layer.type, name, value, analytic[(i, name)],
                lambda: loss_from(i, layer_inputs[i]), eps, tol, max_elements, sample_rng))
    rows.append(_check_tensor(None, "input", "input", x, dx, lambda: loss_from(0, x), eps, tol,
                              max_elements, sample_rng))
    _restore_state(network, state)
    return CheckReport(rows=rows, seed=seed, input_seed=input_seed, batch=batch, eps=eps,
                       tol=tol, loss=loss)


def _check_tensor(layer, layer_type, name, value, analytic, loss, eps, tol, max_elements, rng):
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
    rel_err = abs_err / np.maximum(np.maximum(np.abs(a), np.abs(numeric)), NOISE_FLOOR / tol)
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


def _forward_recording(network: Network, x: np.ndarray) -> list[np.ndarray]:
    """Forward in training mode, keeping each layer's input (so a check can restart there)."""
    inputs = []
    y = x
    for layer in network.layers:
        inputs.append(y.copy())   # layers may reuse their output buffers
        y = layer.forward(y, True)
    return inputs


def _randomize_biases_and_scales(network: Network, rng: np.random.Generator) -> None:
    for layer in network.layers:
        for name, value, _ in layer.parameters():
            if name == "biases":
                value[...] = rng.uniform(-0.2, 0.2, value.shape)
            elif name == "scales":
                value[...] = rng.uniform(0.5, 1.5, value.shape)


def _draw_input(network: Network, batch: int, rng: np.random.Generator, margin: float):
    """Random input in [0, 1) and one-hot truth, redrawn until away from kinks and ties."""
    if batch < 1:
        raise DarkbpError(f"--batch must be at least 1, got {batch}")
    last = network.layers[-1]
    groups = getattr(last, "groups", 1)
    per_group = network.outputs // groups
    for _ in range(DRAWS):
        input_seed = int(rng.integers(2**31))
        draw = np.random.default_rng(input_seed)
        x = draw.random((batch,) + network.input_shape)
        truth = np.zeros((batch, groups, per_group))
        picks = draw.integers(per_group, size=(batch, groups))
        np.put_along_axis(truth, picks[:, :, None], 1.0, axis=2)
        if _margin(network, x) > margin:
            return x, truth.reshape(batch, -1), input_seed
    raise DarkbpError(f"could not draw an input whose pre-activations stay {margin:g} away from "
                      f"activation kinks and max-pool ties in {DRAWS} tries; try another --seed",
                      file=network.file)


def _margin(network: Network, x: np.ndarray) -> float:
    """Smallest distance of any pre-activation to a kink, or of any pool maximum to a runner-up."""
    margin = np.inf
    y = x
    for layer in network.layers:
        if layer.type == "maxpool":
            margin = min(margin, _pool_gap(y, layer.size, layer.stride, layer.padding))
        y = layer.forward(y, True)
        kinks = _KINKS.get(getattr(layer, "activation", ""), ())
        for kink in kinks:
            margin = min(margin, float(np.abs(layer._z - kink).min()))
        if getattr(layer, "activation", "") == "stair":    # steps at every integer
            margin = min(margin, float(np.abs(layer._z - np.round(layer._z)).min()))
    return margin


def _pool_gap(x: np.ndarray, size: int, stride: int, padding: int) -> float:
    """Smallest gap between the largest and second largest value of any max-pool window."""
    n, c, h, w = x.shape
    out_h = (h + padding - size) // stride + 1
    out_w = (w + padding - size) // stride + 1
    before = padding // 2
    padded = np.full((n, c, before + h + size + stride * out_h,
                      before + w + size + stride * out_w), -np.inf)
    padded[:, :, before:before + h, before:before + w] = x
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(2, 3))
    windows = windows[:, :, :stride * out_h:stride, :stride * out_w:stride]
    values = windows.reshape(n, c, out_h, out_w, size * size)
    if values.shape[-1] < 2:
        return np.inf
    top2 = -np.partition(-values, 1, axis=-1)[..., :2]
    # A tie of exact zeros comes from a flat activation region (relu): those values cannot
    # move under a perturbation (the kink margin keeps them flat), so the tie is harmless.
    live = np.isfinite(top2[..., 1]) & ~((top2[..., 0] == 0) & (top2[..., 1] == 0))
    gaps = top2[..., 0][live] - top2[..., 1][live]
    return float(gaps.min()) if gaps.size else np.inf


def _save_state(network: Network):
    return [(layer, name, getattr(layer, name).copy()) for layer in network.layers
            for name in layer.state_names]


def _restore_state(network: Network, saved) -> None:
    for layer, name, value in saved:
        getattr(layer, name)[...] = value
