"""[batchnorm]: batch normalisation of its input per channel, with a learned scale and shift."""

from __future__ import annotations

import numpy as np

from darkbp.layers.base import Layer, register
from darkbp.ops.batchnorm import batchnorm_backward, batchnorm_forward
from darkbp.ops.layout import as_nchw, layout_of, ordered


@register
class BatchnormLayer(Layer):
    """x: (N, C, H, W) -> y = scales·x̂ + biases, (N, C, H, W); a flat (N, n, 1, 1) input has n
    channels of one value each (after a [connected], as in Darknet).

    x̂ is ops/batchnorm.py's: batch statistics (unbiased variance) in training, the rolling
    ones in evaluation.  The output and dx keep the input's layout (ops/layout.py).
    """

    sections = ("batchnorm",)
    param_names = ("biases", "scales")
    state_names = ("rolling_mean", "rolling_variance")
    backward_cache = ("_cache",)

    def __init__(self, in_shape, flat: bool):
        super().__init__(in_shape, in_shape)
        self.flat = flat         # a vector stays a vector: no convolution may follow it

    @classmethod
    def build(cls, s, inputs):
        return cls(inputs[0].shape, flat=inputs[0].flat)

    def darknet_line(self):
        c, h, w = self.in_shape
        return "Batch Normalization Layer: %d x %d x %d image\n" % (w, h, c)

    def alexeyab_line(self):
        return self.darknet_line()               # make_batchnorm_layer prints the same line

    def param_shapes(self):
        c = self.in_shape[0]
        return {name: (c,) for name in self.weights_order()}

    def weights_order(self):
        # AlexeyAB's save/load_batchnorm_weights (src/parser.c). pjreddie's writes no biases,
        # and its CPU build cannot run this layer at all.
        return ("biases", "scales", "rolling_mean", "rolling_variance")

    def _init_values(self, rng):
        self.scales.fill(1)

    @property
    def batch_statistics(self) -> bool:
        return True

    def forward(self, x, ctx):
        self._layout = layout_of(x)
        xl = ordered(x, self._layout)
        y, self._cache = batchnorm_forward(self._channels_view(xl), self.scales, self.rolling_mean,
                                           self.rolling_variance, ctx.train,
                                           shards=ctx.shards if ctx.train else None,
                                           pjreddie=ctx.pjreddie_batchnorm)
        y += self.biases[:, None]
        return as_nchw(y.reshape(xl.shape), self._layout)

    def backward(self, dy, need_dx=True):
        dyl = ordered(dy, self._layout)
        g = self._channels_view(dyl)
        self.bias_grads += np.einsum("acb->c", g)
        dx, dscales = batchnorm_backward(g, self._cache)
        self.scale_grads += dscales
        return as_nchw(dx.reshape(dyl.shape), self._layout) if need_dx else None

    def _channels_view(self, a):
        """A batch in layout order as the kernel's (A, C, B): (N, C, H·W) or (1, C, H·W·N)."""
        c = self.in_shape[0]
        if self._layout == "NCHW":
            return a.reshape(a.shape[0], c, -1)
        return a.reshape(1, c, -1)

    def to_onnx(self, graph, inputs):
        return graph.batchnorm(inputs[0], self)
