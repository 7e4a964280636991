"""[convolutional]: grouped convolution (im2col + GEMM), optional batch norm, bias, activation."""

from __future__ import annotations

import math

import numpy as np

from darkbp.layers.base import Layer
from darkbp.ops.activations import ACTIVATIONS
from darkbp.ops.batchnorm import batchnorm_backward, batchnorm_forward
from darkbp.ops.conv import conv_backward, conv_forward


class ConvolutionalLayer(Layer):
    """x: (N, C, H, W) -> (N, filters, out_h, out_w).

    weights: (filters, C/groups, size, size), Darknet's layout; with batch_normalize
    the order is conv -> normalise -> scale -> + bias -> activation, as in Darknet.
    """

    type = "convolutional"

    def __init__(self, in_shape, filters: int, size: int, stride: int, padding: int,
                 groups: int, activation: str, batch_normalize: bool):
        c, h, w = in_shape
        out_h = (h + 2 * padding - size) // stride + 1
        out_w = (w + 2 * padding - size) // stride + 1
        super().__init__(in_shape, (filters, out_h, out_w))
        self.filters, self.size, self.stride = filters, size, stride
        self.padding, self.groups = padding, groups
        self.activation = activation
        self.batch_normalize = bool(batch_normalize)
        if self.batch_normalize:
            self.param_names = ("biases", "scales", "weights")
            self.state_names = ("rolling_mean", "rolling_variance")
        else:
            self.param_names = ("biases", "weights")
        self.need_input_grad = True

    @property
    def bflops(self) -> float:
        c = self.in_shape[0]
        _, out_h, out_w = self.out_shape
        return 2.0 * self.filters * self.size * self.size * (c // self.groups) * out_h * out_w / 1e9

    def param_shapes(self):
        c = self.in_shape[0]
        shapes = {"biases": (self.filters,),
                  "weights": (self.filters, c // self.groups, self.size, self.size)}
        if self.batch_normalize:
            shapes.update(scales=(self.filters,), rolling_mean=(self.filters,),
                          rolling_variance=(self.filters,))
        return shapes

    def _init_values(self, rng):
        fan_in = self.size * self.size * (self.in_shape[0] // self.groups)
        self.weights[...] = rng.standard_normal(self.weights.shape) * math.sqrt(2.0 / fan_in)
        if self.batch_normalize:
            self.scales.fill(1)

    def forward(self, x, train):
        n = x.shape[0]
        z, self._conv_cache = conv_forward(x, self.weights, self.stride, self.padding, self.groups)
        if self.batch_normalize:
            normed, self._bn_cache = batchnorm_forward(
                z.reshape(n, self.filters, -1), self.scales, self.rolling_mean,
                self.rolling_variance, train)
            z = normed.reshape(z.shape)
        z += self.biases[:, None, None]
        self._z = z
        self._y = ACTIVATIONS[self.activation].forward(z)
        return self._y

    def backward(self, dy):
        n = dy.shape[0]
        dz = ACTIVATIONS[self.activation].backward(self._z, self._y, dy)
        self.bias_grads += dz.sum(axis=(0, 2, 3))
        if self.batch_normalize:
            dnorm, dscales = batchnorm_backward(dz.reshape(n, self.filters, -1), self._bn_cache)
            self.scale_grads += dscales
            dz = dnorm.reshape(dz.shape)
        dx, dweights = conv_backward(dz, self._conv_cache, self.weights,
                                     need_dx=self.need_input_grad)
        self.weight_grads += dweights
        return dx
