"""What every layer has: shapes, parameters beside their gradients, forward/backward.

A layer's parameters are attributes named after Darknet (`biases`, `scales`,
`weights`); each has its gradient in `<singular>_grads` (`bias_grads`,
`scale_grads`, `weight_grads`). `param_names` lists the parameters in the order
Darknet stores them in `.weights` files, so optimisers, EMA, gradcheck and the
weights reader walk them generically. Batch-norm rolling statistics are state,
not parameters: they are listed in `state_names`.
"""

from __future__ import annotations

import math

import numpy as np


def grad_name(param: str) -> str:
    """'biases' -> 'bias_grads', 'weights' -> 'weight_grads', 'scales' -> 'scale_grads'."""
    singular = param[:-2] if param.endswith("ses") else param[:-1]
    return singular + "_grads"


class Layer:
    """Base class. Shapes are per image, (channels, height, width); a flat layer is (n, 1, 1).

    forward(x, train) -> y caches what backward needs; backward(dy) -> dx *adds*
    this batch's gradients into the `*_grads` arrays (Darknet accumulates over
    subdivisions; `zero_grads` clears them after an update).  backward may
    overwrite dy (a network hands each layer the dx it got from the next one and
    keeps nothing of it), and x must stay unchanged until backward.
    Arrays may be (N, C, H, W) views stored in any layout (ops/layout.py).
    """

    type: str = ""
    param_names: tuple[str, ...] = ()
    state_names: tuple[str, ...] = ()

    def __init__(self, in_shape: tuple[int, int, int], out_shape: tuple[int, int, int]):
        self.in_shape = tuple(int(v) for v in in_shape)
        self.out_shape = tuple(int(v) for v in out_shape)

    @property
    def inputs(self) -> int:
        c, h, w = self.in_shape
        return c * h * w

    @property
    def outputs(self) -> int:
        c, h, w = self.out_shape
        return c * h * w

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of each parameter and state array, known before anything is allocated."""
        return {}

    def parameter_count(self) -> int:
        shapes = self.param_shapes()
        return sum(math.prod(shapes[name]) for name in self.param_names)

    def init_params(self, rng: np.random.Generator, dtype) -> None:
        """Allocate parameters (Darknet's initialisation), their gradients and state."""
        for name, shape in self.param_shapes().items():
            setattr(self, name, np.zeros(shape, dtype))
        self._init_values(rng)
        self.astype(dtype)

    def _init_values(self, rng: np.random.Generator) -> None:
        """Fill freshly zeroed arrays with their initial values (override where not zero)."""

    def parameters(self):
        """Yield (name, array, gradient array) for each parameter, in `.weights` order."""
        for name in self.param_names:
            yield name, getattr(self, name), getattr(self, grad_name(name))

    def zero_grads(self) -> None:
        for _, _, grad in self.parameters():
            grad.fill(0)

    def astype(self, dtype) -> None:
        """Convert parameters and state to `dtype`; gradients start again at zero."""
        for name in self.param_names:
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))
            setattr(self, grad_name(name), np.zeros_like(getattr(self, name)))
        for name in self.state_names:
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError
