"""[maxpool]: Darknet's max pooling (window starts at -padding/2, first maximum wins).

AlexeyAB's `maxpool_depth=1` pools across channels instead: per pixel, output channel g
is the max of input channels g, g + out_channels, g + 2·out_channels, ... (its
forward_maxpool_layer; `out_channels` default 1); size and stride are ignored (and
printed), the width and height kept.
"""

from __future__ import annotations

import math

import numpy as np

from darkbp.layers.base import Layer, c_float, register
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.maxpool import (maxpool_backward, maxpool_depth_backward, maxpool_depth_forward,
                                maxpool_forward)


@register
class MaxpoolLayer(Layer):
    """x: (N, C, H, W) -> (N, C, (H + padding - size)/stride + 1, (W + padding - size)/stride + 1);
    with maxpool_depth (N, out_channels, H, W)."""

    sections = ("maxpool", "max")
    options = frozenset({"size", "stride", "padding", "maxpool_depth", "out_channels"})
    backward_cache = ("_cache",)

    def __init__(self, in_shape, size: int, stride: int, padding: int, out_channels: int = 0):
        """out_channels > 0: maxpool_depth's, pooling across channels."""
        c, h, w = in_shape
        if out_channels:
            out_shape = (out_channels, h, w)
        else:
            out_shape = (c, (h + padding - size) // stride + 1, (w + padding - size) // stride + 1)
        super().__init__(in_shape, out_shape)
        self.size, self.stride, self.padding = size, stride, padding
        self.out_channels = out_channels

    @classmethod
    def build(cls, s, inputs):
        _, h, w = cls.image_input(s, inputs[0])
        stride = s.get_int("stride", 1, minimum=1)
        size = s.get_int("size", stride, minimum=1)
        padding = s.get_int("padding", size - 1, minimum=0)
        if s.get_int("maxpool_depth", 0, minimum=0):
            c = inputs[0].shape[0]
            out_channels = s.get_int("out_channels", 1, minimum=1)
            if out_channels > c:
                raise s.error(f"maxpool_depth with out_channels={out_channels} needs as many "
                              f"input channels, the input has {c}", s.line_of("out_channels"))
            return cls(inputs[0].shape, size=size, stride=stride, padding=padding,
                       out_channels=out_channels)
        if h + padding < size or w + padding < size:
            raise s.error(f"a {size}x{size} window with padding {padding} does not fit the "
                          f"{w} x {h} input: the output would have no pixels")
        return cls(inputs[0].shape, size=size, stride=stride, padding=padding)

    def darknet_line(self):
        # pjreddie has no maxpool_depth: its max line, with this layer's shapes.
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        return ("max          %d x %d / %d  %4d x%4d x%4d   ->  %4d x%4d x%4d\n"
                % (self.size, self.size, self.stride, w, h, c, ow, oh, oc))

    def alexeyab_line(self):
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        kind = "max-depth        " if self.out_channels else "max              "
        return (kind + " %2dx%2d/%2d   %4d x%4d x%4d -> %4d x%4d x%4d %5.3f BF\n"
                % (self.size, self.size, self.stride, w, h, c, ow, oh, oc,
                   c_float(self.alexeyab_bflops)))

    @property
    def alexeyab_bflops(self) -> float:
        """AlexeyAB counts one operation per window value: size²·C·out_h·out_w / 1e9."""
        c = self.in_shape[0]
        _, out_h, out_w = self.out_shape
        return self.size * self.size * c * out_h * out_w / 1e9

    def describe(self):
        if self.out_channels:
            return {"maxpool_depth": 1, "out_channels": self.out_channels}
        return {"size": self.size, "stride": self.stride, "padding": self.padding}

    def summary_cells(self):
        if self.out_channels:
            return "max-depth", str(self.out_channels), "across channels"
        return "max", "", f"{self.size} x {self.size} / {self.stride}"

    @kernel_buffers
    def forward(self, x, ctx):
        if self.out_channels:
            y, self._cache = maxpool_depth_forward(x, self.out_channels, backward=ctx.train)
            return y
        y, self._cache = maxpool_forward(x, self.size, self.stride, self.padding,
                                         backward=ctx.train)
        return y

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        if self.out_channels:
            return maxpool_depth_backward(dy, self._cache)
        return maxpool_backward(dy, self._cache)

    def margin(self, xs):
        """The smallest gap between the largest and second largest value of any window."""
        if self.out_channels:
            return self._depth_margin(xs[0])
        x = xs[0]
        n, c, h, w = x.shape
        _, out_h, out_w = self.out_shape
        size, stride, before = self.size, self.stride, self.padding // 2
        padded = np.full((n, c, before + h + size + stride * out_h,
                          before + w + size + stride * out_w), -np.inf)
        padded[:, :, before:before + h, before:before + w] = x
        windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(2, 3))
        windows = windows[:, :, :stride * out_h:stride, :stride * out_w:stride]
        values = windows.reshape(n, c, out_h, out_w, size * size)
        if values.shape[-1] < 2:
            return math.inf
        top2 = -np.partition(-values, 1, axis=-1)[..., :2]
        # A tie of exact zeros comes from a flat activation region (relu): those values cannot
        # move under a perturbation (the kink margin keeps them flat), so the tie is harmless.
        live = np.isfinite(top2[..., 1]) & ~((top2[..., 0] == 0) & (top2[..., 1] == 0))
        gaps = top2[..., 0][live] - top2[..., 1][live]
        return float(gaps.min()) if gaps.size else math.inf

    def _depth_margin(self, x):
        """maxpool_depth's: the smallest gap between a pixel's two largest in a group."""
        n, c, h, w = x.shape
        groups = -(-c // self.out_channels)
        if groups < 2:
            return math.inf
        padded = np.full((n, groups * self.out_channels, h, w), -np.inf)
        padded[:, :c] = x
        values = padded.reshape(n, groups, self.out_channels, h, w)
        top2 = -np.partition(-values, 1, axis=1)[:, :2]
        live = np.isfinite(top2[:, 1]) & ~((top2[:, 0] == 0) & (top2[:, 1] == 0))
        gaps = top2[:, 0][live] - top2[:, 1][live]
        return float(gaps.min()) if gaps.size else math.inf

    def to_onnx(self, graph, inputs):
        if self.out_channels:
            return self._depth_to_onnx(graph, inputs[0])
        # The windows start padding//2 cells before the input, and a cell outside it is −∞: pad
        # with −∞ (after the input: as far as the last window reaches), then pool unpadded.
        _, h, w = self.in_shape
        _, out_h, out_w = self.out_shape
        top = self.padding // 2
        bottom = max(0, (out_h - 1) * self.stride + self.size - top - h)
        right = max(0, (out_w - 1) * self.stride + self.size - top - w)
        x = inputs[0]
        if top or bottom or right:
            x = graph.pad(x, [0, 0, top, top], [0, 0, bottom, right], -np.inf)
        return graph.node("MaxPool", [x], kernel_shape=[self.size] * 2,
                          strides=[self.stride] * 2)

    def _depth_to_onnx(self, graph, x):
        """maxpool_depth: the channels padded by −∞ to groups·out_channels, reshaped to
        (N, groups, out_channels, H, W), ReduceMax over the groups."""
        c, h, w = self.in_shape
        groups = -(-c // self.out_channels)
        if groups * self.out_channels != c:
            x = graph.pad(x, [0, 0, 0, 0], [0, groups * self.out_channels - c, 0, 0], -np.inf)
        split = graph.reshape(x, [0, groups, self.out_channels, h, w])
        if graph.opset >= 18:                       # the axes became an input at opset 18
            return graph.node("ReduceMax", [split, graph.ints([1])], keepdims=0)
        return graph.node("ReduceMax", [split], axes=[1], keepdims=0)
