"""[connected]: y = activation(W·x + b), W (outputs, inputs), optional batch norm."""

from __future__ import annotations

import math

import numpy as np

from darkbp.layers.base import Layer
from darkbp.ops.activations import ACTIVATIONS
from darkbp.ops.batchnorm import batchnorm_backward, batchnorm_forward


class ConnectedLayer(Layer):
    """x: (N, ...) flattened in (C, H, W) order to (N, inputs) -> (N, outputs).

    The output shape is (outputs, 1, 1), as Darknet's connected layer.
    """

    type = "connected"

    def __init__(self, in_shape, output: int, activation: str, batch_normalize: bool):
        super().__init__(in_shape, (output, 1, 1))
        self.activation = activation
        self.batch_normalize = bool(batch_normalize)
        if self.batch_normalize:
            self.param_names = ("biases", "weights", "scales")
            self.state_names = ("rolling_mean", "rolling_variance")
        else:
            self.param_names = ("biases", "weights")
        self.need_input_grad = True

    @property
    def bflops(self) -> float:
        return 2.0 * self.inputs * self.outputs / 1e9

    def param_shapes(self):
        shapes = {"biases": (self.outputs,), "weights": (self.outputs, self.inputs)}
        if self.batch_normalize:
            shapes.update(scales=(self.outputs,), rolling_mean=(self.outputs,),
                          rolling_variance=(self.outputs,))
        return shapes

    def _init_values(self, rng):
        scale = math.sqrt(2.0 / self.inputs)
        self.weights[...] = rng.uniform(-1.0, 1.0, self.weights.shape) * scale
        if self.batch_normalize:
            self.scales.fill(1)

    def forward(self, x, train):
        n = x.shape[0]
        self._x = x.reshape(n, -1)
        z = self._x @ self.weights.T                       # (N, inputs) @ (inputs, outputs)
        if self.batch_normalize:
            normed, self._bn_cache = batchnorm_forward(
                z[:, :, None], self.scales, self.rolling_mean, self.rolling_variance, train)
            z = normed[:, :, 0]
        z += self.biases
        self._z = z
        self._y = ACTIVATIONS[self.activation].forward(z)
        return self._y.reshape(n, self.outputs, 1, 1)

    def backward(self, dy):
        n = dy.shape[0]
        dz = ACTIVATIONS[self.activation].backward(self._z, self._y, dy.reshape(n, -1))
        self.bias_grads += dz.sum(axis=0)
        if self.batch_normalize:
            dnorm, dscales = batchnorm_backward(dz[:, :, None], self._bn_cache)
            self.scale_grads += dscales
            dz = dnorm[:, :, 0]
        self.weight_grads += dz.T @ self._x                # (outputs, N) @ (N, inputs)
        if not self.need_input_grad:
            return None
        return (dz @ self.weights).reshape((n,) + self.in_shape)
