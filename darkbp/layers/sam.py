"""[sam]: AlexeyAB's spatial attention, the previous output times the `from` layer's."""

from __future__ import annotations

from darkbp.layers.base import Layer, earlier_layer, register
from darkbp.ops.activations import ACTIVATIONS
from darkbp.ops.buffers import kernel_buffers

# Activations that AlexeyAB's plain activate_array (CPU) and activate_array_ongpu (GPU) do not
# know: both return 0 for them, so a [sam] or [scale_channels] with one outputs zeros in
# AlexeyAB's Darknet (its parser says "doesn't support SWISH or MISH activations").
ZERO_IN_ALEXEYAB = frozenset({"mish", "swish", "hard_mish", "normalize_channels",
                              "normalize_channels_softmax",
                              "normalize_channels_softmax_maxval"})


def read_from(s, index: int) -> int:
    """The absolute index of the section's required `from` (AlexeyAB's [sam], [scale_channels])."""
    if "from" not in s.options:
        raise s.error(f"[{s.header}] needs 'from': the earlier layer it multiplies, e.g. from=-2")
    written = s.get_int("from", 0)
    return earlier_layer(s, "from", written, index, f"from={written}")


def read_linear_activation(s) -> tuple[str, tuple[str, ...]]:
    """The section's `activation` (AlexeyAB's default here: linear) and the advice to give
    when AlexeyAB's Darknet would output zeros with it."""
    name = s.get_str("activation", "linear")
    if name not in ACTIVATIONS:
        raise s.error(f"unknown activation '{name}' (one of: {', '.join(ACTIVATIONS)})",
                      s.line_of("activation"))
    advice = ()
    if name in ZERO_IN_ALEXEYAB:
        advice = (f"activation={name}: AlexeyAB's Darknet outputs 0 for it in this layer, "
                  f"on CPU and GPU alike (activate_array has no case for it); darkbp "
                  f"applies {name}",)
    return name, advice


@register
class SamLayer(Layer):
    """[prev (N, C, H, W), src (N, C, H, W)] -> (N, C, H, W): activation(prev · src),
    prev the previous layer's output and src the `from` layer's (AlexeyAB's sam_layer.c).

    Backward: dz = activation'·dy, d_prev = dz·src, d_src = dz·prev (added into src's
    gradient; AlexeyAB's CPU assigns it, dropping what a later reader of src gave).
    """

    sections = ("sam",)
    options = frozenset({"from", "activation"})
    arity = None
    backward_cache = ("_prev", "_src", "_z", "_y")

    def __init__(self, shape, source: int, activation: str):
        super().__init__(shape, shape)
        self.source, self.activation = source, activation

    @classmethod
    def read_sources(cls, s, index):
        return index - 1, read_from(s, index)

    @classmethod
    def build(cls, s, inputs):
        prev, src = inputs
        c, h, w = prev.shape
        c1, h1, w1 = src.shape
        if prev.shape != src.shape:
            raise s.error(f"the 'from' layer {src.index} outputs {w1} x {h1} x {c1} and the "
                          f"previous layer {w} x {h} x {c}: [sam] multiplies them elementwise, "
                          f"so they must be the same (AlexeyAB asserts it)", s.line_of("from"))
        activation, advice = read_linear_activation(s)
        layer = cls(prev.shape, src.index, activation)
        layer.flat = prev.flat
        layer.advice = advice
        return layer

    def darknet_line(self):
        # pjreddie's Darknet has no [sam]: its [shortcut] line, from the `from` layer.
        c, h, w = self.out_shape
        return ("sam  %3d                %4d x%4d x%4d   ->  %4d x%4d x%4d\n"
                % (self.source, w, h, c, w, h, c))

    def alexeyab_line(self):
        return "scale Layer: %d\n" % self.source      # make_sam_layer's (sic)

    def describe(self):
        return {"from": self.source, "activation": self.activation}

    def summary_cells(self):
        return f"sam {self.activation}", "", f"from {self.source}"

    @kernel_buffers
    def forward(self, xs, ctx):
        prev, src = xs
        z = prev * src
        if not ctx.train:
            return ACTIVATIONS[self.activation].apply(z)
        self._prev, self._src, self._z = prev, src, z
        self._y = ACTIVATIONS[self.activation].forward(z)
        return self._y

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        dz = ACTIVATIONS[self.activation].backward_over(self._z, self._y, dy)   # dy is ours
        d_src = dz * self._prev
        dz *= self._src                                   # d_prev, in dy's memory
        return [dz, d_src]

    def margin(self, xs):
        return ACTIVATIONS[self.activation].margin(self._z)

    def to_onnx(self, graph, inputs):
        return graph.activation(self.activation, graph.node("Mul", list(inputs)))
