"""[connected]: y = activation(W·x + b), W (outputs, inputs), optional batch norm."""

from __future__ import annotations

import math

from darkbp.layers.affine import AffineLayer


class ConnectedLayer(AffineLayer):
    """x: (N, ...) flattened in (C, H, W) order to (N, inputs) -> (N, outputs, 1, 1).

    The output shape is (outputs, 1, 1), as Darknet's connected layer.
    """

    type = "connected"

    def __init__(self, in_shape, output: int, activation: str, batch_normalize: bool):
        super().__init__(in_shape, (output, 1, 1), activation, batch_normalize,
                         ("biases", "weights", "scales"))

    @property
    def bflops(self) -> float:
        return 2.0 * self.inputs * self.outputs / 1e9

    def param_shapes(self):
        return {"weights": (self.outputs, self.inputs), **self._channel_shapes(self.outputs)}

    def _init_values(self, rng):
        scale = math.sqrt(2.0 / self.inputs)
        self.weights[...] = rng.uniform(-1.0, 1.0, self.weights.shape) * scale
        self._init_scales()

    def forward(self, x, train):
        n = x.shape[0]
        self._x = x.reshape(n, -1)
        z = self._x @ self.weights.T                       # (N, inputs) @ (inputs, outputs)
        return self._tail_forward(z[:, :, None], train).reshape(n, self.outputs, 1, 1)

    def backward(self, dy):
        n = dy.shape[0]
        dz = self._tail_backward(dy.reshape(n, self.outputs, 1))[:, :, 0]
        self.weight_grads += dz.T @ self._x                # (outputs, N) @ (N, inputs)
        if not self.need_input_grad:
            return None
        return (dz @ self.weights).reshape((n,) + self.in_shape)
