"""[avgpool]: Darknet's global average pooling, each channel's mean over its h·w pixels."""

from __future__ import annotations

import numpy as np

from darkbp.layers.base import Layer, register
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.layout import as_nchw, layout_of, layout_shape


@register
class AvgpoolLayer(Layer):
    """x: (N, C, H, W) -> (N, C, 1, 1), y = mean of x over (H, W); no options.

    Its output is a 1 x 1 x C image, as in Darknet (a [convolutional] may follow).
    """

    sections = ("avgpool", "avg")

    @classmethod
    def build(cls, s, inputs):
        c, _, _ = cls.image_input(s, inputs[0])     # Darknet: "must output image"
        return cls(inputs[0].shape, (c, 1, 1))

    def darknet_line(self):
        c, h, w = self.in_shape
        return "avg                     %4d x%4d x%4d   ->  %4d\n" % (w, h, c, c)

    def alexeyab_line(self):
        c, h, w = self.in_shape
        return "avg                          %4d x%4d x%4d ->   %4d\n" % (w, h, c, c)

    def summary_cells(self):
        return "avg", "", ""

    @kernel_buffers
    def forward(self, x, ctx):
        self._layout = layout_of(x)    # backward hands dx on in the layout x came in
        return x.mean(axis=(2, 3), keepdims=True)

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        """dy: (N, C, 1, 1) -> dx: (N, C, H, W), every pixel dy / (H·W)."""
        c, h, w = self.in_shape
        dx = as_nchw(np.empty(layout_shape(self._layout, dy.shape[0], c, h, w), dy.dtype),
                     self._layout)
        dx[...] = dy.reshape(dy.shape[0], c, 1, 1) / dy.dtype.type(h * w)
        return dx

    def to_onnx(self, graph, inputs):
        return graph.node("GlobalAveragePool", inputs)
