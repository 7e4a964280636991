"""[gru]: Darknet's gated recurrent unit, tabulated only (cells as in rnn.py)."""

from __future__ import annotations

import math

from darkbp.layers.base import register
from darkbp.layers.rnn import Cell, RecurrentLayer


@register
class GruLayer(RecurrentLayer):
    """[gru] (pjreddie's make_gru_layer): six linear connected cells, for the update gate z,
    the reset gate r and the candidate state h — u* read the input (inputs -> output), w*
    the state (output -> output):

        z = σ(uz·x + wz·s),  r = σ(ur·x + wr·s),  h = σ(uh·x + wh·(r ⊙ s)),
        s' = z ⊙ s + (1 − z) ⊙ h                     (tanh=1: tanh in place of σ for h)

    Darknet makes (and tabulates) them uz, wz, ur, wr, uh, wh, and save_weights_upto
    writes them wz, wr, wh, uz, ur, uh. Tabulated only.
    """

    sections = ("gru",)
    options = frozenset({"output", "batch_normalize", "tanh"})
    banner = "GRU Layer"

    def __init__(self, in_shape, output: int, batch_normalize: bool, tanh: bool):
        inputs = math.prod(in_shape)
        cells = tuple(Cell(f"{kind}{gate}", inputs if kind == "u" else output, output)
                      for gate in "zrh" for kind in "uw")
        super().__init__(in_shape, output, "linear", batch_normalize, cells,
                         ("wz", "wr", "wh", "uz", "ur", "uh"))
        self.tanh = bool(tanh)

    @classmethod
    def build(cls, s, inputs):
        return cls(inputs[0].shape, output=s.get_int("output", 1, minimum=1),
                   batch_normalize=s.get_int("batch_normalize", 0, minimum=0),
                   tanh=s.get_int("tanh", 0, minimum=0))

    def describe(self):
        return {**super().describe(), "tanh": int(self.tanh)}

    def summary_cells(self):
        bn = " bn" if self.batch_normalize else ""
        return f"gru{bn} {'tanh' if self.tanh else 'logistic'}", "", ""
