"""[crnn]: AlexeyAB's convolutional recurrent layer, tabulated only; what it shares with
[conv_lstm].

Like [rnn] (rnn.py), a convolutional recurrent layer is made of cells that run once per
time step, here [convolutional] layers. AlexeyAB's make_crnn_layer / make_conv_lstm_layer
print their own line, then each cell's convolution line as make_convolutional_layer prints
it. Their arrays are this layer's, named after the cell (`input_weights`, `self_biases`, ...),
and a `.weights` file holds each cell as save_convolutional_weights writes a
[convolutional]: biases, then scales, rolling_mean, rolling_variance with batch_normalize,
then weights.

The two forks part here: pjreddie's parse_crnn reads `output_filters` and `hidden_filters`
(not `output` and `hidden`) and always makes 3 x 3 convolutions with stride 1 and padding
1; AlexeyAB's reads output, hidden, size, stride, pad/padding and groups as a
[convolutional] does. Every [crnn] of AlexeyAB's zoo is written for AlexeyAB's, which
darkbp follows; it refuses pjreddie's two keys rather than read another network.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from darkbp.layers.base import Layer, read_activation, register
from darkbp.layers.convolutional import ConvolutionalLayer


class ConvCell(NamedTuple):
    """One convolution inside a convolutional recurrent layer."""

    name: str                      # AlexeyAB's: input_layer -> "input"; the LSTM's uf, wf, ...
    conv: ConvolutionalLayer       # its shapes, table line and BFLOPs


class ConvRecurrentLayer(Layer):
    """A table-only layer made of convolutional cells: x (N, C, H, W) -> (N, output, H', W')."""

    runnable = trainable = False       # darkbp does not run recurrent layers
    banner = ""                        # "CRNN Layer": the start of make_<name>_layer's line

    def __init__(self, in_shape, out_shape, cells: tuple[ConvCell, ...],
                 file_order: tuple[str, ...]):
        """cells: in AlexeyAB's creation (and table) order; file_order: their names in the
        order its save_weights_upto writes them."""
        super().__init__(in_shape, out_shape)
        self.cells = cells
        by_name = {cell.name: cell.conv for cell in cells}
        self.file_order = tuple(f"{name}_{array}" for name in file_order
                                for array in by_name[name].weights_order())
        self.param_names = tuple(f"{cell.name}_{array}" for cell in cells
                                 for array in cell.conv.param_names)
        self.state_names = tuple(f"{cell.name}_{array}" for cell in cells
                                 for array in cell.conv.state_names)

    @staticmethod
    def conv_input(section, source) -> tuple[int, int, int]:
        """(C, H, W) of the input: AlexeyAB reads a flat vector of n as a 1 x 1 x n image."""
        c, h, w = source.shape
        if not (c and h and w):
            raise section.error(f"[{section.header}] needs an image input (width, height and "
                                f"channels in [net]), got {w} x {h} x {c}")
        return c, h, w

    @staticmethod
    def read_conv(s, default_activation: str) -> dict:
        """The convolution options every cell shares, as AlexeyAB's parse_crnn and
        parse_conv_lstm read them: size 3, stride 1, pad 0 (pad=1: size/2), groups 1."""
        if s.get_int("dilation", 1, minimum=1) != 1:
            raise s.error(f"[{s.header}] dilation={s.get_int('dilation', 1)}: darkbp "
                          f"tabulates this layer with dilation=1 only", s.line_of("dilation"))
        size = s.get_int("size", 3, minimum=1)
        padding = size // 2 if s.get_int("pad", 0, minimum=0) else s.get_int("padding", 0,
                                                                               minimum=0)
        activation = (read_activation(s) if "activation" in s.options else default_activation)
        return {"size": size, "stride": s.get_int("stride", 1, minimum=1), "padding": padding,
                "groups": s.get_int("groups", 1, minimum=1), "activation": activation,
                "batch_normalize": s.get_int("batch_normalize", 0, minimum=0)}

    @staticmethod
    def make_conv(s, shape, filters: int, conv: dict) -> ConvolutionalLayer:
        """One cell: a [convolutional] of `filters` on an input of `shape` (C, H, W)."""
        c, h, w = shape
        if c % conv["groups"] or filters % conv["groups"]:
            raise s.error(f"groups={conv['groups']} does not divide the {c} channels and "
                          f"{filters} filters of one of its convolutions", s.line_of("groups"))
        if h + 2 * conv["padding"] < conv["size"] or w + 2 * conv["padding"] < conv["size"]:
            raise s.error(f"a {conv['size']}x{conv['size']} kernel with padding "
                          f"{conv['padding']} does not fit the {w} x {h} input: the output "
                          f"would have no pixels")
        return ConvolutionalLayer(shape, filters=filters, **conv)

    def alexeyab_line(self):
        # make_<name>_layer's own line, then each cell's as make_convolutional_layer prints it.
        c, h, w = self.in_shape
        return ("%s: %d x %d x %d image, %d filters\n" % (self.banner, h, w, c,
                                                          self.out_shape[0])
                + "".join(cell.conv.alexeyab_line() for cell in self.cells))

    @property
    def bflops(self) -> float:
        return sum(cell.conv.bflops for cell in self.cells)

    @property
    def alexeyab_bflops(self) -> float:
        total = np.float32(0)               # l.bflops: the cells' float l.bflops, summed in float
        for cell in self.cells:
            total += np.float32(cell.conv.alexeyab_bflops)
        return float(total)

    def describe(self):
        first = self.cells[0].conv
        return {"size": first.size, "stride": first.stride, "padding": first.padding,
                "groups": first.groups, "activation": first.activation,
                "batch_normalize": int(first.batch_normalize),
                "convolutional": [{"name": cell.name, "input": list(cell.conv.in_shape[::-1]),
                                   "filters": cell.conv.filters} for cell in self.cells]}

    def param_shapes(self):
        return {f"{cell.name}_{array}": shape for cell in self.cells
                for array, shape in cell.conv.param_shapes().items()}

    def weights_order(self):
        return self.file_order

    def _init_values(self, rng):
        # make_convolutional_layer's, cell by cell in creation order: weights
        # N(0, 1)·sqrt(2/(size²·channels/groups)), biases 0, scales 1.
        for cell in self.cells:
            conv = cell.conv
            weights = getattr(self, f"{cell.name}_weights")
            fan_in = conv.size * conv.size * (conv.in_shape[0] // conv.groups)
            weights[...] = rng.standard_normal(weights.shape) * math.sqrt(2.0 / fan_in)
            if conv.batch_normalize:
                getattr(self, f"{cell.name}_scales").fill(1)


@register
class CrnnLayer(ConvRecurrentLayer):
    """[crnn] (AlexeyAB's make_crnn_layer): three convolutions with the section's activation
    and batch_normalize — input (C -> hidden), self (hidden -> hidden: the state) and output
    (hidden -> output), each made on the input's width and height — stored in that order.
    Its state must keep the input's width and height (AlexeyAB asserts it). Tabulated only.
    """

    sections = ("crnn",)
    options = frozenset({"output", "hidden", "size", "stride", "pad", "padding", "groups",
                         "dilation", "activation", "batch_normalize", "shortcut"})
    ignored = Layer.ignored | {"xnor"}
    banner = "CRNN Layer"
    shortcut = False
    fork_rule = ("AlexeyAB's (output, hidden, size, stride, pad, groups); pjreddie's reads "
                 "output_filters and hidden_filters and makes 3 x 3 convolutions")

    @classmethod
    def build(cls, s, inputs):
        for key in ("output_filters", "hidden_filters"):
            if key in s.options:
                raise s.error(f"'{key}' is pjreddie's [crnn] (always 3 x 3 convolutions); "
                              f"darkbp reads AlexeyAB's [crnn]: write "
                              f"{key.split('_')[0]}= (and size=3, pad=1 for pjreddie's "
                              f"convolutions)", s.line_of(key))
        c, h, w = cls.conv_input(s, inputs[0])
        output = s.get_int("output", 1, minimum=1)
        hidden = s.get_int("hidden", 1, minimum=1)
        conv = cls.read_conv(s, "logistic")
        cells = (ConvCell("input", cls.make_conv(s, (c, h, w), hidden, conv)),
                 ConvCell("self", cls.make_conv(s, (hidden, h, w), hidden, conv)),
                 ConvCell("output", cls.make_conv(s, (hidden, h, w), output, conv)))
        _, oh, ow = cells[0].conv.out_shape
        if (oh, ow) != (h, w):
            raise s.error(f"its convolutions make a {ow} x {oh} state from the {w} x {h} input: "
                          f"AlexeyAB's make_crnn_layer asserts the state keeps the input's "
                          f"size (use stride=1 and pad=1)")
        layer = cls((c, h, w), cells[2].conv.out_shape, cells, ("input", "self", "output"))
        layer.shortcut = bool(s.get_int("shortcut", 0, minimum=0))
        return layer

    def darknet_line(self):
        raise NotImplementedError("pjreddie's [crnn] reads other options (output_filters, "
                                  "hidden_filters, always 3 x 3 convolutions) and builds "
                                  "another layer from this section: use --format alexeyab")

    def describe(self):
        return {**super().describe(), "hidden": self.cells[0].conv.filters,
                "shortcut": int(self.shortcut)}

    def summary_cells(self):
        conv = self.cells[0].conv
        bn = " bn" if conv.batch_normalize else ""
        return (f"crnn{bn} {conv.activation}", str(self.out_shape[0]),
                f"{conv.size} x {conv.size} / {conv.stride}")
