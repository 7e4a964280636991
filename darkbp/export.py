"""ONNX export: a network's inference, as `Network.forward` computes it in evaluation mode.

    model = onnx_model(network)                     # opset 17, a dynamic batch (named "N")
    export_onnx(network, "net.onnx", opset=13, batch=1)     # checked, then written atomically

The network's parameters must be there (initialised, or loaded from a .weights file).

Each layer type writes its own nodes, in its module: `Layer.to_onnx(graph, inputs)` gets the
names of its inputs' tensors and returns its output's name. This module owns the `Graph`
they write into, Darknet's activations composed from ONNX operators, and the model around
the graph. As in darkbp, every layer's output is a (N, C, H, W) float32 tensor (a vector is
(N, n, 1, 1)); the model's input "input" is (N, C, H, W), or (N, inputs) for a cfg without
an image size, and its output "output" is (N, outputs), what `Network.forward` returns.

A detection cfg (one with [yolo], [region] or [detection] heads) has instead one output per
head, in the order of the heads, named after its section and index ("yolo_16", "yolo_23"):
the head's output as darkbp's forward gives it, (N, C, H, W), which
`darkbp.detector.network_boxes` decodes. Its last layer's output alone (yolov3's third head,
flattened) would be of no use to a user decoding boxes, so it has no "output".

Opsets 13 (the first with Softmax over one axis and Unsqueeze/ReduceSum axes as inputs) to
the newest the installed `onnx` knows. `onnx` is an optional dependency, imported only here
(`pip install "darkbp[onnx]"`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from darkbp import __version__
from darkbp.atomic import atomic_write
from darkbp.errors import DarkbpError
from darkbp.layers.base import INPUT, Layer
from darkbp.network import Network
from darkbp.ops.activations import NORM_EPS, SELU_ALPHA, SELU_LAMBDA

DEFAULT_OPSET = 17
MIN_OPSET = 13
INSTALL = 'pip install "darkbp[onnx]"'


def _onnx():
    try:
        import onnx
    except ImportError:
        raise DarkbpError(f"ONNX export needs the onnx package: {INSTALL}") from None
    return onnx


def check_opset(opset: int) -> None:
    """A DarkbpError unless the export can write `opset` (and the installed onnx knows it)."""
    newest = _onnx().defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise DarkbpError(f"opset {opset} is not supported: darkbp exports opsets {MIN_OPSET} "
                          f"to {newest} (the newest your onnx package knows)")


class Graph:
    """The nodes and initializers of the model being written, with unique names.

    Names start with the layer being written (`begin`): "3.maxpool/MaxPool",
    "0.convolutional/weights". Small constants (scalars, shapes) are shared.
    """

    def __init__(self, file: str, opset: int = DEFAULT_OPSET):
        self.onnx = _onnx()
        self.file = file                 # the cfg, for errors naming a section's line
        self.opset = opset               # the model's: which operators exist (Mish from 18)
        self.nodes: list = []
        self.initializers: list = []
        self.prefix = "input"
        self._names: set[str] = {"input", "output"}
        self._shared: dict[tuple, str] = {}

    def begin(self, layer: Layer) -> None:
        """Name what follows after `layer`."""
        self.prefix = f"{layer.index}.{layer.type}"

    def _unique(self, hint: str) -> str:
        name, k = f"{self.prefix}/{hint}", 1
        while name in self._names:
            k += 1
            name = f"{self.prefix}/{hint}_{k}"
        self._names.add(name)
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attributes) -> str:
        """Add one node with one output; its name (`output`, or a new one)."""
        output = output or self._unique(op)
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=output,
                                                     **attributes))
        return output

    def constant(self, value, hint: str = "constant", dtype=np.float32,
                 shared: bool = False) -> str:
        """An initializer holding `value` in `dtype` (parameters: float32, as darkbp runs
        them); shared: one initializer for every use of the same value."""
        array = np.ascontiguousarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if shared and key in self._shared:
            return self._shared[key]
        name = self._unique(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        if shared:
            self._shared[key] = name
        return name

    def ints(self, values) -> str:
        """An int64 vector: shapes, axes, pads."""
        return self.constant(list(values), "ints", np.int64, shared=True)

    def scalar(self, value: float) -> str:
        """A float32 scalar, which broadcasts against any tensor."""
        return self.constant(value, "scalar", shared=True)

    # ------------------------------------------------------------------ shapes
    def reshape(self, x: str, shape, output: str | None = None) -> str:
        """x -> `shape`, where 0 keeps x's dimension there (the batch) and -1 is inferred."""
        return self.node("Reshape", [x, self.ints(shape)], output)

    def flatten(self, x: str) -> str:
        """(N, C, H, W) -> (N, C·H·W), in (C, H, W) order: how darkbp reads a batch as vectors."""
        return self.node("Flatten", [x], axis=1)

    def as_image(self, x: str) -> str:
        """(N, n) -> (N, n, 1, 1), how darkbp holds a vector."""
        return self.node("Unsqueeze", [x, self.ints([2, 3])])

    def slice(self, x: str, axes, starts, ends, steps=None) -> str:
        inputs = [x, self.ints(starts), self.ints(ends), self.ints(axes)]
        if steps is not None:
            inputs.append(self.ints(steps))
        return self.node("Slice", inputs)

    def pad(self, x: str, begins, ends, value: float = 0.0) -> str:
        """x padded by begins[i] before and ends[i] after along axis i, with `value`."""
        return self.node("Pad", [x, self.ints([*begins, *ends]), self.scalar(value)])

    def scale(self, x: str, factor: float) -> str:
        """x·factor in float32 (nothing for 1)."""
        return x if factor == 1 else self.node("Mul", [x, self.scalar(factor)])

    # ------------------------------------------------------------------ layers' pieces
    def batchnorm(self, x: str, layer: Layer) -> str:
        """x (N, C, ...) normalised with the layer's rolling statistics, darkbp's evaluation
        formula (x − rolling_mean)/sqrt(rolling_variance + 1e-5)·scales + biases
        (ops/batchnorm.py's eps), as ONNX's BatchNormalization."""
        return self.node("BatchNormalization",
                         [x, *(self.constant(getattr(layer, name), name) for name in
                               ("scales", "biases", "rolling_mean", "rolling_variance"))],
                         epsilon=1e-5)

    # ------------------------------------------------------------------ activations
    def activation(self, name: str, x: str) -> str:
        """Darknet's or AlexeyAB's activation `name` of x (ops/activations.py): elementwise,
        or per pixel across axis 1 (normalize_channels*)."""
        return _ACTIVATIONS[name](self, x)

    def channel_reduce(self, op: str, x: str) -> str:
        """ReduceSum/ReduceMax of x over axis 1, kept: (N, 1, ...). Their axes are an input
        from opset 13 (ReduceSum) and 18 (ReduceMax), an attribute before."""
        if op == "ReduceSum" or self.opset >= 18:
            return self.node(op, [x, self.ints([1])], keepdims=1)
        return self.node(op, [x], axes=[1], keepdims=1)

    def where(self, condition: str, a: str, b: str, output: str | None = None) -> str:
        return self.node("Where", [condition, a, b], output)

    def logistic_on(self, x: str, channels, output: str | None = None) -> str:
        """x (N, C, H, W) with the logistic on the channels where `channels` (C,) is true, the
        others unchanged: one Where over a constant (1, C, 1, 1) mask."""
        mask = self.constant(np.reshape(channels, (1, -1, 1, 1)), "mask", np.bool_)
        return self.where(mask, self.node("Sigmoid", [x]), x, output)

    # ------------------------------------------------------------------ the model's outputs
    def head_output(self, layer: Layer) -> str:
        """The model output detection head `layer` writes its last node into: "yolo_16"."""
        name = head_name(layer)
        self._names.add(name)
        return name


