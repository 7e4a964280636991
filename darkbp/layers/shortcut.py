"""[shortcut]: activation(alpha·previous + beta·from), Darknet's residual connection, and
AlexeyAB's: the previous layer plus several `from` layers, with trained weights per input."""

from __future__ import annotations

import numpy as np

from darkbp.layers.base import (AlexeyabStops, Layer, c_float, earlier_layer, read_activation,
                                register)
from darkbp.ops.activations import ACTIVATIONS
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.shortcut import (mix_backward, mix_factors, mix_forward, mix_weights_grad,
                                 shortcut_backward, shortcut_forward, shortcut_plan)

# AlexeyAB's option values (parse_shortcut), with their aliases, and the numbers its table
# prints for them (wt = ..., wn = ...).
WEIGHTS_TYPES = {"none": "none", "per_feature": "per_feature", "per_layer": "per_feature",
                 "per_channel": "per_channel"}
NORMALIZATIONS = {"none": "none", "relu": "relu", "avg_relu": "relu", "softmax": "softmax"}
TYPE_CODES = {"none": 0, "per_feature": 1, "per_channel": 2}
NORMALIZATION_CODES = {"none": 0, "relu": 1, "softmax": 2}


@register
class ShortcutLayer(Layer):
    """[prev (N, C, H, W), src_1 (N, C1, H1, W1), ...] -> (N, C, H, W), prev being the
    previous layer's output and src_i the `from` layers' (from=-3, or AlexeyAB's from=-2,-4).

    pjreddie's form (one `from`, no weights_type): over the values shortcut_cpu pairs up
    (all of them when the shapes are equal; see ops/shortcut.py for a src of another size)
    z = alpha·prev + beta·src, elsewhere z = prev. The backward is the exact adjoint;
    Darknet's scales the gradient to prev by alpha at the unpaired values too.

    AlexeyAB's form (several `from`, or weights_type per_feature / per_channel):
    z = a_0·prev + Σ_i a_i·src_i, the factors a the `weights` (n+1, K), one row per input,
    prev first, K = 1 or C, normalised by weights_normalization (ops/shortcut.py). The
    weights start at 1, train as parameters and are saved as AlexeyAB saves them.

    The output is activation(z).
    """

    sections = ("shortcut",)
    options = frozenset({"from", "activation", "alpha", "beta", "weights_type",
                         "weights_normalization"})
    arity = None
    backward_cache = ("_z", "_y")

    def __init__(self, in_shape, from_shapes, sources, activation: str, alpha: float = 1.0,
                 beta: float = 1.0, flat: bool = False, weights_type: str = "none",
                 normalization: str = "none"):
        super().__init__(in_shape, in_shape)
        self.from_shapes = [tuple(int(v) for v in shape) for shape in from_shapes]
        self.sources_from = tuple(sources)
        self.activation, self.alpha, self.beta = activation, alpha, beta
        self.flat = flat
        self.weights_type, self.normalization = weights_type, normalization
        self.plans = [shortcut_plan(self.in_shape, shape) for shape in self.from_shapes]
        # pjreddie's sum unless AlexeyAB's options ask for the weighted one
        self.mixed = weights_type != "none" or len(self.from_shapes) > 1
        if weights_type != "none":
            self.param_names = ("weights",)
            if normalization == "softmax":
                self.tied = ("weights",)        # softmax subtracts their max: a kink at ties

    @property
    def from_shape(self):
        return self.from_shapes[0]

    @property
    def source(self) -> int:
        return self.sources_from[0]

    @classmethod
    def read_sources(cls, s, index):
        if "from" not in s.options:
            raise s.error("[shortcut] needs 'from': the earlier layer to add, e.g. from=-3")
        if "," not in s.get_str("from", ""):
            written = s.get_int("from", 0)
            return index - 1, earlier_layer(s, "from", written, index, f"from={written}")
        return (index - 1,) + tuple(
            earlier_layer(s, "from", written, index, f"'from' entry {written}")
            for written in s.get_ints("from"))

    @classmethod
    def build(cls, s, inputs):
        prev, *srcs = inputs
        c, h, w = prev.shape
        for src in srcs:
            c1, h1, w1 = src.shape
            if shortcut_plan(prev.shape, src.shape) is None:
                raise s.error(f"the 'from' layer {src.index} is {w1} x {h1} and the previous "
                              f"layer {w} x {h}: widths and heights must be the same "
                              f"whole-number ratio apart (Darknet's shortcut_cpu asserts it)",
                              s.line_of("from"))
        # Darknet's default activation here is linear, not the convolutions' logistic.
        activation = read_activation(s) if "activation" in s.options else "linear"
        weights_type = cls._choice(s, "weights_type", WEIGHTS_TYPES)
        normalization = cls._choice(s, "weights_normalization", NORMALIZATIONS)
        if (weights_type != "none" or len(srcs) > 1) and ({"alpha", "beta"} & s.options.keys()):
            key = "alpha" if "alpha" in s.options else "beta"
            raise s.error(f"'{key}' scales pjreddie's shortcut of one 'from' layer without "
                          f"weights_type; AlexeyAB's shortcut of several 'from' layers or with "
                          f"weights_type reads no alpha or beta", s.line_of(key))
        layer = cls(prev.shape, [src.shape for src in srcs], [src.index for src in srcs],
                    activation, alpha=s.get_float("alpha", 1.0), beta=s.get_float("beta", 1.0),
                    flat=prev.flat, weights_type=weights_type, normalization=normalization)
        if weights_type != "none" and normalization == "none":
            layer.advice = (f"weights_type={weights_type} with weights_normalization=none "
                            f"(also its default): AlexeyAB's parser refuses the pair; darkbp "
                            f"adds the inputs times the raw weights, as AlexeyAB's GPU code "
                            f"does",)
        elif weights_type == "none" and normalization != "none":
            layer.advice = (f"weights_normalization={normalization} without weights_type "
                            f"changes nothing: there are no weights to normalise",)
        return layer

    @staticmethod
    def _choice(s, key: str, names: dict[str, str]) -> str:
        written = s.get_str(key, "none")
        if written not in names:
            raise s.error(f"unknown {key} '{written}' (one of: {', '.join(names)})",
                          s.line_of(key))
        return names[written]

    # ------------------------------------------------------------------ parameters
    def param_shapes(self):
        if self.weights_type == "none":
            return {}
        per_input = self.out_shape[0] if self.weights_type == "per_channel" else 1
        return {"weights": (len(self.from_shapes) + 1, per_input)}

    def _init_values(self, rng):
        if self.weights_type != "none":
            self.weights.fill(1)                 # AlexeyAB's make_shortcut_layer: every weight 1

    def darknet_line(self):
        # pjreddie's line; several `from` layers are listed in its index field, comma-separated,
        # with the first one's size.
        c, h, w = self.out_shape
        fc, fh, fw = self.from_shape
        index = ",".join(str(source) for source in self.sources_from)
        return ("res  " + ("%3s" % index).ljust(19) + "%4d x%4d x%4d   ->  %4d x%4d x%4d\n"
                % (fw, fh, fc, w, h, c))

    def alexeyab_line(self):
        # make_shortcut_layer's line (AlexeyAB reads no alpha or beta), then for each `from`
        # layer parse_shortcut asserts it has this layer's width and height (AlexeyAB's
        # Darknet aborts otherwise) and prints both shapes when its channels differ.
        c, h, w = self.out_shape
        line = ("Shortcut Layer: " + "".join("%d, " % source for source in self.sources_from)
                + " wt = %d, wn = %d, outputs:%4d x%4d x%4d %5.3f BF\n"
                % (TYPE_CODES[self.weights_type], NORMALIZATION_CODES[self.normalization],
                   w, h, c, c_float(self.alexeyab_bflops)))
        for source, (fc, fh, fw) in zip(self.sources_from, self.from_shapes):
            if (fh, fw) != (h, w):
                raise AlexeyabStops(line, f"its parse_shortcut asserts that the 'from' layer "
                                          f"{source} ({fw} x {fh} x {fc}) has the width and "
                                          f"height of this layer's input ({w} x {h} x {c}), "
                                          f"and aborts",
                                    f"darkbp adds them as pjreddie's Darknet does (its "
                                    f"shortcut_cpu samples the larger one with a stride)")
            if fc != c:
                line += " (%4d x%4d x%4d) + (%4d x%4d x%4d) \n" % (w, h, c, fw, fh, fc)
        return line

    @property
    def alexeyab_bflops(self) -> float:
        """One addition per output value and input, two with weights:
        out_w·out_h·out_c·n (·2) / 1e9."""
        flops = self.outputs * len(self.from_shapes) / 1e9
        return 2 * flops if self.weights_type != "none" else flops

    def describe(self):
        described = {"from": self.source if len(self.sources_from) == 1 else
                     list(self.sources_from), "activation": self.activation}
        if self.mixed:
            return {**described, "weights_type": self.weights_type,
                    "weights_normalization": self.normalization}
        return {**described, "alpha": self.alpha, "beta": self.beta}

    def summary_cells(self):
        kind = f"res {self.activation}"
        if self.weights_type != "none":
            kind += f" {self.weights_type} {self.normalization}"
        return kind, "", "from " + ",".join(str(source) for source in self.sources_from)

    def _factors(self, dtype) -> np.ndarray:
        """Each input's factor (n+1, K): the normalised weights, or 1 without weights_type."""
        if self.weights_type == "none":
            return np.ones((len(self.from_shapes) + 1, 1), dtype)
        return mix_factors(self.weights, self.normalization)

    @kernel_buffers
    def forward(self, xs, ctx):
        prev, *srcs = xs
        if self.mixed:
            z = mix_forward(prev, srcs, self._factors(prev.dtype), self.plans)   # a new array
        else:
            z = shortcut_forward(prev, srcs[0], self.alpha, self.beta, self.plans[0])
        if not ctx.train:
            return ACTIVATIONS[self.activation].apply(z)
        self._z = z
        self._y = ACTIVATIONS[self.activation].forward(z)
        if self.mixed:
            self._xs = xs                       # the factors' gradient reads the inputs
        return self._y

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        dz = ACTIVATIONS[self.activation].backward_over(self._z, self._y, dy)   # dy is ours
        if not self.mixed:
            src_shape = (dz.shape[0],) + self.from_shape
            return list(shortcut_backward(dz, src_shape, self.alpha, self.beta, self.plans[0]))
        prev, *srcs = self._xs
        a = self._factors(dz.dtype)
        d_prev, d_srcs, g = mix_backward(dz, prev, srcs, a, self.plans)
        if self.weights_type != "none":
            self.weight_grads += mix_weights_grad(self.weights, a, g, self.normalization)
        self._xs = None
        return [d_prev, *d_srcs]

    def margin(self, xs):
        return ACTIVATIONS[self.activation].margin(self._z)

    def to_onnx(self, graph, inputs):
        prev, *srcs = inputs
        if not self.mixed:
            return graph.activation(self.activation, self._pjreddie_sum(graph, prev, srcs[0]))
        a = self._factors(np.float32)
        z = self._times(graph, prev, a[0], self.in_shape[0])
        for i, (src, plan) in enumerate(zip(srcs, self.plans), start=1):
            paired = self._times(graph, self._paired(graph, src, plan), a[i], plan.channels)
            z = graph.node("Add", [z, self._placed(graph, paired, plan)])
        return graph.activation(self.activation, z)

    def _times(self, graph, x: str, a_i: np.ndarray, channels: int) -> str:
        """x (N, channels, ...) times one input's factors a_i (K,): a scalar or per channel."""
        if self.weights_type == "none":
            return x
        if a_i.size == 1:
            return graph.node("Mul", [x, graph.scalar(float(a_i[0]))])
        return graph.node("Mul", [x, graph.constant(a_i[:channels].reshape(1, -1, 1, 1),
                                                    "factors")])

    @staticmethod
    def _paired(graph, src: str, plan) -> str:
        """The values of src the plan pairs: (N, channels, rows, cols)."""
        if plan.same:
            return src
        return graph.slice(src, [1, 2, 3], [0, 0, 0],
                           [plan.channels, plan.rows * plan.stride, plan.cols * plan.stride],
                           [1, plan.stride, plan.stride])

    def _pjreddie_sum(self, graph, prev: str, src: str) -> str:
        plan = self.plans[0]
        paired = graph.scale(self._paired(graph, src, plan), self.beta)
        z = graph.node("Add", [graph.scale(prev, self.alpha), self._placed(graph, paired, plan)])
        if not plan.same:                     # the values shortcut_cpu does not pair: prev's
            c, h, w = self.in_shape
            mask = np.zeros((1, c, h, w), bool)
            mask[plan.prev_index] = True
            if not mask.all():
                z = graph.where(graph.constant(mask, "paired", bool), z, prev)
        return z

    def _placed(self, graph, paired: str, plan) -> str:
        """paired (N, channels, rows, cols) where the plan adds it onto prev (every
        `sample`-th pixel of its first channels), zeros elsewhere: (N, C, H, W)."""
        s = plan.sample
        if plan.same:
            return paired
        if s > 1:                      # (N, ch, rows, 1, cols, 1) -> (N, ch, rows·s, cols·s)
            spread = graph.pad(graph.node("Unsqueeze", [paired, graph.ints([3, 5])]),
                               [0] * 6, [0, 0, 0, s - 1, 0, s - 1])
            paired = graph.reshape(spread, [0, plan.channels, plan.rows * s, plan.cols * s])
        c, h, w = self.in_shape
        rest = [0, c - plan.channels, h - plan.rows * s, w - plan.cols * s]
        return graph.pad(paired, [0] * 4, rest) if any(rest) else paired
