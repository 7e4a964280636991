"""[scale_channels]: AlexeyAB's squeeze-excitation scaling, the `from` layer's output times the
previous layer's per channel (or, with scale_wh=1, per position)."""

from __future__ import annotations

from darkbp.layers.base import Layer, register
from darkbp.layers.sam import read_from, read_linear_activation
from darkbp.ops.activations import ACTIVATIONS
from darkbp.ops.buffers import kernel_buffers


@register
class ScaleChannelsLayer(Layer):
    """[scales, src (N, C, H, W)] -> (N, C, H, W): activation(scales · src), broadcast,
    src the `from` layer's output and scales the previous layer's (AlexeyAB's
    scale_channels_layer.c):

        scale_wh=0: scales (N, C, 1, 1), one factor per channel (efficientnet's SE blocks)
        scale_wh=1: scales (N, 1, H, W), one factor per position, for every channel

    Backward: dz = activation'·dy, d_src = dz·scales, d_scales = Σ dz·src over the axes
    the scales were broadcast along (the pixels, or the channels). AlexeyAB's GPU divides
    the scale_wh=1 sum by H·W; its CPU and darkbp do not (the true gradient).
    """

    sections = ("scale_channels",)
    options = frozenset({"from", "scale_wh", "activation"})
    arity = None
    backward_cache = ("_scales", "_src", "_z", "_y")

    def __init__(self, in_shape, from_shape, source: int, scale_wh: bool, activation: str):
        super().__init__(in_shape, from_shape)
        self.source, self.scale_wh, self.activation = source, scale_wh, activation
        self.axes = (1,) if scale_wh else (2, 3)          # where the scales are broadcast

    @classmethod
    def read_sources(cls, s, index):
        return index - 1, read_from(s, index)

    @classmethod
    def build(cls, s, inputs):
        scales, src = inputs
        c, h, w = scales.shape
        c1, h1, w1 = src.shape
        scale_wh = bool(s.get_int("scale_wh", 0, minimum=0))
        if scale_wh and (c != 1 or (h, w) != (h1, w1)):
            raise s.error(f"scale_wh=1 scales each position of the 'from' layer {src.index} "
                          f"({w1} x {h1} x {c1}) by the previous layer's, which must then be "
                          f"{w1} x {h1} x 1, but it is {w} x {h} x {c} (AlexeyAB asserts it)",
                          s.line_of("scale_wh"))
        if not scale_wh and ((h, w) != (1, 1) or c != c1):
            raise s.error(f"[scale_channels] scales each of the {c1} channels of the 'from' "
                          f"layer {src.index} by the previous layer's output, which must then "
                          f"be 1 x 1 x {c1}, but it is {w} x {h} x {c} (AlexeyAB asserts it; "
                          f"scale_wh=1 scales by position instead)", s.line_of("from"))
        activation, advice = read_linear_activation(s)
        layer = cls(scales.shape, src.shape, src.index, scale_wh, activation)
        layer.flat = src.flat
        layer.advice = advice
        return layer

    def darknet_line(self):
        # pjreddie's Darknet has no [scale_channels]: its [shortcut] line, the scales' shape
        # to the output's.
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        return ("scale %3d               %4d x%4d x%4d   ->  %4d x%4d x%4d\n"
                % (self.source, w, h, c, ow, oh, oc))

    def alexeyab_line(self):
        return "scale Layer: %d\n" % self.source      # make_scale_channels_layer's

    def describe(self):
        return {"from": self.source, "scale_wh": int(self.scale_wh),
                "activation": self.activation}

    def summary_cells(self):
        return (f"scale {self.activation}", "",
                f"from {self.source}" + (" per position" if self.scale_wh else ""))

    @kernel_buffers
    def forward(self, xs, ctx):
        scales, src = xs
        z = src * scales                                  # (N, C, H, W), broadcast
        if not ctx.train:
            return ACTIVATIONS[self.activation].apply(z)
        self._scales, self._src, self._z = scales, src, z
        self._y = ACTIVATIONS[self.activation].forward(z)
        return self._y

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        dz = ACTIVATIONS[self.activation].backward_over(self._z, self._y, dy)   # dy is ours
        d_scales = (dz * self._src).sum(axis=self.axes, keepdims=True)
        dz *= self._scales                                # d_src, in dy's memory
        return [d_scales, dz]

    def margin(self, xs):
        return ACTIVATIONS[self.activation].margin(self._z)

    def to_onnx(self, graph, inputs):
        scales, src = inputs
        return graph.activation(self.activation, graph.node("Mul", [src, scales]))