def head_name(layer: Layer) -> str:
    """A detection head's output in the model: its section and index, "yolo_16"."""
    return f"{layer.header}_{layer.index}"


def _head_layout(layer: Layer) -> str:
    """What a head's (N, C, H, W) output holds, for its doc string."""
    if layer.header == "yolo":
        mask = ",".join(map(str, layer.mask))
        return (f"for each of the {len(layer.mask)} anchors of mask={mask}: x, y, w, h, "
                f"objectness and {layer.classes} class scores, each an H x W plane; the "
                "logistic on all but w and h (Darknet's forward_yolo_layer)")
    if layer.header == "region":
        background, softmax = layer.settings["background"], layer.settings["softmax"]
        classes = (("a softmax over the background (in the objectness' place) and the classes"
                    if background else "a softmax over the classes") if softmax
                   else "the logistic on each class")
        return (f"for each of the {layer.num} anchors: {layer.coords} coordinates, "
                f"objectness and {layer.classes} class scores, each an H x W plane; the "
                f"logistic on x, y{'' if background else ' and the objectness'}, {classes} "
                "(Darknet's forward_region_layer)")
    cells = layer.side * layer.side
    return (f"(N, {layer.outputs}, 1, 1): the {cells} cells' {layer.classes} class scores"
            f"{' (a softmax per cell)' if layer.settings['softmax'] else ''}, then "
            f"{cells}x{layer.num} confidences, then {cells}x{layer.num}x4 box coordinates "
            "(Darknet's forward_detection_layer)")


