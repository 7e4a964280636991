"""[shortcut]: activation(alpha·previous + beta·from), Darknet's residual connection."""

from __future__ import annotations

import numpy as np

from darkbp.layers.base import Layer, c_float, earlier_layer, read_activation, register
from darkbp.ops.activations import ACTIVATIONS
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.shortcut import shortcut_backward, shortcut_forward, shortcut_plan


@register
class ShortcutLayer(Layer):
    """[prev (N, C, H, W), src (N, C1, H1, W1)] -> (N, C, H, W), prev being the previous
    layer's output and src the `from` layer's.

    Over the values shortcut_cpu pairs up (all of them when the shapes are equal; see
    ops/shortcut.py for a src of another size) z = alpha·prev + beta·src, elsewhere
    z = prev; the output is activation(z). The backward is the exact adjoint; Darknet's
    scales the gradient to prev by alpha at the unpaired values too.
    """

    sections = ("shortcut",)
    options = frozenset({"from", "activation", "alpha", "beta"})
    arity = None
    backward_cache = ("_z", "_y")

    def __init__(self, in_shape, from_shape, source: int, activation: str, alpha: float,
                 beta: float, flat: bool = False):
        super().__init__(in_shape, in_shape)
        self.from_shape = tuple(int(v) for v in from_shape)
        self.source, self.activation, self.alpha, self.beta = source, activation, alpha, beta
        self.flat = flat
        self.plan = shortcut_plan(self.in_shape, self.from_shape)

    @classmethod
    def read_sources(cls, s, index):
        if "from" not in s.options:
            raise s.error("[shortcut] needs 'from': the earlier layer to add, e.g. from=-3")
        written = s.get_int("from", 0)
        return index - 1, earlier_layer(s, "from", written, index, f"from={written}")

    @classmethod
    def build(cls, s, inputs):
        prev, src = inputs
        c, h, w = prev.shape
        c1, h1, w1 = src.shape
        if shortcut_plan(prev.shape, src.shape) is None:
            raise s.error(f"the 'from' layer {src.index} is {w1} x {h1} and the previous layer "
                          f"{w} x {h}: widths and heights must be the same whole-number ratio "
                          f"apart (Darknet's shortcut_cpu asserts it)", s.line_of("from"))
        # Darknet's default activation here is linear, not the convolutions' logistic.
        activation = read_activation(s) if "activation" in s.options else "linear"
        return cls(prev.shape, src.shape, src.index, activation,
                   alpha=s.get_float("alpha", 1.0), beta=s.get_float("beta", 1.0),
                   flat=prev.flat)

    def darknet_line(self):
        c, h, w = self.out_shape
        fc, fh, fw = self.from_shape
        return ("res  %3d                %4d x%4d x%4d   ->  %4d x%4d x%4d\n"
                % (self.source, fw, fh, fc, w, h, c))

    def alexeyab_line(self):
        # make_shortcut_layer's line (AlexeyAB reads no alpha or beta: wt and wn are its
        # weights_type and weights_normalization, none here), then parse_shortcut's note
        # when the two inputs differ in shape.
        c, h, w = self.out_shape
        fc, fh, fw = self.from_shape
        line = ("Shortcut Layer: %d,  wt = 0, wn = 0, outputs:%4d x%4d x%4d %5.3f BF\n"
                % (self.source, w, h, c, c_float(self.alexeyab_bflops)))
        if self.from_shape != self.out_shape:
            line += "Downsample here: (%d x %d x %d) + (%d x %d x %d) \n" % (w, h, c, fw, fh, fc)
        return line

    @property
    def alexeyab_bflops(self) -> float:
        """One addition per output value: out_w·out_h·out_c / 1e9."""
        return self.outputs / 1e9

    def describe(self):
        return {"from": self.source, "activation": self.activation, "alpha": self.alpha,
                "beta": self.beta}

    def summary_cells(self):
        return f"res {self.activation}", "", f"from {self.source}"

    @kernel_buffers
    def forward(self, xs, ctx):
        prev, src = xs
        z = shortcut_forward(prev, src, self.alpha, self.beta, self.plan)    # a new array
        if not ctx.train:
            return ACTIVATIONS[self.activation].apply(z)
        self._z = z
        self._y = ACTIVATIONS[self.activation].forward(z)
        return self._y

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        dz = ACTIVATIONS[self.activation].backward_over(self._z, self._y, dy)   # dy is ours
        src_shape = (dz.shape[0],) + self.from_shape
        return list(shortcut_backward(dz, src_shape, self.alpha, self.beta, self.plan))

    def margin(self, xs):
        return ACTIVATIONS[self.activation].margin(self._z)

    def to_onnx(self, graph, inputs):
        prev, src = inputs
        plan = self.plan
        paired = src if plan.same else graph.slice(                   # (N, channels, rows, cols)
            src, [1, 2, 3], [0, 0, 0], [plan.channels, plan.rows * plan.stride,
                                        plan.cols * plan.stride], [1, plan.stride, plan.stride])
        paired = graph.scale(paired, self.beta)
        z = graph.node("Add", [graph.scale(prev, self.alpha), self._placed(graph, paired)])
        if not plan.same:                     # the values shortcut_cpu does not pair: prev's
            c, h, w = self.in_shape
            mask = np.zeros((1, c, h, w), bool)
            mask[plan.prev_index] = True
            if not mask.all():
                z = graph.where(graph.constant(mask, "paired", bool), z, prev)
        return graph.activation(self.activation, z)

    def _placed(self, graph, paired: str) -> str:
        """paired (N, channels, rows, cols) where the plan adds it onto prev (every
        `sample`-th pixel of its first channels), zeros elsewhere: (N, C, H, W)."""
        plan, s = self.plan, self.plan.sample
        if plan.same:
            return paired
        if s > 1:                      # (N, ch, rows, 1, cols, 1) -> (N, ch, rows·s, cols·s)
            spread = graph.pad(graph.node("Unsqueeze", [paired, graph.ints([3, 5])]),
                               [0] * 6, [0, 0, 0, s - 1, 0, s - 1])
            paired = graph.reshape(spread, [0, plan.channels, plan.rows * s, plan.cols * s])
        c, h, w = self.in_shape
        rest = [0, c - plan.channels, h - plan.rows * s, w - plan.cols * s]
        return graph.pad(paired, [0] * 4, rest) if any(rest) else paired
