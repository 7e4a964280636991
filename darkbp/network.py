"""A network: the [net] settings and the list of layers, built from a cfg; forward and backward.

`parse_network("net.cfg")` reads the cfg, checks every option and shape the way
Darknet defines them (with clear errors where Darknet would crash or silently
do something else) and returns a `Network` whose layers know their input and
output shapes. Parameters are allocated only by `Network.initialize`, so a
summary of a large cfg costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from darkbp.cfg import CfgWarning, Section, read_cfg
from darkbp.errors import DarkbpError
from darkbp.layers.base import Layer
from darkbp.layers.connected import ConnectedLayer
from darkbp.layers.convolutional import ConvolutionalLayer
from darkbp.layers.maxpool import MaxpoolLayer
from darkbp.layers.softmax import SoftmaxLayer
from darkbp.ops.activations import ACTIVATIONS
from darkbp.schedule import Schedule


@dataclass
class NetConfig:
    """The [net] section, with Darknet's defaults (SPEC section 2)."""

    batch: int = 1
    subdivisions: int = 1
    height: int = 0
    width: int = 0
    channels: int = 0
    inputs: int = 0
    momentum: float = 0.9
    decay: float = 0.0001
    ema: float = 0.0
    schedule: Schedule = field(default_factory=Schedule)   # learning rate, policy, max_batches
    line: int = 0

    @property
    def mini_batch(self) -> int:
        """Images per forward pass: Darknet divides batch by subdivisions."""
        return self.batch // self.subdivisions

    @property
    def input_shape(self) -> tuple[int, int, int]:
        if self.height and self.width and self.channels:
            return (self.channels, self.height, self.width)
        return (self.inputs, 1, 1)


@dataclass
class Network:
    """The parsed network. `layers[i].in_shape` / `.out_shape` are per image (C, H, W)."""

    config: NetConfig
    layers: list[Layer]
    file: str = ""
    warnings: list[CfgWarning] = field(default_factory=list)
    dtype: np.dtype | None = None

    @property
    def name(self) -> str:
        return Path(self.file).stem

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.config.input_shape

    @property
    def outputs(self) -> int:
        return self.layers[-1].outputs

    def initialize(self, seed: int | None = 0, dtype=np.float32) -> "Network":
        """Allocate and initialise every parameter as Darknet does (SPEC section 5)."""
        rng = np.random.default_rng(seed)
        for layer in self.layers:
            layer.init_params(rng, dtype)
        self.dtype = np.dtype(dtype)
        return self

    def astype(self, dtype) -> "Network":
        for layer in self.layers:
            layer.astype(dtype)
        self.dtype = np.dtype(dtype)
        return self

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """x: (N, C, H, W) (or (N, inputs)) -> the last layer's output, (N, outputs)."""
        y = np.ascontiguousarray(x, dtype=self.dtype).reshape((x.shape[0],) + self.input_shape)
        if train:
            self.check_batch_statistics(x.shape[0])
        for layer in self.layers:
            y = layer.forward(y, train)
        return y.reshape(y.shape[0], -1)

    def cost(self, truth: np.ndarray) -> np.ndarray:
        """Per-image cross-entropy of the last forward pass. truth: (N, outputs)."""
        return self.cost_layer().cost(truth)

    def backward(self, truth: np.ndarray, input_grad: bool = False) -> np.ndarray | None:
        """Add d(Σ_images cost)/d(parameter) into every layer's gradients.

        Returns the gradient with respect to the input when `input_grad` is set
        (gradcheck); training skips that work in the first layer.
        """
        cost_layer = self.cost_layer()
        self.layers[0].need_input_grad = input_grad
        dy = cost_layer.input_grad(np.asarray(truth, dtype=self.dtype))
        for layer in reversed(self.layers[:-1]):
            dy = layer.backward(dy)
        return dy

    def check_batch_statistics(self, images: int) -> None:
        for layer in self.layers:
            _, h, w = layer.out_shape
            if getattr(layer, "batch_normalize", False) and images * h * w < 2:
                raise DarkbpError(f"[{layer.type}] with batch_normalize=1 needs at least 2 values "
                                  f"per channel in a forward pass, but a batch of {images} gives "
                                  f"{images * h * w}: use more images per pass",
                                  file=self.file, line=layer.line)

    def zero_grads(self) -> None:
        for layer in self.layers:
            layer.zero_grads()

    def cost_layer(self) -> SoftmaxLayer:
        last = self.layers[-1] if self.layers else None
        if not isinstance(last, SoftmaxLayer):
            raise DarkbpError("training and gradcheck need a [softmax] as the last layer",
                              file=self.file)
        return last


def parse_network(path: str | Path) -> Network:
    """Read a cfg file and build its network (shapes only; see `Network.initialize`)."""
    return build_network(read_cfg(path), str(path))


def build_network(sections: list[Section], file: str) -> Network:
    config = _parse_net(sections[0])
    warnings = sections[0].warnings()
    layers: list[Layer] = []
    shape = config.input_shape
    for section in sections[1:]:
        layer = _BUILDERS[section.name](section, shape, layers[-1] if layers else None)
        layer.index = len(layers)
        layer.line = section.line
        layers.append(layer)
        warnings.extend(section.warnings())
        shape = layer.out_shape
    if not layers:
        raise DarkbpError("the cfg has a [net] section but no layers", file=file,
                          line=sections[0].line)
    return Network(config=config, layers=layers, file=file, warnings=warnings)