def _head_doc(layer: Layer) -> str:
    return (f"layer {layer.index}, [{layer.header}] at line {layer.line} of the cfg: the "
            f"detection head's output as darkbp's forward gives it, {_head_layout(layer)}. "
            "darkbp.detector.network_boxes decodes the model's outputs, in their order")


def _plse(g: Graph, x: str) -> str:
    # .01(x + 4) below −4, .125x + .5 on [−4, 4], .01(x − 4) + 1 above 4
    low = g.node("Mul", [g.node("Add", [x, g.scalar(4)]), g.scalar(0.01)])
    middle = g.node("Add", [g.node("Mul", [x, g.scalar(0.125)]), g.scalar(0.5)])
    high = g.node("Add", [g.node("Mul", [g.node("Sub", [x, g.scalar(4)]), g.scalar(0.01)]),
                          g.scalar(1)])
    y = g.where(g.node("Less", [x, g.scalar(-4)]), low, middle)
    return g.where(g.node("Greater", [x, g.scalar(4)]), high, y)


def _lhtan(g: Graph, x: str) -> str:
    # .001x below 0, x on [0, 1], 1 + .001(x − 1) above 1
    y = g.where(g.node("Less", [x, g.scalar(0)]), g.node("Mul", [x, g.scalar(0.001)]), x)
    high = g.node("Add", [g.node("Mul", [g.node("Sub", [x, g.scalar(1)]), g.scalar(0.001)]),
                          g.scalar(1)])
    return g.where(g.node("Greater", [x, g.scalar(1)]), high, y)


def _stair(g: Graph, x: str) -> str:
    # n = floor(x): floor(x/2), plus x − n where n is odd
    n = g.node("Floor", [x])
    odd = g.node("Not", [g.node("Equal", [g.node("Mod", [n, g.scalar(2)], fmod=1),
                                          g.scalar(0)])])
    half = g.node("Floor", [g.node("Div", [x, g.scalar(2)])])
    rise = g.where(odd, g.node("Sub", [x, n]), g.scalar(0))
    return g.node("Add", [half, rise])


def _mish(g: Graph, x: str) -> str:
    # x·tanh(softplus(x)): opset 18's Mish, composed before it (the same function: darkbp's
    # softplus threshold 20 changes no float32 bit, tanh(softplus(20)) = 1 there)
    if g.opset >= 18:
        return g.node("Mish", [x])
    return g.node("Mul", [x, g.node("Tanh", [g.node("Softplus", [x])])])


