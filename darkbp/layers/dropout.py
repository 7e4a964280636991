"""[dropout]: inverted dropout in training (kept values × 1/(1 − p)), identity in inference."""

from __future__ import annotations

import numpy as np

from darkbp.layers.base import Layer, c_float, register
from darkbp.ops.buffers import kernel_buffers


@register
class DropoutLayer(Layer):
    """x: (N, C, H, W) -> the same shape; a flat input stays flat.

    Training: an element is dropped (0) where its uniform draw is below `probability`
    and kept × 1/(1 − probability) elsewhere. The draws are the pass's own
    (ctx.uniform: the same for any number of workers and after a resume). Unlike
    Darknet, which drops in place in the previous layer's output, the output is a new
    array: the layer before keeps its own output for its activation's derivative.
    """

    sections = ("dropout",)
    options = frozenset({"probability"})
    backward_cache = ("_mask",)

    def __init__(self, in_shape, probability: float, flat: bool):
        super().__init__(in_shape, in_shape)
        self.probability = probability
        self.flat = flat
        self.scale = 1.0 / (1.0 - probability)

    @classmethod
    def build(cls, s, inputs):
        probability = s.get_float("probability", 0.5)
        if not 0 <= probability < 1:
            raise s.error(f"'probability' must be at least 0 and below 1, got "
                          f"{s.get_str('probability', '')}", s.line_of("probability"))
        layer = cls(inputs[0].shape, probability=probability, flat=inputs[0].flat)
        # AlexeyAB's parse_dropout defaults to .2, not .5: its table shows what it would use.
        layer.alexeyab_probability = s.get_float("probability", 0.2)
        return layer

    def darknet_line(self):
        return ("dropout       p = %.2f               %4d  ->  %4d\n"
                % (self.probability, self.inputs, self.inputs))

    def alexeyab_line(self):
        return ("dropout    p = %.3f        %4d  ->   %4d\n"
                % (c_float(self.alexeyab_probability), self.inputs, self.inputs))

    def alexeyab_size(self, sizes):
        return 0, 0                  # make_dropout_layer sets l.w and l.h only for dropblock

    def describe(self):
        return {"probability": self.probability}

    def summary_cells(self):
        return "dropout", "", f"p = {self.probability:.2f}"

    @kernel_buffers
    def forward(self, x, ctx):
        if not ctx.train:
            return x
        draws = ctx.uniform(self.index, x.shape[0], self.in_shape)    # (N, C, H, W) float32
        # A float32 draw against p as a float32, as Darknet's `r < l.probability`.
        keep = draws >= np.float32(self.probability)
        self._mask = keep.astype(x.dtype) * x.dtype.type(self.scale)  # 0 or 1/(1 − p)
        return x * self._mask

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        return dy * self._mask

    def to_onnx(self, graph, inputs):
        return inputs[0]                      # the identity at inference
