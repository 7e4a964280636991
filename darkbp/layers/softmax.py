"""[softmax]: softmax over `groups` equal slices, at temperature T; with cross-entropy as the cost."""

from __future__ import annotations

from darkbp.layers.base import Layer, register
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.softmax import (cross_entropy, softmax_cross_entropy_backward,
                                softmax_forward)


@register
class SoftmaxLayer(Layer):
    """x: (N, ...) flattened to (N, inputs) -> p: (N, inputs, 1, 1).

    As the network's last layer it is the cost: cross-entropy against the truth,
    whose gradient at its input `input_grad` gives. Inside a network (a [cost]
    after it) its backward is the softmax's Jacobian. A hierarchical softmax
    (`tree=`, darknet9000) is tabulated only.
    """

    sections = ("softmax", "soft")
    options = frozenset({"groups", "temperature", "tree"})
    backward_cache = ("_p",)      # before a [cost]; as the cost, its input_grad reads _p
    ignored = Layer.ignored | {"spatial", "noloss"}
    flat = True
    is_cost = True

    def __init__(self, in_shape, groups: int, temperature: float):
        c, h, w = in_shape
        super().__init__(in_shape, (c * h * w, 1, 1))
        self.groups, self.temperature = groups, temperature

    @classmethod
    def build(cls, s, inputs):
        c, h, w = inputs[0].shape
        groups = s.get_int("groups", 1, minimum=1)
        if (c * h * w) % groups:
            raise s.error(f"groups={groups} does not divide the {c * h * w} inputs",
                          s.line_of("groups"))
        layer = cls(inputs[0].shape, groups=groups,
                    temperature=s.get_float("temperature", 1.0, positive=True))
        # Darknet's softmax over a label tree: tabulated only.
        layer.runnable = layer.trainable = "tree" not in s.options
        return layer

    def darknet_line(self):
        return "softmax                                        %4d\n" % self.inputs

    def alexeyab_line(self):
        return self.darknet_line()               # make_softmax_layer prints the same line

    def describe(self):
        return {"groups": self.groups, "temperature": self.temperature}

    @kernel_buffers
    def forward(self, x, ctx):
        n = x.shape[0]
        self._p = softmax_forward(x.reshape(n, -1), self.groups, self.temperature)
        return self._p.reshape(n, self.outputs, 1, 1)

    def cost(self, truth):
        """Per-image cross-entropy −Σ truth·log(p) of the last forward. truth: (N, outputs)."""
        return cross_entropy(self._p, truth)

    def input_grad(self, truth):
        """d(Σ_images cost)/d(input), exact for any truth (see ops.softmax)."""
        dx = softmax_cross_entropy_backward(self._p, truth, self.groups, self.temperature)
        return dx.reshape((truth.shape[0],) + self.in_shape)

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        # A softmax inside the network (not the cost): the Jacobian-vector product per group.
        n = dy.shape[0]
        p = self._p.reshape(n, self.groups, -1)
        g = dy.reshape(n, self.groups, -1)
        dx = p * (g - (g * p).sum(axis=2, keepdims=True)) / p.dtype.type(self.temperature)
        return dx.reshape((n,) + self.in_shape)

    def truth_groups(self):
        return self.groups

    def to_onnx(self, graph, inputs):
        z = graph.reshape(inputs[0], [0, self.groups, -1])            # (N, groups, n/groups)
        if self.temperature != 1:
            z = graph.node("Div", [z, graph.scalar(self.temperature)])
        p = graph.node("Softmax", [z], axis=2)
        return graph.reshape(p, [0, self.outputs, 1, 1])
