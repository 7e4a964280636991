"""[conv_lstm]: AlexeyAB's convolutional LSTM, tabulated only (cells as in crnn.py)."""

from __future__ import annotations

import numpy as np

from darkbp.layers.base import Layer, c_float, register
from darkbp.layers.crnn import ConvCell, ConvRecurrentLayer


@register
class ConvLstmLayer(ConvRecurrentLayer):
    """[conv_lstm] (AlexeyAB's make_conv_lstm_layer; pjreddie's Darknet has none): an LSTM
    (lstm.py) whose gates are convolutions with the section's size, stride, padding, groups,
    activation (default linear) and batch_normalize, all made on the input's width and
    height: uf, ui, ug, uo read the input (C -> output); wf, wi, wg, wo the state (output ->
    output), or with bottleneck=1 one wf reading state and input together (2·output ->
    output); with peephole=1, vf, vi, vo read the cell (output -> output). AlexeyAB makes
    (and tabulates) them in that order and its files hold them vf, vi, vo, wf, wi, wg, wo,
    uf, ui, ug, uo. Tabulated only.
    """

    sections = ("conv_lstm",)
    options = frozenset({"output", "size", "stride", "pad", "padding", "groups", "dilation",
                         "activation", "batch_normalize", "peephole", "bottleneck",
                         "lstm_activation", "shortcut"})
    ignored = Layer.ignored | {"xnor", "state_constrain", "time_normalizer"}
    banner = "CONV_LSTM Layer"
    fork_rule = "AlexeyAB's fork's only (pjreddie's Darknet has no such layer)"

    def __init__(self, in_shape, cells, file_order, peephole: bool, bottleneck: bool,
                 lstm_activation: str):
        super().__init__(in_shape, cells[3].conv.out_shape, cells, file_order)
        self.peephole, self.bottleneck = peephole, bottleneck
        self.lstm_activation = lstm_activation

    @classmethod
    def build(cls, s, inputs):
        c, h, w = cls.conv_input(s, inputs[0])
        output = s.get_int("output", 1, minimum=1)
        conv = cls.read_conv(s, "linear")
        peephole = bool(s.get_int("peephole", 0, minimum=0))
        bottleneck = bool(s.get_int("bottleneck", 0, minimum=0))
        lstm_activation = s.get_str("lstm_activation", "tanh")

        def cell(name, channels):
            return ConvCell(name, cls.make_conv(s, (channels, h, w), output, conv))

        cells = [cell(f"u{gate}", c) for gate in "figo"]
        cells += ([cell("wf", 2 * output)] if bottleneck
                  else [cell(f"w{gate}", output) for gate in "figo"])
        if peephole:
            cells += [cell(f"v{gate}", output) for gate in "fio"]
        names = [one.name for one in cells]
        file_order = ([name for name in names if name[0] == "v"]
                      + [name for name in names if name[0] == "w"]
                      + [name for name in names if name[0] == "u"])
        return cls((c, h, w), tuple(cells), tuple(file_order), peephole, bottleneck,
                   lstm_activation)

    def darknet_line(self):
        raise NotImplementedError("pjreddie's Darknet has no [conv_lstm] layer (AlexeyAB's "
                                  "fork only): use --format alexeyab")

    @property
    def alexeyab_bflops(self) -> float:
        # The cells' float sum, then (double) 12 (peephole) or 9 operations per output value
        # of the one image AlexeyAB's summary parses, stored back into the float l.bflops.
        extra = (12 if self.peephole else 9) * self.outputs / 1e9
        return c_float(float(np.float32(super().alexeyab_bflops)) + extra)

    def describe(self):
        return {**super().describe(), "peephole": int(self.peephole),
                "bottleneck": int(self.bottleneck), "lstm_activation": self.lstm_activation}

    def summary_cells(self):
        conv = self.cells[0].conv
        bn = " bn" if conv.batch_normalize else ""
        return (f"conv_lstm{bn} {conv.activation}", str(self.out_shape[0]),
                f"{conv.size} x {conv.size} / {conv.stride}")
