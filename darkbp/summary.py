"""The layer table: Darknet's text byte for byte, and the same data as a dict for the table/JSON.

`darknet_text(network)` reproduces what Darknet (pjreddie/darknet) prints while
loading a cfg (SPEC section 4), so it can be diffed against Darknet's own output;
`alexeyab_text(network)` what AlexeyAB's fork prints, its two total lines included
(`alexeyab_table`: and where AlexeyAB's Darknet dies instead, why).
`summary_data(network, batch)` returns plain data (lists, dicts, numbers) that the
CLI renders as a rich table or dumps as JSON.
"""

from __future__ import annotations

import numpy as np

from darkbp.errors import DarkbpError
from darkbp.layers.base import AlexeyabStops
from darkbp.network import Network

DARKNET_HEADER = "layer     filters    size              input                output\n"
ALEXEYAB_HEADER = "   layer   filters  size/strd(dil)      input                output\n"
BYTES_PER_FLOAT = 4   # training and evaluation run in float32


def darknet_text(network: Network) -> str:
    """Exactly the table Darknet prints to stderr when it loads this cfg."""
    lines = [DARKNET_HEADER]
    for index, layer in enumerate(network.layers):
        try:
            lines.append("%5d " % index + layer.darknet_line())
        except NotImplementedError as reason:       # a layer pjreddie's Darknet does not have
            raise DarkbpError(f"darkbp cannot print pjreddie's table of this cfg: {reason}",
                              file=network.file, line=layer.line, section=layer.header) from None
    return "".join(lines)


def alexeyab_text(network: Network) -> str:
    """Exactly the table AlexeyAB's Darknet prints to stderr when it loads this cfg
    (src/parser.c parse_network_cfg_custom), from its header to its two total lines, or
    to where it dies (`alexeyab_table`)."""
    return alexeyab_table(network)[0]


def alexeyab_table(network: Network) -> tuple[str, AlexeyabStops | None]:
    """(text, stop): AlexeyAB's table of this cfg, and None, or where and why AlexeyAB's
    Darknet dies before its end, the text then being what it printed until then.

    Total BFLOPS is the float32 sum of the layers' l.bflops (Layer.alexeyab_bflops);
    avg_outputs the integer mean of l.outputs over the layers whose l.w and l.h
    (Layer.alexeyab_size) both exceed 1. Where no layer does, AlexeyAB divides by zero
    (SIGFPE) after printing its Total BFLOPS line (its recurrent cfgs: FAILED.txt of
    darknet-summary/alexeyab-own). A layer it aborts on (AlexeyabStops) ends the text
    with that layer's printed part.
    """
    lines = [ALEXEYAB_HEADER]
    for index, layer in enumerate(network.layers):
        try:
            lines.append("%4d " % index + layer.alexeyab_line())
        except AlexeyabStops as stop:
            lines.append("%4d " % index + stop.printed)
            stop.where = f"layer {index} [{layer.header}] (line {layer.line})"
            return "".join(lines), stop
        except NotImplementedError as reason:
            message = (f"darkbp cannot print AlexeyAB's table of this cfg: {reason}" if str(reason)
                       else f"darkbp does not know AlexeyAB's table line for [{layer.header}]")
            raise DarkbpError(message, file=network.file, line=layer.line,
                              section=layer.header) from None
    bflops, avg_outputs = alexeyab_totals(network)
    lines.append("Total BFLOPS %5.3f \n" % bflops)
    if avg_outputs is None:
        return "".join(lines), AlexeyabStops(
            "", "no layer has l.w and l.h above 1, so its avg_outputs divides by zero "
                "(SIGFPE) after its Total BFLOPS line",
            "darkbp's totals are its own (parameters, BFLOPs, activation memory) and have no "
            "avg_outputs")
    lines.append("avg_outputs = %d \n" % avg_outputs)
    return "".join(lines), None


def alexeyab_totals(network: Network) -> tuple[float, int | None]:
    """(Total BFLOPS, avg_outputs) as AlexeyAB computes them; avg_outputs None where it
    divides by zero (no layer has l.w > 1 and l.h > 1)."""
    bflops = np.float32(0)                      # a C float, summed in float
    sizes: list[tuple[int, int]] = []
    counted = []
    for layer in network.layers:
        bflops += np.float32(layer.alexeyab_bflops)
        w, h = layer.alexeyab_size(sizes)
        sizes.append((w, h))
        if w > 1 and h > 1:
            counted.append(layer.alexeyab_outputs)
    return float(bflops), sum(counted) // len(counted) if counted else None


def fork_notes(network: Network) -> list[str]:
    """What the table and JSON say where the two Darknets part: for a cfg AlexeyAB's fork
    cannot parse (alexeyab_table's stop), that it cannot, why, and what darkbp does instead;
    for each layer type the forks build differently, which fork's rule darkbp follows."""
    notes = []
    try:
        _, stop = alexeyab_table(network)
    except DarkbpError:         # a layer darkbp has no AlexeyAB line for
        stop = None
    if stop is not None:
        notes.append(f"AlexeyAB's Darknet cannot parse this cfg: {stop}; {stop.rule}")
    for layer in network.layers:
        note = f"[{layer.header}]: {layer.fork_rule}"
        if layer.fork_rule and note not in notes:
            notes.append(note)
    return notes


def summary_data(network: Network, batch: int | None = None) -> dict:
    """Per-layer rows and totals as plain data, for the rich table and for JSON."""
    batch = network.config.batch if batch is None else batch
    rows = []
    for index, layer in enumerate(network.layers):
        c, h, w = layer.in_shape
        oc, oh, ow = layer.out_shape
        row = {
            "index": index,
            "type": layer.type,
            "line": layer.line,
            "inputs": [source for source in layer.sources],
            "input": [w, h, c],
            "output": [ow, oh, oc],
            "bflops": layer.bflops,
            "params": layer.parameter_count(),
        }
        described = layer.describe()
        if described.keys() & row.keys():
            raise ValueError(f"[{layer.type}] describe() would overwrite "
                             f"{sorted(described.keys() & row.keys())} of its summary row")
        rows.append({**row, **described})
    activations = network.layers[0].inputs + sum(layer.outputs for layer in network.layers)
    return {
        "file": network.file,
        "input": list(reversed(network.input_shape)),   # [w, h, c] as Darknet prints
        "batch": batch,
        "layers": rows,
        "notes": fork_notes(network),
        "totals": {
            "params": sum(row["params"] for row in rows),
            "bflops": sum(row["bflops"] for row in rows),
            "activation_bytes": activations * batch * BYTES_PER_FLOAT,
        },
    }
