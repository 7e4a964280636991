"""[maxpool]: Darknet's max pooling (window starts at -padding/2, first maximum wins)."""

from __future__ import annotations

import math

import numpy as np

from darkbp.layers.base import Layer, c_float, register
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.maxpool import maxpool_backward, maxpool_forward


@register
class MaxpoolLayer(Layer):
    """x: (N, C, H, W) -> (N, C, (H + padding - size)/stride + 1, (W + padding - size)/stride + 1)."""

    sections = ("maxpool", "max")
    options = frozenset({"size", "stride", "padding"})
    backward_cache = ("_cache",)

    def __init__(self, in_shape, size: int, stride: int, padding: int):
        c, h, w = in_shape
        super().__init__(in_shape, (c, (h + padding - size) // stride + 1,
                                    (w + padding - size) // stride + 1))
        self.size, self.stride, self.padding = size, stride, padding

    @classmethod
    def build(cls, s, inputs):
        _, h, w = cls.image_input(s, inputs[0])
        stride = s.get_int("stride", 1, minimum=1)
        size = s.get_int("size", stride, minimum=1)
        padding = s.get_int("padding", size - 1, minimum=0)
        if h + padding < size or w + padding < size:
            raise s.error(f"a {size}x{size} window with padding {padding} does not fit the "
                          f"{w} x {h} input: the output would have no pixels")
        return cls(inputs[0].shape, size=size, stride=stride, padding=padding)

    def darknet_line(self):
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        return ("max          %d x %d / %d  %4d x%4d x%4d   ->  %4d x%4d x%4d\n"
                % (self.size, self.size, self.stride, w, h, c, ow, oh, oc))

    def alexeyab_line(self):
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        return ("max               %2dx%2d/%2d   %4d x%4d x%4d -> %4d x%4d x%4d %5.3f BF\n"
                % (self.size, self.size, self.stride, w, h, c, ow, oh, oc,
                   c_float(self.alexeyab_bflops)))

    @property
    def alexeyab_bflops(self) -> float:
        """AlexeyAB counts one operation per window value: size²·C·out_h·out_w / 1e9."""
        c = self.in_shape[0]
        _, out_h, out_w = self.out_shape
        return self.size * self.size * c * out_h * out_w / 1e9

    def describe(self):
        return {"size": self.size, "stride": self.stride, "padding": self.padding}

    def summary_cells(self):
        return "max", "", f"{self.size} x {self.size} / {self.stride}"

    @kernel_buffers
    def forward(self, x, ctx):
        y, self._cache = maxpool_forward(x, self.size, self.stride, self.padding,
                                         backward=ctx.train)
        return y

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        return maxpool_backward(dy, self._cache)

    def margin(self, xs):
        """The smallest gap between the largest and second largest value of any window."""
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

    def to_onnx(self, graph, inputs):
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