def _gelu(g: Graph, x: str) -> str:
    # x·(1 + tanh(u))/2 = x/(1 + e^{−2u}), u = .797885x + .035677x³ (AlexeyAB's constants,
    # not opset 20's Gelu's √(2/π) and .044715·√(2/π)); Exp, not Sigmoid: see swish
    cube = g.node("Mul", [g.node("Mul", [x, x]), g.scalar(2 * 0.035677)])
    minus_2u = g.node("Mul", [x, g.node("Add", [cube, g.scalar(2 * 0.797885)])])
    return g.node("Div", [x, g.node("Add", [g.node("Exp", [g.node("Neg", [minus_2u])]),
                                            g.scalar(1)])])


def _normalize_channels(g: Graph, x: str) -> str:
    # relu(x)/(1e-4 + Σ_c relu(x))
    r = g.node("Relu", [x])
    return g.node("Div", [r, g.node("Add", [g.channel_reduce("ReduceSum", r),
                                            g.scalar(NORM_EPS)])])


def _channel_softmax(g: Graph, x: str, maxval: bool) -> str:
    # e^{x−m}/(1e-4·(maxval ? 1 : e^{−m}) + Σ_c e^{x−m}), m the channels' max
    m = g.channel_reduce("ReduceMax", x)
    e = g.node("Exp", [g.node("Sub", [x, m])])
    eps = g.scalar(NORM_EPS)
    if not maxval:
        eps = g.node("Mul", [eps, g.node("Exp", [g.node("Neg", [m])])])
    return g.node("Div", [e, g.node("Add", [g.channel_reduce("ReduceSum", e), eps])])


_ACTIVATIONS = {
    "linear": lambda g, x: x,
    "logistic": lambda g, x: g.node("Sigmoid", [x]),
    "loggy": lambda g, x: g.node("Sub", [g.node("Mul", [g.node("Sigmoid", [x]), g.scalar(2)]),
                                         g.scalar(1)]),
    "relu": lambda g, x: g.node("Relu", [x]),
    "elu": lambda g, x: g.node("Elu", [x], alpha=1.0),
    "selu": lambda g, x: g.node("Selu", [x], alpha=SELU_ALPHA, gamma=SELU_LAMBDA),
    "relie": lambda g, x: g.node("LeakyRelu", [x], alpha=0.01),
    "ramp": lambda g, x: g.node("Max", [g.node("Mul", [x, g.scalar(1.1)]),
                                        g.node("Mul", [x, g.scalar(0.1)])]),
    "leaky": lambda g, x: g.node("LeakyRelu", [x], alpha=0.1),
    "tanh": lambda g, x: g.node("Tanh", [x]),
    "plse": _plse,
    "stair": _stair,
    "hardtan": lambda g, x: g.node("Clip", [x, g.scalar(-1), g.scalar(1)]),
    "lhtan": _lhtan,
    "mish": _mish,
    # x/(1 + e^{−x}): onnxruntime's Sigmoid loses its relative digits below about −10 (5%
    # at −16), which x·Sigmoid(x) would scale up by |x|
    "swish": lambda g, x: g.node("Div", [x, g.node("Add", [g.node("Exp", [g.node("Neg", [x])]),
                                                            g.scalar(1)])]),
    # x·clip(x/2 + 1, 0, 1): x above 0, x²/2 + x on (−2, 0], 0 below
    "hard_mish": lambda g, x: g.node("Mul", [x, g.node("HardSigmoid", [x], alpha=0.5, beta=1.0)]),
    "gelu": _gelu,
    "relu6": lambda g, x: g.node("Clip", [x, g.scalar(0), g.scalar(6)]),
    "revleaky": lambda g, x: g.node("LeakyRelu", [x], alpha=0.1),
    "normalize_channels": _normalize_channels,
    "normalize_channels_softmax": lambda g, x: _channel_softmax(g, x, maxval=False),
    "normalize_channels_softmax_maxval": lambda g, x: _channel_softmax(g, x, maxval=True),
}


