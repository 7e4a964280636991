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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from darkbp.errors import DarkbpError
from darkbp.layers.base import Layer

_PREFIX = "sgd."


class SGD:
    """Momentum buffers for every parameter of `layers`; `step(lr)` applies one update."""

    def __init__(self, layers: Sequence[Layer], momentum: float, decay: float, batch: int):
        if batch <= 0:
            raise DarkbpError(f"batch must be > 0, got {batch}")
        self.layers = list(layers)
        self.momentum, self.decay, self.batch = momentum, decay, batch
        self.velocity = {_key(i, name): np.zeros_like(w)
                         for i, layer in enumerate(self.layers)
                         for name, w, _ in layer.parameters()}

    def step(self, lr: float) -> None:
        """Update every parameter from its accumulated gradient, then zero the gradients."""
        for i, layer in enumerate(self.layers):
            for name, w, g in layer.parameters():
                v = self.velocity[_key(i, name)]
                f = w.dtype.type  # coefficients rounded as Darknet's float arithmetic rounds them
                v *= f(self.momentum)
                v -= g
                if name == "weights":  # Darknet decays only the weights
                    v += (f(-self.decay) * f(self.batch)) * w
                w += (f(lr) / f(self.batch)) * v
            layer.zero_grads()

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the momentum buffers, keyed 'sgd.<layer index>.<parameter>'."""
        return {key: v.copy() for key, v in self.velocity.items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore buffers saved by `state_dict` (keys without the 'sgd.' prefix are ignored)."""
        load_buffers(self.velocity, state, _PREFIX, "momentum buffers")


def _key(index: int, name: str) -> str:
    return f"{_PREFIX}{index}.{name}"


def load_buffers(buffers: dict[str, np.ndarray], state: Mapping[str, np.ndarray],
                 prefix: str, what: str) -> None:
    """Copy `state[key]` into each buffer of `buffers` (keys starting with `prefix`).

    Keys and shapes must match exactly, or nothing is copied: a state saved from
    another network is a DarkbpError. Shared by SGD and EMA.
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
