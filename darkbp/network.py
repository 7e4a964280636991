"""A network: the [net] settings and a graph of layers, built from a cfg; forward and backward.

`parse_network("net.cfg")` reads the cfg, checks every option and shape the way
Darknet defines them (with clear errors where Darknet would crash or silently
do something else) and returns a `Network` whose layers know their input and
output shapes. Parameters are allocated only by `Network.initialize`, so a
summary of a large cfg costs nothing.

The network is a graph of indexes: layer i reads the outputs listed in its
`sources` (earlier layers, or INPUT). A pass keeps each output until its last
reader has run. Backward visits the layers in reverse and adds each input
gradient into its source's, so an output read by several layers gets the sum.
The last layer is the cost (a [softmax] or a [cost]); a detector's are its heads.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from darkbp.cfg import DARKNET_SECTIONS, CfgWarning, Section, read_cfg
from darkbp.errors import DarkbpError
from darkbp.layers import REGISTRY
from darkbp.layers.base import INPUT, Input, Layer, grad_name
from darkbp.passes import EVAL, Pass
from darkbp.schedule import Schedule

# The training augmentation's keys (darkbp.augment): pjreddie's, and AlexeyAB's `flip`.
AUGMENT_OPTIONS = ("min_crop", "max_crop", "angle", "aspect", "saturation", "exposure", "hue",
                   "flip")
# The [net] options darkbp implements, and those Darknet knows that darkbp ignores. Darknet's
# classifier training never passes `center` to its loader (pjreddie's train_classifier
# leaves args.center 0; AlexeyAB's loader has no such argument), so it stays ignored here.
NET_OPTIONS = frozenset({
    "batch", "subdivisions", "width", "height", "channels", "inputs", "learning_rate",
    "momentum", "decay", "policy", "step", "scale", "steps", "scales", "gamma", "power",
    "burn_in", "max_batches", "ema", *AUGMENT_OPTIONS,
    # AlexeyAB's: the sgdr policy, Adam, classifier label smoothing.
    "sgdr_cycle", "sgdr_mult", "learning_rate_min", "adam", "B1", "B2", "eps",
    "label_smooth_eps",
})
NET_IGNORED = frozenset({
    "time_steps", "notruth", "random", "max_ratio", "min_ratio", "center", "clip",
})
ADAM_OPTIONS = ("B1", "B2", "eps")


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
    # AlexeyAB's adam=1 (darkbp.adam): its moments' decay rates and epsilon, its defaults.
    adam: bool = False
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    # AlexeyAB's classifier targets: 1 − eps for the label, eps / (classes − 1) elsewhere.
    label_smooth_eps: float = 0.0
    schedule: Schedule = field(default_factory=Schedule)   # learning rate, policy, max_batches
    # The training augmentation (darkbp.augment), Darknet's defaults: crops of min_crop to
    # max_crop pixels (width to 2·width), angle in degrees, the 50% flip (AlexeyAB's flip=0
    # turns it off); augment_keys are those the cfg gives.
    min_crop: int = 0
    max_crop: int = 0
    angle: float = 0.0
    aspect: float = 1.0
    saturation: float = 1.0
    exposure: float = 1.0
    hue: float = 0.0
    flip: bool = True
    augment_keys: tuple[str, ...] = ()
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
    sections: list[Section] = field(default_factory=list, repr=False)   # the cfg, for resize

    def __post_init__(self):
        # last_reader[i]: the last layer that reads output i (the final output: past the end).
        self.last_reader = [len(self.layers)] * len(self.layers)
        for layer in self.layers:
            for source in layer.sources:
                if source != INPUT:
                    self.last_reader[source] = layer.index

    @property
    def name(self) -> str:
        return Path(self.file).stem

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.config.input_shape

    @property
    def outputs(self) -> int:
        return self.layers[-1].outputs

    def resize(self, width: int, height: int) -> None:
        """Darknet's resize_network: the input becomes width x height. Every layer's shapes
        are recomputed from the cfg as if it had said this size; its parameters, gradients
        and state stay the same arrays (an optimiser's and EMA's hold on them stays good).

        A DarkbpError when the cfg can not take that size (a layer whose parameters depend
        on it, as [connected]'s do, or shapes that no longer fit); the network is then as
        it was.
        """
        config = self.config
        if (width, height) == (config.width, config.height):
            return
        config = dataclasses.replace(config, width=width, height=height,
                                     inputs=width * height * config.channels)
        try:
            layers = _build_layers(self.sections, config, self.file, [])
        except DarkbpError as error:
            raise DarkbpError(f"at {width} x {height} input: {error.message}", file=error.file,
                              line=error.line) from None
        for old, new in zip(self.layers, layers):
            if new.param_shapes() != old.param_shapes():
                raise DarkbpError(f"[{old.header}] has parameters whose shape depends on the "
                                  f"input size: the network can not take {width} x {height} "
                                  f"input", file=self.file, line=old.line)
        for old, new in zip(self.layers, layers):
            arrays = {*old.param_names, *map(grad_name, old.param_names), *old.state_names}
            kept = {name: value for name, value in vars(old).items() if name in arrays}
            vars(old).clear()
            vars(old).update(vars(new), **kept)
        self.config = config

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

    def forward(self, x: np.ndarray, ctx: Pass = EVAL) -> np.ndarray:
        """x: (N, C, H, W) (or (N, inputs)) -> the last layer's output, (N, outputs)."""
        y = self.run(x, ctx)[-1]
        return y.reshape(y.shape[0], -1)

    def run(self, x: np.ndarray, ctx: Pass = EVAL, start: int = 0,
            outputs: list | None = None, keep: bool = False) -> list:
        """The pass from layer `start` on; `outputs` holds what earlier layers gave.

        Returns the list of layer outputs: each is dropped once its last reader has run,
        unless `keep` (gradcheck restarts a pass part-way, from kept outputs).
        """
        x = np.ascontiguousarray(x, dtype=self.dtype).reshape((x.shape[0],) + self.input_shape)
        if ctx.train:
            self.check_batch_statistics(x.shape[0] if ctx.images is None else ctx.images)
        outputs = list(outputs or [])
        outputs += [None] * (len(self.layers) - len(outputs))
        for i in range(start, len(self.layers)):
            layer = self.layers[i]
            xs = [x if source == INPUT else outputs[source] for source in layer.sources]
            outputs[i] = layer.forward(xs[0] if layer.arity == 1 else xs, ctx)
            if not keep:
                for source in layer.sources:
                    if source != INPUT and self.last_reader[source] == i:
                        outputs[source] = None
        return outputs

    def cost(self, truth) -> np.ndarray:
        """Per-image cost of the last forward pass: truth (N, outputs) for a classifier, a
        darkbp.ops.detection.Truth for a detector (the sum of its heads' losses)."""
        if self.heads:
            return sum(head.cost(truth) for head in self.heads)
        return self.cost_layer().cost(np.asarray(truth, dtype=self.dtype))

    def backward(self, truth, input_grad: bool = False) -> np.ndarray | None:
        """Add d(Σ_images cost)/d(parameter) into every layer's gradients.

        Returns the gradient with respect to the input when `input_grad` is set
        (gradcheck); training skips that work in the layers that read the input.
        """
        grads: dict[int, np.ndarray] = {}
        owned: set[int] = set()              # gradients this pass allocated: safe to add into

        def add(source: int, dx) -> None:
            if dx is None:
                return
            if source not in grads:
                grads[source] = dx           # a layer's own array: not ours to write into
            elif source in owned:
                grads[source] += dx
            else:
                grads[source] = grads[source] + dx
                owned.add(source)

        cost_layers = self.cost_layers()
        for cost_layer in cost_layers:
            add(cost_layer.sources[0], cost_layer.input_grad(
                truth if cost_layer.detects else np.asarray(truth, dtype=self.dtype)))
        for layer in reversed(self.layers):
            if layer in cost_layers:
                continue
            dy = grads.pop(layer.index, None)
            if dy is None:                   # the output does not reach the cost
                continue
            need_dx = input_grad or any(source != INPUT for source in layer.sources)
            dxs = layer.backward(dy, need_dx)
            layer.drop_backward_cache()
            if need_dx:
                for source, dx in zip(layer.sources, [dxs] if layer.arity == 1 else dxs):
                    add(source, dx)
        return grads.get(INPUT)

    def check_batch_statistics(self, images: int) -> None:
        for layer in self.layers:
            values = layer.values_per_channel(images)
            if layer.batch_statistics and values < 2:
                raise DarkbpError(f"[{layer.header}] with batch normalisation needs at least 2 "
                                  f"values per channel in a forward pass, but "
                                  f"a batch of {images} gives {values}: use more images per pass",
                                  file=self.file, line=layer.line)

    def zero_grads(self) -> None:
        for layer in self.layers:
            layer.zero_grads()

    def check_runnable(self) -> None:
        """A DarkbpError unless darkbp can run every layer (not only tabulate it)."""
        for layer in self.layers:
            if not layer.runnable:
                raise DarkbpError(f"[{layer.header}] can only be tabulated: darkbp does not "
                                  "run this section", file=self.file, line=layer.line)

    def check_classifier(self, command: str) -> None:
        """A DarkbpError unless darkbp can run every layer and none is a detection head,
        which `command` (predict, eval) does not decode: it points to detect and map."""
        self.check_runnable()
        for head in self.heads:
            raise DarkbpError(f"[{head.header}] is a detection head: darkbp {command} is for "
                              "classifiers; use darkbp detect (or darkbp map) for a "
                              "detector", file=self.file, line=head.line)

    def check_trainable(self) -> None:
        """A DarkbpError unless darkbp can train every layer and the last one is a cost."""
        self.check_runnable()
        for head in self.heads:
            reason = head.training_refusal()
            if reason:
                raise DarkbpError(f"[{head.header}] {reason}", file=self.file, line=head.line)
        for layer in self.layers:
            if not layer.trainable:
                raise DarkbpError(f"[{layer.header}] can not be trained", file=self.file,
                                  line=layer.line)
        self.cost_layers()

    @property
    def heads(self) -> list[Layer]:
        """The detection heads ([yolo], [region], [detection]), in order."""
        return [layer for layer in self.layers if layer.detects]

    def cost_layers(self) -> list[Layer]:
        """The layers whose cost training descends: a detector's heads (Darknet's cost is
        their mean, darkbp's loss their sum), else the last layer."""
        return self.heads or [self.cost_layer()]

    def cost_layer(self) -> Layer:
        last = self.layers[-1] if self.layers else None
        if last is None or not last.is_cost:
            raise DarkbpError("training, gradcheck and eval need a [softmax] or a [cost] as the "
                              "last layer", file=self.file)
        return last


def parse_network(path: str | Path) -> Network:
    """Read a cfg file and build its network (shapes only; see `Network.initialize`)."""
    return build_network(read_cfg(path), str(path))


def build_network(sections: list[Section], file: str) -> Network:
    config = _parse_net(sections[0])
    warnings = sections[0].warnings(NET_OPTIONS, NET_IGNORED) + _unused(sections[0], config)
    layers = _build_layers(sections, config, file, warnings)
    if config.label_smooth_eps and any(layer.detects for layer in layers):
        warnings.append(CfgWarning(file, sections[0].line_of("label_smooth_eps"),
                                   "[net] option 'label_smooth_eps' smooths a classifier's "
                                   "targets; it has no effect on a detector's"))
    return Network(config=config, layers=layers, file=file, warnings=warnings,
                   sections=sections)


def _unused(s: Section, config: NetConfig) -> list[CfgWarning]:
    """Warnings for [net] options that the other options make unused: B1, B2 and eps
    without adam=1 (AlexeyAB reads them only then), steps and scales with policy=sgdr
    (AlexeyAB's sgdr reads them but does not use them)."""
    unused = {key: "has no effect without adam=1" for key in ADAM_OPTIONS if not config.adam}
    if config.schedule.policy == "sgdr":
        unused.update(steps="is not used by policy=sgdr", scales="is not used by policy=sgdr")
    return [CfgWarning(s.file, s.line_of(key), f"[net] option '{key}' {why}")
            for key, why in unused.items() if key in s.options]


def _build_layers(sections: list[Section], config: NetConfig, file: str,
                  warnings: list[CfgWarning]) -> list[Layer]:
    """The layers of sections[1:] for an input of config's shape; their warnings are added
    to `warnings`."""
    net_input = Input(INPUT, config.input_shape, not (config.height and config.width
                                                      and config.channels), "net")
    layers: list[Layer] = []
    for index, section in enumerate(sections[1:]):
        cls = _layer_class(section)
        sources = cls.read_sources(section, index)
        for source in sources:
            if not INPUT <= source < index:
                raise section.error(f"reads layer {source}, which is not an earlier layer "
                                    f"(this is layer {index})")
        inputs = [net_input if source == INPUT else
                  Input(source, layers[source].out_shape, layers[source].flat,
                        layers[source].header, layers[source]) for source in sources]
        layer = cls.build(section, inputs)
        layer.index, layer.line, layer.header, layer.sources = (index, section.line,
                                                               section.header, sources)
        layers.append(layer)
        warnings.extend(section.warnings(cls.options, cls.ignored))
        warnings.extend(CfgWarning(file, section.line, f"[{section.header}] {advice}")
                        for advice in layer.advice)
    if not layers:
        raise DarkbpError("the cfg has a [net] section but no layers", file=file,
                          line=sections[0].line)
    for layer in layers[:-1]:
        if layer.must_be_last:
            raise DarkbpError(f"[{layer.header}] must be the last section",
                              file=file, line=layer.line, section=layer.header)
    return layers


def _layer_class(section: Section) -> type[Layer]:
    header = section.header
    cls = REGISTRY.get(header)
    if cls is not None:
        return cls
    supported = ", ".join(f"[{name}]" for name in ("net", *sorted({c.sections[0] for c in
                                                                      REGISTRY.values()})))
    if header in DARKNET_SECTIONS:
        message = (f"[{header}] is a Darknet section that darkbp does not support yet "
                   f"(supported: {supported})")
    else:
        message = f"unknown section [{header}] (supported: {supported})"
        close = difflib.get_close_matches(header, sorted({*REGISTRY, "net"}), n=1)
        if close:
            message += f"; did you mean [{close[0]}]?"
    raise DarkbpError(message, file=section.file, line=section.line)


def _parse_augment(s: Section, config: NetConfig) -> None:
    """The augmentation keys, with Darknet's defaults (pjreddie's parse_net_options).

    Values Darknet reads meaningfully are taken as it takes them: min_crop > max_crop
    (rand_int swaps them), a negative angle or hue (rand_uniform swaps the bounds: the
    same as their size), aspect, saturation or exposure below 1 (rand_scale(s) then
    draws from [s, 1/s], as rand_scale(1/s)). Values with which Darknet divides by zero
    or computes no image are errors: crops below 1 pixel (a scale of 0), aspect,
    saturation or exposure of 0 or less (1/0, negative pixels), a hue beyond ±1 (the one
    wrap of distort_image leaves it outside the colour circle).
    """
    config.min_crop = s.get_int("min_crop", config.width, minimum=1)
    config.max_crop = s.get_int("max_crop", 2 * config.width, minimum=1)
    config.angle = s.get_float("angle", 0.0)
    config.aspect = s.get_float("aspect", 1.0, positive=True)
    config.saturation = s.get_float("saturation", 1.0, positive=True)
    config.exposure = s.get_float("exposure", 1.0, positive=True)
    config.hue = s.get_float("hue", 0.0)
    if abs(config.hue) > 1:
        raise s.error(f"'hue' must be between -1 and 1 (a fraction of the colour circle), "
                      f"got {config.hue:g}", s.line_of("hue"))
    config.flip = bool(s.get_int("flip", 1, minimum=0))
    config.augment_keys = tuple(key for key in AUGMENT_OPTIONS if key in s.options)


def _parse_alexeyab(s: Section, config: NetConfig) -> None:
    """adam (with B1, B2, eps, read only with adam=1, as AlexeyAB's parser does) and
    label_smooth_eps, with AlexeyAB's defaults. Values with which Adam divides by zero
    (B1 or B2 of 1 or more: 1 − B^t = 0; eps 0 where a moment is 0) are errors, as is a
    smoothing that would not leave the label the largest target."""
    adam = s.get_int("adam", 0, minimum=0)
    if adam > 1:
        raise s.error(f"'adam' must be 0 or 1, got {adam}", s.line_of("adam"))
    config.adam = bool(adam)
    if config.adam:
        config.b1 = s.get_float("B1", 0.9, minimum=0)
        config.b2 = s.get_float("B2", 0.999, minimum=0)
        config.eps = s.get_float("eps", 1e-6, positive=True)
        for key, value in (("B1", config.b1), ("B2", config.b2)):
            if value >= 1:
                raise s.error(f"'{key}' must be below 1, got {value:g}", s.line_of(key))
    config.label_smooth_eps = s.get_float("label_smooth_eps", 0.0, minimum=0)
    if config.label_smooth_eps >= 1:
        raise s.error(f"'label_smooth_eps' must be below 1, got {config.label_smooth_eps:g}",
                      s.line_of("label_smooth_eps"))


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
    _parse_augment(s, config)
    _parse_alexeyab(s, config)
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
            sgdr_cycle=s.get_int("sgdr_cycle", 0, minimum=1),
            sgdr_mult=s.get_int("sgdr_mult", 2, minimum=1),
            learning_rate_min=s.get_float("learning_rate_min", 1e-5, minimum=0),
        )
    except DarkbpError as error:
        if error.file is not None:      # a bad value, already located by the section
            raise
        raise s.error(error.message, s.line_of("policy")) from None
    return config
