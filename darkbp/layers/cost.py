"""[cost]: the network's cost on its last layer's output (sse, masked, smooth, L1), times scale."""

from __future__ import annotations

from darkbp.layers.base import Layer, register
from darkbp.ops.cost import COST_TYPES, cost_forward, cost_gradient


@register
class CostLayer(Layer):
    """x: (N, C, H, W) -> x itself: the cost layer passes its input on; the cost is
    `cost(truth)` of that input, truth (N, inputs) in the input's (C, H, W) order.

    The reported cost is the one whose exact gradient Darknet applies (ops/cost.py): for
    sse ½Σ(t − p)², half of what Darknet reports.
    """

    sections = ("cost",)
    options = frozenset({"type", "scale"})
    ignored = Layer.ignored | {"ratio", "noobj", "thresh"}   # GPU-only in Darknet
    is_cost = True
    must_be_last = True

    def __init__(self, in_shape, kind: str, scale: float, flat: bool):
        super().__init__(in_shape, in_shape)
        self.kind, self.scale, self.flat = kind, scale, flat

    @classmethod
    def build(cls, s, inputs):
        kind = s.get_str("type", "sse")
        if kind not in COST_TYPES:
            # Darknet prints "Couldn't find cost type" and trains with sse instead.
            raise s.error(f"unknown cost type '{kind}' (one of: {', '.join(COST_TYPES)}; "
                          "Darknet's names, case matters)", s.line_of("type"))
        layer = cls(inputs[0].shape, kind=kind, scale=s.get_float("scale", 1.0),
                    flat=inputs[0].flat)
        if inputs[0].header in ("softmax", "soft"):
            layer.advice = (layer._after_softmax(),)
        return layer

    def _after_softmax(self) -> str:
        """The warning for a [cost] reading a [softmax]. Darknet's softmax, when it has a
        truth, adds its own cross-entropy delta t − p to what the cost adds (scale·delta)
        and passes the sum back without its Jacobian; its reported cost is the mean of the
        two layers' (src/network.c calc_network_cost)."""
        if self.kind == "sse":
            darknet = (f"with exactly {1 + self.scale:g}× the cross-entropy gradient and "
                       "reports (cross-entropy + SSE)/2, while darkbp applies the SSE "
                       "through the softmax's Jacobian (softmax + MSE, as the course notes "
                       "derive it)")
        else:
            darknet = (f"with the cross-entropy gradient plus the {self.kind} cost's, both "
                       "without the softmax's Jacobian, and reports their mean, while darkbp "
                       f"applies the {self.kind} cost through the softmax's Jacobian")
        return f"reads a [softmax]: Darknet trains such a cfg {darknet}"

    def darknet_line(self):
        return "cost                                           %4d\n" % self.inputs

    def alexeyab_line(self):
        line = self.darknet_line()               # make_cost_layer prints the same line
        if self.kind == "L1":
            # AlexeyAB's get_cost_type knows no L1; parse_cost says so before the layer's line.
            line = "Couldn't find cost type L1, going with SSE\n" + line
        return line

    def alexeyab_size(self, sizes):
        return 0, 0                              # make_cost_layer leaves l.w and l.h 0

    def describe(self):
        return {"cost_type": self.kind, "scale": self.scale}   # "type" is the layer's

    def summary_cells(self):
        return f"cost {self.kind}", "", ""

    def forward(self, x, ctx):
        self._p = x.reshape(x.shape[0], -1)          # (N, inputs): a view unless x is strided
        return x

    def cost(self, truth):
        """Per-image cost (N,) of the last forward. truth: (N, inputs)."""
        return cost_forward(self._p, truth.astype(self._p.dtype, copy=False), self.kind,
                            self.scale)

    def input_grad(self, truth):
        """d(Σ_images cost)/d(input), (N, *in_shape)."""
        grad = cost_gradient(self._p, truth.astype(self._p.dtype, copy=False), self.kind,
                             self.scale)
        return grad.reshape((truth.shape[0],) + self.in_shape)

    def to_onnx(self, graph, inputs):
        return inputs[0]      # not exported: the model's output is what the cost reads
