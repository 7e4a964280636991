"""[lstm]: Darknet's long short-term memory layer, tabulated only (cells as in rnn.py)."""

from __future__ import annotations

import math

from darkbp.layers.base import register
from darkbp.layers.rnn import Cell, RecurrentLayer


@register
class LstmLayer(RecurrentLayer):
    """[lstm] (make_lstm_layer, the same in both forks): eight linear connected cells, for
    the forget gate f, the input gate i, the candidate g and the output gate o — u* read the
    input (inputs -> output), w* the state h (output -> output):

        f = σ(uf·x + wf·h),  i = σ(ui·x + wi·h),  g = tanh(ug·x + wg·h),  o = σ(uo·x + wo·h),
        c' = f ⊙ c + i ⊙ g,  h' = o ⊙ tanh(c')

    Both forks make (and tabulate) them uf, ui, ug, uo, wf, wi, wg, wo, but their
    save_weights_upto write them in different orders: pjreddie's wi, wf, wo, wg, ui, uf,
    uo, ug, AlexeyAB's wf, wi, wg, wo, uf, ui, ug, uo. Every u* cell has the same shape, and
    so has every w* cell, so a file of the other order loads without error into the wrong
    gates. darkbp reads and writes pjreddie's order. Tabulated only.
    """

    sections = ("lstm",)
    options = frozenset({"output", "batch_normalize"})
    banner = "LSTM Layer"
    fork_rule = ("its .weights arrays in pjreddie's order (wi wf wo wg ui uf uo ug); "
                 "AlexeyAB's files hold them as wf wi wg wo uf ui ug uo")

    def __init__(self, in_shape, output: int, batch_normalize: bool):
        inputs = math.prod(in_shape)
        cells = tuple(Cell(f"{kind}{gate}", inputs if kind == "u" else output, output)
                      for kind in "uw" for gate in "figo")
        super().__init__(in_shape, output, "linear", batch_normalize, cells,
                         ("wi", "wf", "wo", "wg", "ui", "uf", "uo", "ug"))

    @classmethod
    def build(cls, s, inputs):
        return cls(inputs[0].shape, output=s.get_int("output", 1, minimum=1),
                   batch_normalize=s.get_int("batch_normalize", 0, minimum=0))

    def summary_cells(self):
        return "lstm" + (" bn" if self.batch_normalize else ""), "", ""
