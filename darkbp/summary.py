"""The layer table: Darknet's text byte for byte, and the same data as a dict for the table/JSON.

`darknet_text(network)` reproduces what Darknet (pjreddie/darknet) prints while
loading a cfg (SPEC section 4), so it can be diffed against Darknet's own output.
`summary_data(network, batch)` returns plain data (lists, dicts, numbers) that the
CLI renders as a rich table or dumps as JSON.
"""

from __future__ import annotations

from darkbp.network import Network

DARKNET_HEADER = "layer     filters    size              input                output\n"
BYTES_PER_FLOAT = 4   # training and evaluation run in float32


def darknet_text(network: Network) -> str:
    """Exactly the table Darknet prints to stderr when it loads this cfg."""
    lines = [DARKNET_HEADER]
    for index, layer in enumerate(network.layers):
        lines.append("%5d " % index + layer.darknet_line())
    return "".join(lines)


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
            **layer.describe(),
        }
        rows.append(row)
    activations = network.layers[0].inputs + sum(layer.outputs for layer in network.layers)
    return {
        "file": network.file,
        "input": list(reversed(network.input_shape)),   # [w, h, c] as Darknet prints
        "batch": batch,
        "layers": rows,
        "totals": {
            "params": sum(row["params"] for row in rows),
            "bflops": sum(row["bflops"] for row in rows),
            "activation_bytes": activations * batch * BYTES_PER_FLOAT,
        },
    }
