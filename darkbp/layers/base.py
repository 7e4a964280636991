"""What every layer type has, and the registry of layer types.

A layer type is one module in `darkbp/layers/` holding one class, registered
with `@register`. The class says everything about its type, so that the cfg
reader, the summary, the `.weights` reader and writer, gradcheck and the
worker processes never name a layer type:

    sections        its section names, canonical first, then Darknet's aliases
    options         the options it reads; `ignored`: those Darknet reads and darkbp does not
    read_sources    which earlier outputs it reads (default: the previous layer's)
    build           its options and shape rule, from a cfg section and its inputs' shapes
    darknet_line    its line in Darknet's layer table (alexeyab_line: in AlexeyAB's fork's)
    param_names     its parameters, and `state_names` its other saved arrays
    weights_order   its arrays in the order Darknet's `.weights` files store them
    forward/backward, beside each other
    to_onnx         its inference as ONNX nodes (darkbp/export.py), for `darkbp export`

A layer's parameters are attributes named after Darknet (`biases`, `scales`,
`weights`); each has its gradient in `<singular>_grads` (`bias_grads`, ...),
so optimisers, EMA, gradcheck and the weights reader walk them generically.
Batch-norm rolling statistics are state, not parameters.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from darkbp.cfg import Section
from darkbp.errors import DarkbpError
from darkbp.ops.activations import ACTIVATIONS

INPUT = -1                     # the index of the network input among the layers' sources

# Options Darknet reads in every layer section (parse_network_cfg), unused by darkbp.
COMMON_IGNORED = frozenset({
    "onlyforward", "stopbackward", "dontsave", "dontload", "numload",
    "dontloadscales", "learning_rate", "smooth", "truth",
})

REGISTRY: dict[str, type["Layer"]] = {}      # section name or alias -> layer class


def register(cls: type["Layer"]) -> type["Layer"]:
    """Class decorator: make the layer type known under each of its section names."""
    for name in cls.sections:
        if name in REGISTRY:
            raise ValueError(f"section [{name}] is registered twice")
        REGISTRY[name] = cls
    return cls


def grad_name(param: str) -> str:
    """'biases' -> 'bias_grads', 'weights' -> 'weight_grads', 'scales' -> 'scale_grads'."""
    singular = param[:-2] if param.endswith("ses") else param[:-1]
    return singular + "_grads"


def read_activation(section: Section) -> str:
    """The section's `activation`, Darknet's default logistic (not linear)."""
    name = section.get_str("activation", "logistic")
    if name not in ACTIVATIONS:
        raise section.error(f"unknown activation '{name}' (one of: {', '.join(ACTIVATIONS)})",
                            section.line_of("activation"))
    return name


def c_float(value: float) -> float:
    """`value` as a C float holds it: Darknet stores l.bflops and options in float, and
    printf's %f rounds that value (np.float32 rounds to nearest, as a C assignment does)."""
    return float(np.float32(value))


def earlier_layer(section: Section, key: str, written: int, index: int, what: str) -> int:
    """The absolute index of `written` (negative: relative to this layer, `index`), as Darknet
    reads `from` and `layers`; an error at the option's line unless it names an earlier layer.
    what: how the message names the value ("from=-3", "'layers' entry -3")."""
    source = index + written if written < 0 else written
    if source == index:
        problem = f"is this layer itself (layer {index})"
    elif source > index:
        problem = f"is layer {source}, after this one (layer {index})"
    elif source < 0:
        problem = f"points before the first layer ({index} - {-written} = {source})"
    else:
        return source
    raise section.error(f"{what} {problem}: [{section.header}] reads the output of an "
                        f"earlier layer", section.line_of(key))


class AlexeyabStops(Exception):
    """Raised by `alexeyab_line` where AlexeyAB's Darknet dies while it parses this layer (an
    assertion): `printed` is what it printed for the layer before dying, `reason` says why and
    `rule` what darkbp does there instead, for the user. The summary ends AlexeyAB's table
    there (summary.alexeyab_table, which also raises none but makes one for its totals)."""

    def __init__(self, printed: str, reason: str, rule: str):
        super().__init__(reason)
        self.printed, self.reason, self.rule = printed, reason, rule
        self.where = ""                 # "layer 17 [shortcut] (line 149)": set by the summary

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" if self.where else self.reason


