"""Darknet's SGD with momentum and weight decay (SPEC 5).

With B = batch (all subdivisions) and g the gradient of the loss summed over
the B images:

    v ← momentum·v − g − decay·B·w     (weights)
    v ← momentum·v − g                 (biases, batch-norm scales)
    w ← w + (lr/B)·v

This is update_convolutional_layer / update_connected_layer in pjreddie/darknet
src/, whose `*_updates` buffers hold −g plus momentum·(last v):

    axpy(-decay*batch, weights, weight_updates)
    axpy(learning_rate/batch, weight_updates, weights)
    scal(momentum, weight_updates)

The coefficients are rounded to the parameters' dtype as Darknet rounds them
to float (`learning_rate/batch`, `-decay*batch`), and every operation is an
in-place array op in that dtype, so float32 updates match Darknet's bit for bit.
The update runs in blocks of _BLOCK values, with one scratch block kept
between steps: the six passes over a block then stay in cache, and an update
allocates nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from darkbp.errors import DarkbpError
from darkbp.layers.base import Layer

_PREFIX = "sgd."
_BLOCK = 1 << 15  # values updated at a time: four arrays of 128 KB (float32) stay in L2


class SGD:
    """Momentum buffers for every parameter of `layers`; `step(lr)` applies one update."""

    def __init__(self, layers: Sequence[Layer], momentum: float, decay: float, batch: int):
        if batch <= 0:
            raise DarkbpError(f"batch must be > 0, got {batch}")
        self.layers = list(layers)
        self.momentum, self.decay, self.batch = momentum, decay, batch
        self.velocity = {_key(i, name): np.zeros_like(w)
                         for i, layer in enumerate(self.layers) if self.with_momentum(layer)
                         for name, w, _ in layer.parameters()}
        self._scratch: dict[np.dtype, np.ndarray] = {}

    def with_momentum(self, layer: Layer) -> bool:
        """Whether `layer` takes this rule (darkbp.adam.Adam keeps it for some layers only)."""
        return True

    def step(self, lr: float) -> None:
        """Update every parameter from its accumulated gradient, then zero the gradients."""
        for i, layer in enumerate(self.layers):
            self.update(i, layer, lr)
            layer.zero_grads()

    def update(self, index: int, layer: Layer, lr: float) -> None:
        """The update of one layer's parameters, the `index`-th layer."""
        for name, w, g in layer.parameters():
            f = w.dtype.type  # coefficients rounded as Darknet's float arithmetic rounds them
            decay = f(-self.decay) * f(self.batch) if name == "weights" else None
            v = self.velocity[_key(index, name)]
            tmp = self._scratch.get(w.dtype)
            if tmp is None:
                tmp = self._scratch[w.dtype] = np.empty(_BLOCK, w.dtype)
            w, v, g = _flat(w), _flat(v), _flat(g)
            # Block by block, so that the six passes over a block run in cache.
            for start in range(0, w.size, _BLOCK):
                block = slice(start, start + _BLOCK)
                _update(w[block], v[block], g[block], tmp[:min(_BLOCK, w.size - start)],
                        f(self.momentum), decay, f(lr) / f(self.batch))

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the momentum buffers, keyed 'sgd.<layer index>.<parameter>'."""
        return {key: v.copy() for key, v in self.velocity.items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore buffers saved by `state_dict` (keys without the 'sgd.' prefix are ignored)."""
        load_buffers(self.velocity, state, _PREFIX, "momentum buffers")


def _update(w, v, g, tmp, momentum, decay, rate) -> None:
    """v ← momentum·v − g (+ decay·w); w ← w + rate·v, in place, one rounding per operation."""
    np.multiply(v, momentum, out=v)
    np.subtract(v, g, out=v)
    if decay is not None:  # Darknet decays only the weights
        np.multiply(w, decay, out=tmp)
        np.add(v, tmp, out=v)
    np.multiply(v, rate, out=tmp)
    np.add(w, tmp, out=w)


def _flat(a: np.ndarray) -> np.ndarray:
    """A 1-D view of a contiguous array (an error, never a silent copy, otherwise)."""
    flat = a.view()
    flat.shape = (a.size,)
    return flat


def _key(index: int, name: str) -> str:
    return f"{_PREFIX}{index}.{name}"


def load_buffers(buffers: dict[str, np.ndarray], state: Mapping[str, np.ndarray],
                 prefix: str, what: str) -> None:
    """Copy `state[key]` into each buffer of `buffers` (keys starting with `prefix`).

    Keys and shapes must match exactly, or nothing is copied: a state saved from
    another network is a DarkbpError. Shared by SGD, Adam and EMA.
    """
    saved = {key for key in state.keys() if key.startswith(prefix)}
    missing, extra = sorted(buffers.keys() - saved), sorted(saved - buffers.keys())
    if missing or extra:
        raise DarkbpError(f"saved {what} do not match the network: "
                          f"missing {missing or 'none'}, unexpected {extra or 'none'}")
    for key, buf in buffers.items():
        value = np.asarray(state[key])
        if value.shape != buf.shape:
            raise DarkbpError(f"saved {what} do not match the network: {key} has shape "
                              f"{value.shape}, the network needs {buf.shape}")
    for key, buf in buffers.items():
        np.copyto(buf, state[key], casting="same_kind")
