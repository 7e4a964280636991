"""The layer table: Darknet's text byte for byte, and the same data as a dict for the table/JSON.

`darknet_text(network)` reproduces what Darknet (pjreddie/darknet) prints while
loading a cfg (SPEC section 4), so it can be diffed against Darknet's own output.
`summary_data(network, batch)` returns plain data (lists, dicts, numbers) that the
CLI renders as a rich table or dumps as JSON.
"""

from __future__ import annotations

from darkbp.layers.base import Layer
from darkbp.network import Network

DARKNET_HEADER = "layer     filters    size              input                output\n"
BYTES_PER_FLOAT = 4   # training and evaluation run in float32


def _darknet_line(layer: Layer) -> str:
    c, h, w = layer.in_shape
    oc, oh, ow = layer.out_shape
    if layer.type == "convolutional":
        return ("conv  %5d %2d x%2d /%2d  %4d x%4d x%4d   ->  %4d x%4d x%4d  %5.3f BFLOPs\n"
                % (layer.filters, layer.size, layer.size, layer.stride, w, h, c, ow, oh, oc,
                   layer.bflops))
    if layer.type == "maxpool":
        return ("max          %d x %d / %d  %4d x%4d x%4d   ->  %4d x%4d x%4d\n"
                % (layer.size, layer.size, layer.stride, w, h, c, ow, oh, oc))
    if layer.type == "connected":
        return "connected                            %4d  ->  %4d\n" % (layer.inputs, layer.outputs)
    if layer.type == "softmax":
        return "softmax                                        %4d\n" % layer.inputs
    raise ValueError(f"no Darknet format for layer type {layer.type!r}")


def darknet_text(network: Network) -> str:
    """Exactly the table Darknet prints to stderr when it loads this cfg."""
    lines = [DARKNET_HEADER]
    for index, layer in enumerate(network.layers):
        lines.append("%5d " % index + _darknet_line(layer))
    return "".join(lines)


def layer_flops(layer: Layer) -> float:
    """BFLOPs of one forward pass of one image (convolutions and connected layers)."""
    return getattr(layer, "bflops", 0.0)


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
            "line": getattr(layer, "line", None),
            "input": [w, h, c],
            "output": [ow, oh, oc],
            "bflops": layer_flops(layer),
            "params": layer.parameter_count(),
        }
        for attr in ("filters", "size", "stride", "padding", "groups", "activation",
                     "batch_normalize", "temperature"):
            if hasattr(layer, attr):
                row[attr] = getattr(layer, attr)
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