class Input(NamedTuple):
    """What a layer being built knows of one of its inputs."""

    index: int                      # a layer index, or INPUT
    shape: tuple[int, int, int]     # (C, H, W) per image
    flat: bool                      # a vector (a [connected] or [softmax] output), not an image
    header: str                     # the section header that made it ("net" for the input)
    layer: "Layer | None" = None    # the layer itself (None for the input): for a layer that
                                    # reads another's settings ([contrastive] its [yolo]'s)


class Layer:
    """Base class. Shapes are per image, (channels, height, width); a flat layer is (n, 1, 1).

    forward(x, ctx) -> y caches what backward needs (ctx: darkbp.passes.Pass);
    backward(dy, need_dx) -> dx *adds* this pass's gradients into the `*_grads`
    arrays (Darknet accumulates over subdivisions; `zero_grads` clears them
    after an update). A layer with several inputs (`arity` None) takes a list
    and returns a list, one gradient per input; the arrays it returns must not
    share memory with each other. backward may overwrite dy, and x must stay
    unchanged until backward. Arrays may be (N, C, H, W) views stored in any
    layout (ops/layout.py).
    """

    sections: tuple[str, ...] = ()
    options: frozenset[str] = frozenset()
    ignored: frozenset[str] = COMMON_IGNORED
    param_names: tuple[str, ...] = ()
    state_names: tuple[str, ...] = ()
    transposed: tuple[str, ...] = ()   # arrays Darknet's files with major or minor > 1000 transpose
    tied: tuple[str, ...] = ()         # parameters that start equal, where the forward has a
                                       # kink (a max over them): gradcheck spreads them apart
    arity: int | None = 1              # inputs; None: a list of any length
    flat: bool = False                 # its output is a vector: no convolution may follow
    is_cost: bool = False              # may end the network as its cost (softmax, cost)
    must_be_last: bool = False         # only as the last section ([cost])
    runnable: bool = True              # False: parsed and tabulated only (recurrent layers)
    trainable: bool = True             # False: darkbp can not train it
    detects: bool = False              # a detection head: `detect` decodes its output to boxes
    backward_cache: tuple[str, ...] = ()   # attributes forward keeps for backward alone
    fork_rule: str = ""                # which fork's rule darkbp follows where the two Darknets
                                       # build this section differently (the summary says it)

    # Set by the network builder.
    index: int = 0
    line: int = 0
    header: str = ""
    sources: tuple[int, ...] = (INPUT,)
    advice: tuple[str, ...] = ()       # warnings for the user about this layer, from build

    def __init__(self, in_shape: tuple[int, int, int], out_shape: tuple[int, int, int]):
        self.in_shape = tuple(int(v) for v in in_shape)
        self.out_shape = tuple(int(v) for v in out_shape)

    @property
    def type(self) -> str:
        return self.sections[0]

    # ------------------------------------------------------------------ building
    @classmethod
    def read_sources(cls, section: Section, index: int) -> tuple[int, ...]:
        """Absolute indexes of the outputs this layer reads (default: the previous one)."""
        return (index - 1,)

    @classmethod
    def build(cls, section: Section, inputs: list[Input]) -> "Layer":
        raise NotImplementedError

    @staticmethod
    def image_input(section: Section, source: Input) -> tuple[int, int, int]:
        """The (C, H, W) of an input that must be an image; an error at the section otherwise."""
        if source.flat:
            c, _, _ = source.shape
            raise section.error(f"[{section.header}] needs an image input, but the layer before "
                                f"it ([{source.header}]) outputs a flat vector of {c}")
        c, h, w = source.shape
        if not (c and h and w):
            raise section.error(f"[{section.header}] needs an image input (width, height and "
                                f"channels in [net]), got {w} x {h} x {c}")
        return source.shape

    # ------------------------------------------------------------------ describing
    @property
    def inputs(self) -> int:
        c, h, w = self.in_shape
        return c * h * w

    @property
    def outputs(self) -> int:
        c, h, w = self.out_shape
        return c * h * w

    @property
    def bflops(self) -> float:
        """Billions of floating-point operations of one forward pass of one image."""
        return 0.0

    def darknet_line(self) -> str:
        """Darknet's table line after the "%5d " index (SPEC section 4)."""
        raise NotImplementedError

    def alexeyab_line(self) -> str:
        """AlexeyAB's table line after its "%4d " index, with "\n": what its src/parser.c
        parse_<name> and src/<name>_layer.c make_<name>_layer print to stderr for this layer."""
        raise NotImplementedError

    @property
    def alexeyab_bflops(self) -> float:
        """AlexeyAB's l.bflops, which its Total BFLOPS sums: set by other layer types than
        pjreddie's (maxpool and shortcut have some, connected none); 0 where it sets none."""
        return 0.0

    @property
    def alexeyab_outputs(self) -> int:
        """AlexeyAB's l.outputs, which its avg_outputs averages: the output's size, unless the
        layer hides a second layer of AlexeyAB's behind it ([convolutional] antialiasing)."""
        return self.outputs

    def alexeyab_size(self, sizes: list[tuple[int, int]]) -> tuple[int, int]:
        """(l.w, l.h) of AlexeyAB's layer: its avg_outputs averages l.outputs over the layers
        whose l.w and l.h are both above 1. Most layer types hold the input's width and height
        there. sizes: this pair for every earlier layer, in order."""
        _, h, w = self.in_shape
        return w, h

    def describe(self) -> dict:
        """The options a reader of the summary wants to see, as plain data."""
        return {}

    def summary_cells(self) -> tuple[str, str, str]:
        """(type, filters, size) columns of the rich summary table, in Darknet's words."""
        return self.type, "", ""

    # ------------------------------------------------------------------ parameters
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of each parameter and state array, known before anything is allocated."""
        return {}

    def weights_order(self) -> tuple[str, ...]:
        """The arrays a `.weights` file holds for this layer, in its order."""
        return self.param_names + self.state_names

    def parameter_count(self) -> int:
        shapes = self.param_shapes()
        return sum(math.prod(shapes[name]) for name in self.param_names)

    def init_params(self, rng: np.random.Generator, dtype) -> None:
        """Allocate parameters (Darknet's initialisation), their gradients and state."""
        for name, shape in self.param_shapes().items():
            setattr(self, name, np.zeros(shape, dtype))
        self._init_values(rng)
        self.astype(dtype)

    def _init_values(self, rng: np.random.Generator) -> None:
        """Fill freshly zeroed arrays with their initial values (override where not zero)."""

    def parameters(self):
        """Yield (name, array, gradient array) for each parameter, in `.weights` order."""
        for name in self.param_names:
            yield name, getattr(self, name), getattr(self, grad_name(name))

    def zero_grads(self) -> None:
        for _, _, grad in self.parameters():
            grad.fill(0)

    def astype(self, dtype) -> None:
        """Convert parameters and state to `dtype`; gradients start again at zero."""
        for name in self.param_names:
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))
            setattr(self, grad_name(name), np.zeros_like(getattr(self, name)))
        for name in self.state_names:
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))

    # ------------------------------------------------------------------ passes
    @property
    def batch_statistics(self) -> bool:
        """Whether a training pass needs statistics over all its images (batch norm): a
        pass split into shards then sums them across shards (ctx.shards)."""
        return False

    def values_per_channel(self, images: int) -> int:
        """Values each batch statistic is taken over in a pass of `images` images."""
        _, h, w = self.out_shape
        return images * h * w

    def forward(self, x, ctx):
        raise NotImplementedError

    def backward(self, dy, need_dx: bool = True):
        raise NotImplementedError

    def drop_backward_cache(self) -> None:
        """Let go of what forward kept for backward (`backward_cache`), once backward has
        used it: a training step then holds each cache from the layer's forward to its
        backward only, not until the next step's forward replaces it."""
        for name in self.backward_cache:
            setattr(self, name, None)

    def margin(self, xs: list[np.ndarray]) -> float:
        """After a training forward of `xs`: how far its values are from a point where the
        layer's derivative jumps (gradcheck keeps central differences away from those)."""
        return math.inf

    # ------------------------------------------------------------------ export
    def to_onnx(self, graph, inputs: list[str]) -> str:
        """Write this layer's evaluation-mode forward into `graph` (darkbp/export.py's Graph),
        reading the tensors named `inputs` ((N, C, H, W) each, as `sources`); the name of its
        (N, *out_shape) output.  Layer types darkbp only tabulates keep this refusal."""
        raise DarkbpError(f"[{self.header}] can not be exported to ONNX: darkbp only tabulates "
                          f"this section, it does not run it", file=graph.file, line=self.line)

    # ------------------------------------------------------------------ as the cost (is_cost)
    def cost(self, truth: np.ndarray) -> np.ndarray:
        """Per-image cost (N,) of the last forward against truth (N, outputs)."""
        raise NotImplementedError

    def input_grad(self, truth: np.ndarray) -> np.ndarray:
        """d(Σ_images cost)/d(input) of the last forward, shaped (N, *in_shape)."""
        raise NotImplementedError

    def truth_groups(self) -> int:
        """How many one-hot groups a truth row has (gradcheck draws such truths)."""
        return 1
