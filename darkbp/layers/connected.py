"""[connected]: y = activation(W·x + b), W (outputs, inputs), optional batch norm."""

from __future__ import annotations

import math

from darkbp.layers.affine import AffineLayer
from darkbp.layers.base import read_activation, register
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.layout import as_nchw, layout_of, ordered


@register
class ConnectedLayer(AffineLayer):
    """x: (N, ...) flattened in (C, H, W) order to (N, inputs) -> (N, outputs, 1, 1).

    The output shape is (outputs, 1, 1), as Darknet's connected layer.  The
    layer computes with the batch as columns, zᵀ = W·xᵀ (outputs, N), so that an
    input stored CHWN (ops/layout.py) is used as is; its output and dx are
    stored CHWN too.
    """

    sections = ("connected", "conn")
    options = frozenset({"output", "activation", "batch_normalize"})
    transposed = ("weights",)
    backward_cache = AffineLayer.backward_cache + ("_xt",)
    flat = True

    def __init__(self, in_shape, output: int, activation: str, batch_normalize: bool):
        super().__init__(in_shape, (output, 1, 1), activation, batch_normalize,
                         ("biases", "weights", "scales", "rolling_mean", "rolling_variance"))

    @classmethod
    def build(cls, s, inputs):
        return cls(inputs[0].shape, output=s.get_int("output", 1, minimum=1),
                   activation=read_activation(s),
                   batch_normalize=s.get_int("batch_normalize", 0, minimum=0))

    def darknet_line(self):
        return "connected                            %4d  ->  %4d\n" % (self.inputs, self.outputs)

    def alexeyab_line(self):
        return self.darknet_line()               # make_connected_layer prints the same line

    def alexeyab_size(self, sizes):
        return 1, 1                              # make_connected_layer sets l.w = l.h = 1

    def summary_cells(self):
        bn = " bn" if self.batch_normalize else ""
        return f"connected{bn} {self.activation}", "", ""

    @property
    def bflops(self) -> float:
        return 2.0 * self.inputs * self.outputs / 1e9

    def param_shapes(self):
        return {"weights": (self.outputs, self.inputs), **self._channel_shapes(self.outputs)}

    def _init_values(self, rng):
        scale = math.sqrt(2.0 / self.inputs)
        self.weights[...] = rng.uniform(-1.0, 1.0, self.weights.shape) * scale
        self._init_scales()

    @kernel_buffers
    def forward(self, x, ctx):
        n = x.shape[0]
        x = x.reshape((n,) + self.in_shape)
        if layout_of(x) == "CHWN":
            self._xt = ordered(x, "CHWN").reshape(-1, n)       # (inputs, N), no copy
        else:
            self._xt = x.reshape(n, -1).T
        z = self.weights @ self._xt                        # (outputs, inputs) @ (inputs, N)
        y = self._tail_forward(z[None], ctx)             # (1, outputs, N)
        return as_nchw(y.reshape(self.outputs, 1, 1, n), "CHWN")

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        n = dy.shape[0]
        dyt = ordered(dy.reshape(n, self.outputs, 1, 1), "CHWN").reshape(1, self.outputs, n)
        dz = self._tail_backward(dyt)[0]                   # (outputs, N)
        self.weight_grads += dz @ self._xt.T               # (outputs, N) @ (N, inputs)
        if not need_dx:
            return None
        dxt = self.weights.T @ dz                          # (inputs, outputs) @ (outputs, N)
        return as_nchw(dxt.reshape(self.in_shape + (n,)), "CHWN")

    def to_onnx(self, graph, inputs):
        gemm = [graph.flatten(inputs[0]), graph.constant(self.weights, "weights")]
        if not self.batch_normalize:           # the biases come after the normalisation
            gemm.append(graph.constant(self.biases, "biases"))
        z = graph.node("Gemm", gemm, transB=1)   # (N, inputs) @ (outputs, inputs)ᵀ
        return graph.as_image(self._tail_to_onnx(graph, z))
