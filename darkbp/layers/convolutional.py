"""[convolutional]: grouped convolution (im2col + GEMM), optional batch norm, bias, activation."""

from __future__ import annotations

import math

from darkbp.layers.affine import AffineLayer
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.conv import conv_backward, conv_forward
from darkbp.ops.layout import as_nchw, ordered


class ConvolutionalLayer(AffineLayer):
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
        super().__init__(in_shape, (filters, out_h, out_w), activation, batch_normalize,
                         ("biases", "scales", "weights"))
        self.filters, self.size, self.stride = filters, size, stride
        self.padding, self.groups = padding, groups

    @property
    def bflops(self) -> float:
        c = self.in_shape[0]
        _, out_h, out_w = self.out_shape
        return 2.0 * self.filters * self.size * self.size * (c // self.groups) * out_h * out_w / 1e9

    def param_shapes(self):
        c = self.in_shape[0]
        return {"weights": (self.filters, c // self.groups, self.size, self.size),
                **self._channel_shapes(self.filters)}

    def _init_values(self, rng):
        fan_in = self.size * self.size * (self.in_shape[0] // self.groups)
        self.weights[...] = rng.standard_normal(self.weights.shape) * math.sqrt(2.0 / fan_in)
        self._init_scales()

    @kernel_buffers
    def forward(self, x, train):
        # The output, and dx, stay in the layout the convolution runs in (ops/layout.py).
        # Without batch norm the biases come next: the convolution adds them in its GEMM.
        biases = None if self.batch_normalize else self.biases
        if not hasattr(self, "_buffers"):
            self._buffers = {}           # the columns' memory, reused from call to call
        z, self._conv_cache = conv_forward(x, self.weights, self.stride, self.padding,
                                           self.groups, keep_layout=True, biases=biases,
                                           buffers=self._buffers)
        zl = ordered(z, self._conv_cache.layout)
        y = self._tail_forward(self._channels_view(zl), train, add_bias=biases is None)
        return as_nchw(y.reshape(zl.shape), self._conv_cache.layout)

    @kernel_buffers
    def backward(self, dy):
        layout = self._conv_cache.layout
        dyl = ordered(dy, layout)
        biased = self._conv_cache.biased
        dz = self._tail_backward(self._channels_view(dyl), bias_grad=not biased).reshape(dyl.shape)
        dx, dweights, *dbiases = conv_backward(as_nchw(dz, layout), self._conv_cache,
                                               self.weights, need_dx=self.need_input_grad)
        self.weight_grads += dweights
        if biased:
            self.bias_grads += dbiases[0]
        return dx

    def _channels_view(self, a):
        """A batch in the conv's layout as the tail's (A, F, B): (N, F, OH·OW) or (1, F, OH·OW·N)."""
        if self._conv_cache.layout == "NCHW":
            return a.reshape(a.shape[0], self.filters, -1)
        return a.reshape(1, self.filters, -1)