# ---------------------------------------------------------------------- the model
def check_exportable(network: Network) -> None:
    """The refusal (a DarkbpError naming the section and line) of the first layer darkbp only
    tabulates: such a network has no inference to export. Needs no parameters."""
    for layer in network.layers:
        if not layer.runnable:
            Layer.to_onnx(layer, Graph(network.file), [])


def onnx_model(network: Network, opset: int = DEFAULT_OPSET, batch: int | None = None,
               weights: str | None = None):
    """The network's inference as a checked onnx.ModelProto; batch None: a dynamic batch "N".

    The network's parameters must be allocated (initialised or loaded). weights: the name
    of the .weights file they came from, recorded in the metadata. A DarkbpError naming the
    section and line for a layer that cannot be exported (one darkbp only tabulates).
    """
    onnx = _onnx()
    check_opset(opset)
    check_exportable(network)
    if network.dtype is None:
        raise DarkbpError("the network has no parameters yet: initialise it or load weights",
                          file=network.file)
    graph = Graph(network.file, opset)
    c, h, w = network.input_shape
    image = bool(network.config.height and network.config.width and network.config.channels)
    n = batch if batch is not None else "N"
    x = "input" if image else graph.as_image("input")
    names: list[str] = []
    for layer in network.layers:
        graph.begin(layer)
        inputs = [x if source == INPUT else names[source] for source in layer.sources]
        names.append(layer.to_onnx(graph, inputs))

    tensor = onnx.TensorProto.FLOAT
    model_input = onnx.helper.make_tensor_value_info(
        "input", tensor, [n, c, h, w] if image else [n, c],
        "images (N, channels, height, width)" if image else "vectors (N, inputs)")
    if network.heads:
        model_outputs = [onnx.helper.make_tensor_value_info(
            names[head.index], tensor, [n, *head.out_shape], _head_doc(head))
            for head in network.heads]
    else:
        graph.prefix = "output"
        graph.node("Flatten", [names[-1]], output="output", axis=1)
        model_outputs = [onnx.helper.make_tensor_value_info(
            "output", tensor, [n, network.outputs],
            f"the last layer's output, [{network.layers[-1].header}]: what darkbp's "
            f"network.forward returns")]
    # Every other layer's output with darkbp's shape: onnx.checker's shape inference checks
    # them, and a viewer shows them. (A layer passing its input on, [dropout], shares its
    # tensor; a head's is a model output.)
    described = {x, *(value.name for value in model_outputs)}
    layer_outputs = {}
    for layer, name in zip(network.layers, names):
        if name not in described and name not in layer_outputs:
            layer_outputs[name] = onnx.helper.make_tensor_value_info(
                name, tensor, [n, *layer.out_shape],
                f"layer {layer.index}, [{layer.header}] at line {layer.line} of the cfg")
    body = onnx.helper.make_graph(graph.nodes, network.name, [model_input], model_outputs,
                                  graph.initializers, value_info=list(layer_outputs.values()))
    model = onnx.helper.make_model(body, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                   producer_name="darkbp", producer_version=__version__,
                                   doc_string=f"{Path(network.file).name}, exported by darkbp")
    # The oldest IR version that holds this opset: runtimes older than the onnx package load it.
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    props = {"cfg": Path(network.file).name, "darkbp_version": __version__}
    if weights is not None:
        props["weights"] = Path(weights).name
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(network: Network, path: str | os.PathLike, opset: int = DEFAULT_OPSET,
                batch: int | None = None, weights: str | None = None):
    """Write `onnx_model(network, ...)` to `path` atomically; returns the model."""
    model = onnx_model(network, opset, batch, weights)
    atomic_write(path, lambda f: f.write(model.SerializeToString()))
    return model
