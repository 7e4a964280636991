"""[rnn]: Darknet's vanilla recurrent layer, tabulated only; what it shares with [gru].

Darknet builds a recurrent layer out of [connected] layers (here "cells") that run
once per time step: make_rnn_layer / make_gru_layer print their own line and then,
after two tabs, the line of each connected layer they make. Their arrays are this
layer's, named after the cell (`input_weights`, `self_biases`, ...), and a
`.weights` file holds each cell as save_connected_weights writes a [connected]:
biases, weights (outputs, inputs), then scales, rolling_mean, rolling_variance
with batch_normalize.

Time steps: Darknet multiplies the [net] batch/subdivisions by time_steps and the
recurrent layer divides it back, so each cell runs batch/subdivisions vectors per
step, time_steps steps per pass. The table prints only inputs and outputs, which
do not depend on either.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from darkbp.layers.affine import BATCH_NORM_STATE
from darkbp.layers.base import Layer, read_activation, register
from darkbp.layers.connected import ConnectedLayer


class Cell(NamedTuple):
    """One connected layer inside a recurrent layer."""

    name: str        # Darknet's: input_layer -> "input"; the GRU's uz, wz, ...
    inputs: int
    outputs: int


class RecurrentLayer(Layer):
    """A table-only layer made of connected cells: x (N, inputs) -> (N, output, 1, 1)."""

    flat = True
    runnable = trainable = False       # darkbp does not run recurrent layers
    banner = ""                # "RNN Layer": the start of make_<name>_layer's line

    def __init__(self, in_shape, output: int, activation: str, batch_normalize: bool,
                 cells: tuple[Cell, ...], file_order: tuple[str, ...]):
        """cells: in Darknet's creation (and table) order; file_order: their names in the
        order save_weights_upto writes them."""
        super().__init__(in_shape, (output, 1, 1))
        self.activation = activation          # of every cell
        self.batch_normalize = bool(batch_normalize)
        self.cells = cells
        arrays = (("biases", "weights", "scales", *BATCH_NORM_STATE) if self.batch_normalize
                  else ("biases", "weights"))
        self.file_order = tuple(f"{name}_{array}" for name in file_order for array in arrays)
        self.param_names = tuple(name for name in self.file_order
                                 if not name.endswith(BATCH_NORM_STATE))
        self.state_names = tuple(name for name in self.file_order
                                 if name.endswith(BATCH_NORM_STATE))
        # Darknet's files with major or minor > 1000 store every cell's weights transposed.
        self.transposed = tuple(f"{cell.name}_weights" for cell in cells)

    def _text(self, cells: tuple[Cell, ...]) -> str:
        """make_<name>_layer's line, then "\t\t" and make_connected_layer's line per cell."""
        lines = ["%s: %d inputs, %d outputs\n" % (self.banner, self.inputs, self.outputs)]
        for cell in cells:
            connected = ConnectedLayer((cell.inputs, 1, 1), cell.outputs, self.activation,
                                       self.batch_normalize)
            lines.append("\t\t" + connected.darknet_line())
        return "".join(lines)

    def darknet_line(self):
        return self._text(self.cells)

    def alexeyab_line(self):
        # AlexeyAB's make_<name>_layer prints the same lines (its make_connected_layer the
        # same line as pjreddie's); only its [rnn] sizes the cells differently (RnnLayer).
        return self._text(self.cells)

    def alexeyab_size(self, sizes):
        return 0, 0                # AlexeyAB's make_rnn_layer / make_gru_layer set no l.w, l.h

    @property
    def bflops(self) -> float:
        """Each cell's product, once per step: 2·Σ inputs·outputs / 1e9 per input vector."""
        return 2.0 * sum(cell.inputs * cell.outputs for cell in self.cells) / 1e9

    def describe(self):
        return {"batch_normalize": int(self.batch_normalize),
                "connected": [{"name": cell.name, "inputs": cell.inputs,
                               "outputs": cell.outputs} for cell in self.cells]}

    def param_shapes(self):
        per_output = ("biases", "scales", *BATCH_NORM_STATE) if self.batch_normalize \
            else ("biases",)
        shapes = {}
        for cell in self.cells:
            shapes[f"{cell.name}_weights"] = (cell.outputs, cell.inputs)
            shapes.update({f"{cell.name}_{array}": (cell.outputs,) for array in per_output})
        return shapes

    def weights_order(self):
        return self.file_order

    def _init_values(self, rng):
        # make_connected_layer's, cell by cell in creation order: weights
        # U(−1, 1)·sqrt(2/inputs), biases 0, scales 1.
        for cell in self.cells:
            weights = getattr(self, f"{cell.name}_weights")
            weights[...] = rng.uniform(-1.0, 1.0, weights.shape) * math.sqrt(2.0 / cell.inputs)
            if self.batch_normalize:
                getattr(self, f"{cell.name}_scales").fill(1)


@register
class RnnLayer(RecurrentLayer):
    """[rnn] (pjreddie's make_rnn_layer): three connected cells with the section's activation
    and batch_normalize — input (inputs -> output), self (output -> output: the state) and
    output (output -> output) — stored in that order. Tabulated only.

    `hidden` is AlexeyAB's: its fork sizes the state by it (inputs -> hidden -> hidden ->
    output, hidden 1 when absent); pjreddie's reads no `hidden`. darkbp follows pjreddie and
    accepts a `hidden` equal to output, where both forks build the same layer.
    """

    sections = ("rnn",)
    options = frozenset({"output", "hidden", "activation", "batch_normalize", "shortcut"})
    ignored = RecurrentLayer.ignored | {"logistic"}   # AlexeyAB's: the state cell's activation
    banner = "RNN Layer"

    def __init__(self, in_shape, output: int, activation: str, batch_normalize: bool,
                 shortcut: bool, alexeyab_hidden: int):
        inputs = math.prod(in_shape)
        cells = (Cell("input", inputs, output), Cell("self", output, output),
                 Cell("output", output, output))
        super().__init__(in_shape, output, activation, batch_normalize, cells,
                         ("input", "self", "output"))
        self.shortcut = bool(shortcut)
        self.alexeyab_hidden = alexeyab_hidden

    @classmethod
    def build(cls, s, inputs):
        output = s.get_int("output", 1, minimum=1)
        hidden = s.get_int("hidden", output, minimum=1)
        if hidden != output:
            raise s.error(f"hidden={hidden} differs from output={output}: pjreddie's Darknet, "
                          f"which darkbp follows, ignores 'hidden' and makes a state of output "
                          f"units, AlexeyAB's one of hidden units; set hidden={output} or "
                          f"remove it", s.line_of("hidden"))
        return cls(inputs[0].shape, output=output, activation=read_activation(s),
                   batch_normalize=s.get_int("batch_normalize", 0, minimum=0),
                   shortcut=s.get_int("shortcut", 0, minimum=0),
                   alexeyab_hidden=hidden if "hidden" in s.options else 1)

    def alexeyab_line(self):
        # AlexeyAB's parse_rnn: hidden = option_find_int(options, "hidden", 1), and its
        # make_rnn_layer's cells are inputs -> hidden, hidden -> hidden, hidden -> output.
        h = self.alexeyab_hidden
        return self._text((Cell("input", self.inputs, h), Cell("self", h, h),
                           Cell("output", h, self.outputs)))

    def describe(self):
        return {**super().describe(), "activation": self.activation,
                "shortcut": int(self.shortcut)}

    def summary_cells(self):
        bn = " bn" if self.batch_normalize else ""
        return f"rnn{bn} {self.activation}", "", ""