def _parse_net(section: Section) -> NetConfig:
    s = section
    config = NetConfig(
        batch=s.get_int("batch", 1, minimum=1),
        subdivisions=s.get_int("subdivisions", 1, minimum=1),
        height=s.get_int("height", 0, minimum=0),
        width=s.get_int("width", 0, minimum=0),
        channels=s.get_int("channels", 0, minimum=0),
        momentum=s.get_float("momentum", 0.9, minimum=0),
        decay=s.get_float("decay", 0.0001, minimum=0),
        ema=s.get_float("ema", 0.0, minimum=0),
        line=s.line,
    )
    config.inputs = s.get_int("inputs", config.height * config.width * config.channels,
                              minimum=0)
    if not config.inputs:
        raise s.error("no input size: set width, height and channels (or inputs)")
    if config.subdivisions > config.batch:
        raise s.error(f"subdivisions={config.subdivisions} is larger than batch={config.batch}",
                      s.line_of("subdivisions"))
    if config.ema >= 1:
        raise s.error(f"'ema' must be below 1, got {config.ema:g}", s.line_of("ema"))
    try:
        config.schedule = Schedule(
            learning_rate=s.get_float("learning_rate", 0.001, minimum=0),
            policy=s.get_str("policy", "constant"),
            step=s.get_int("step", 1, minimum=1),
            scale=s.get_float("scale", 1.0),
            steps=s.get_ints("steps"),
            scales=s.get_floats("scales"),
            gamma=s.get_float("gamma", 1.0),
            power=s.get_float("power", 4.0),
            burn_in=s.get_int("burn_in", 0, minimum=0),
            max_batches=s.get_int("max_batches", 0, minimum=0),
        )
    except DarkbpError as error:
        if error.file is not None:      # a bad value, already located by the section
            raise
        raise s.error(error.message, s.line_of("policy")) from None
    return config


def _activation(section: Section) -> str:
    name = section.get_str("activation", "logistic")   # Darknet's default, not linear
    if name not in ACTIVATIONS:
        raise section.error(f"unknown activation '{name}' (one of: {', '.join(ACTIVATIONS)})",
                            section.line_of("activation"))
    return name


def _needs_image(section: Section, shape, previous: Layer | None) -> None:
    if isinstance(previous, (ConnectedLayer, SoftmaxLayer)):
        raise section.error(f"[{section.header}] needs an image input, but the layer before it "
                            f"([{previous.type}]) outputs a flat vector of {previous.outputs}")
    c, h, w = shape
    if not (c and h and w):
        raise section.error(f"[{section.header}] needs an image input (width, height and "
                            f"channels in [net]), got {w} x {h} x {c}")


def _build_convolutional(s: Section, shape, previous) -> ConvolutionalLayer:
    _needs_image(s, shape, previous)
    c, h, w = shape
    filters = s.get_int("filters", 1, minimum=1)
    size = s.get_int("size", 1, minimum=1)
    stride = s.get_int("stride", 1, minimum=1)
    pad = s.get_int("pad", 0, minimum=0)
    padding = s.get_int("padding", 0, minimum=0)
    if pad:
        padding = size // 2                          # Darknet: pad=1 overrides padding
    groups = s.get_int("groups", 1, minimum=1)
    if c % groups:
        raise s.error(f"groups={groups} does not divide the {c} input channels", s.line_of("groups"))
    if filters % groups:
        raise s.error(f"groups={groups} does not divide filters={filters}", s.line_of("groups"))
    if h + 2 * padding < size or w + 2 * padding < size:
        raise s.error(f"a {size}x{size} kernel with padding {padding} does not fit the "
                      f"{w} x {h} input: the output would have no pixels")
    return ConvolutionalLayer(shape, filters=filters, size=size, stride=stride, padding=padding,
                              groups=groups, activation=_activation(s),
                              batch_normalize=s.get_int("batch_normalize", 0, minimum=0))


def _build_maxpool(s: Section, shape, previous) -> MaxpoolLayer:
    _needs_image(s, shape, previous)
    _, h, w = shape
    stride = s.get_int("stride", 1, minimum=1)
    size = s.get_int("size", stride, minimum=1)
    padding = s.get_int("padding", size - 1, minimum=0)
    if h + padding < size or w + padding < size:
        raise s.error(f"a {size}x{size} window with padding {padding} does not fit the "
                      f"{w} x {h} input: the output would have no pixels")
    return MaxpoolLayer(shape, size=size, stride=stride, padding=padding)


def _build_connected(s: Section, shape, previous) -> ConnectedLayer:
    return ConnectedLayer(shape, output=s.get_int("output", 1, minimum=1),
                          activation=_activation(s),
                          batch_normalize=s.get_int("batch_normalize", 0, minimum=0))


def _build_softmax(s: Section, shape, previous) -> SoftmaxLayer:
    c, h, w = shape
    groups = s.get_int("groups", 1, minimum=1)
    if (c * h * w) % groups:
        raise s.error(f"groups={groups} does not divide the {c * h * w} inputs",
                      s.line_of("groups"))
    return SoftmaxLayer(shape, groups=groups,
                        temperature=s.get_float("temperature", 1.0, positive=True))


_BUILDERS = {
    "convolutional": _build_convolutional,
    "maxpool": _build_maxpool,
    "connected": _build_connected,
    "softmax": _build_softmax,
}
