"""Exponential moving average of the weights, with bias correction (SPEC 5, course notes §2).

After every update, for every parameter and batch-norm rolling statistic w:

    e ← decay·e + (1 − decay)·w,   e starts at 0,   t ← t + 1

and the averaged weights are e / (1 − decay^t): the correction undoes the pull
towards the zero start, so a constant w averages to exactly w from t = 1.

The accumulators are float64 whatever the layers' dtype: rounded back to float32
the corrected average of a constant is then the constant bit for bit, and long
averages (decay 0.9999) do not drown the small (1 − decay)·w terms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import numpy as np

from darkbp.errors import DarkbpError
from darkbp.layers.base import Layer
from darkbp.sgd import load_buffers

_PREFIX = "ema."
_T_KEY = "ema.t"


class EMA:
    """Moving averages of `layers`' parameters and state; call `update()` after each step."""

    def __init__(self, layers: Sequence[Layer], decay: float):
        if not 0.0 <= decay < 1.0:
            raise DarkbpError(f"EMA decay must be in [0, 1), got {decay}")
        self.layers = list(layers)
        self.decay = float(decay)
        self.t = 0
        self.accumulators = {_key(i, name): np.zeros(getattr(layer, name).shape, np.float64)
                             for i, layer, name in self._names()}

    def _names(self):
        for i, layer in enumerate(self.layers):
            for name in (*layer.param_names, *layer.state_names):
                yield i, layer, name

    def update(self) -> None:
        d = self.decay
        for i, layer, name in self._names():
            e = self.accumulators[_key(i, name)]
            e *= d
            # dtype=float64: a float32 w must not round the product to float32 first
            e += np.multiply(getattr(layer, name), 1.0 - d, dtype=np.float64)
        self.t += 1

    def averaged(self) -> list[dict[str, np.ndarray]]:
        """Per layer, name -> bias-corrected average in the layer's dtype.

        Before the first update there is nothing averaged: the current values are returned.
        """
        out = [{} for _ in self.layers]
        correction = 1.0 - self.decay ** self.t
        for i, layer, name in self._names():
            w = getattr(layer, name)
            if self.t == 0:
                out[i][name] = w.copy()
            else:
                out[i][name] = (self.accumulators[_key(i, name)] / correction).astype(w.dtype)
        return out

    @contextmanager
    def swapped_in(self):
        """Put the averaged values into the layers (in place); the raw ones come back on exit."""
        averaged = self.averaged()
        raw = [{name: getattr(layer, name).copy() for name in values}
               for layer, values in zip(self.layers, averaged)]
        try:
            for layer, values in zip(self.layers, averaged):
                for name, value in values.items():
                    np.copyto(getattr(layer, name), value)
            yield self
        finally:
            for layer, values in zip(self.layers, raw):
                for name, value in values.items():
                    np.copyto(getattr(layer, name), value)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the accumulators ('ema.<layer index>.<name>') and 'ema.t'."""
        state = {key: e.copy() for key, e in self.accumulators.items()}
        state[_T_KEY] = np.array(self.t, dtype=np.int64)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what `state_dict` saved (keys without the 'ema.' prefix are ignored)."""
        if _T_KEY not in state:
            raise DarkbpError("saved moving averages do not match the network: missing ema.t")
        buffers = {key: value for key, value in state.items() if key != _T_KEY}
        load_buffers(self.accumulators, buffers, _PREFIX, "moving averages")
        self.t = int(state[_T_KEY])


def _key(index: int, name: str) -> str:
    return f"{_PREFIX}{index}.{name}"
