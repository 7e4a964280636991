"""Darknet's activation functions (src/activations.h) and AlexeyAB's fork's, each with its
true derivative.

    act = ACTIVATIONS["leaky"]            # or activation("leaky")
    y = act.forward(x)                    # x: any shape (act.channels: (A, C, ...)), float
    dx = act.backward(x, y, dy)           # dL/dx from dL/dy; x and y from forward
    y = act.apply(x)                      # y = forward(x), written over x when it can be
    dx = act.backward_over(x, y, dy)      # backward(x, y, dy), written over dy when it can be

backward gets both the input x and the output y: logistic, loggy and tanh
use y (σ' = σ(1 − σ)), the rest use x.  Results keep x's dtype; nothing is
modified in place.  linear returns its argument itself (no copy) in both
directions, so callers must not write into what they got back.

Darknet computes every gradient from the layer's *output* y
(gradient_array(l.output, …)); expressed that way each of its formulas is the
exact derivative of its forward wherever the derivative exists (e.g. elu:
y + 1 = eˣ for x < 0; lhtan: 1 for 0 < y < 1 ⇔ 0 < x < 1).  darkbp computes
the same derivative from x, which is more accurate where y loses digits
(elu/selu far below 0: y + 1 cancels), and at each kink takes the value
Darknet's formula gives there (noted per function).  Two forwards differ
from Darknet's C on purpose: tanh uses np.tanh (Darknet's
(e²ˣ − 1)/(e²ˣ + 1) is nan for x > 44 in float32), and elu/selu use expm1.

AlexeyAB's fork (src/activations.c, activation_kernels.cu) adds, elementwise:
- mish, swish, hard_mish: its backward evaluates them from the kept input (mish,
  hard_mish) or from the output and the kept sigmoid (swish), each the true derivative.
  mish's softplus uses its threshold 20 and the GPU's exact tanh(log(1 + e)) = n/(n + 2),
  n = e(e + 2), where the CPU's log(1 + eˣ) rounds to 0 below x ≈ −17 in float32;
- gelu, its tanh form with its constants.  Its backward evaluates the derivative at the
  output y instead of x (gradient_array(l.output, …)): darkbp takes it at x;
- relu6 = min(max(x, 0), 6), the GPU's (the CPU's activate() lacks it and returns 0);
- revleaky, which is leaky on the CPU (its GPU backward divides by the slope instead).
and, per pixel across channels (`channels`: axis 1 of (A, C, ...), the layout's axis
whatever the memory order; each of the A·… pixels alone), with eps = 1e-4:
- normalize_channels: relu(x)/(eps + Σ_c relu(x));
- normalize_channels_softmax: eˣ/(eps + Σ_c eˣ), computed shifted by the channels' max;
- normalize_channels_softmax_maxval: e^{x−m}/(eps + Σ_c e^{x−m}), m = max_c x.
Their backward is the Jacobian's product; AlexeyAB's is not (CPU: dx = delta·Σ_c y·delta;
GPU: delta·y, delta·y(1 − y)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SELU_LAMBDA, SELU_ALPHA = 1.0507, 1.6732  # Darknet's truncated constants


@dataclass(frozen=True)
class Activation:
    """forward(x) -> y; backward(x, y, dy) -> dx; in-place forms of them, where given:
    in_place(x) -> x holding forward(x), backward_in_place(x, y, dy) -> dy holding dx."""

    name: str
    forward: Callable[[np.ndarray], np.ndarray]
    backward: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    in_place: Callable[[np.ndarray], np.ndarray] | None = None
    backward_in_place: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None
    kinks: tuple[float, ...] = ()     # inputs where the derivative jumps (stair: every integer)
    # backward(y, y, dy) == backward(x, y, dy): the derivative follows from the output
    # alone (the sign of y is x's, or the formula uses y), so x need not be kept.
    from_output: bool = False
    # Per pixel across channels, not elementwise: x is (A, C, ...) and each y[a, :, ...]
    # depends on all of x[a, :, ...] (AlexeyAB's normalize_channels*).
    channels: bool = False

    # Writing over an array the caller owns saves a new array's memory traffic: ~2x
    # faster for a relu over a few MB (its first write to fresh memory reads it too).
    def apply(self, x: np.ndarray) -> np.ndarray:
        """forward(x), overwriting x where an in-place form exists: for callers that own
        x and need not keep it (no backward)."""
        return self.forward(x) if self.in_place is None else self.in_place(x)

    def backward_over(self, x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """backward(x, y, dy), overwriting dy where an in-place form exists."""
        if self.backward_in_place is None:
            return self.backward(x, y, dy)
        return self.backward_in_place(x, y, dy)

    def margin(self, x: np.ndarray) -> float:
        """The distance of the inputs x to the nearest point where the derivative jumps."""
        distance = np.inf
        for kink in self.kinks:
            distance = min(distance, float(np.abs(x - kink).min()))
        if self.name == "stair":                 # steps at every integer
            distance = min(distance, float(np.abs(x - np.round(x)).min()))
        if self.name == "normalize_channels_softmax_maxval" and x.shape[1] > 1:
            # the shift by the channels' max switches channel where two tie for it
            top = np.partition(x, -2, axis=1)
            distance = min(distance, float((top[:, -1] - top[:, -2]).min()) / 2)
        return distance


def _two_slopes(above: np.ndarray, hi: float, lo: float, dy: np.ndarray) -> np.ndarray:
    """dy·(hi where `above` else lo), branch-free (masked selects are slow on random signs)."""
    g = above.astype(dy.dtype)
    g *= hi - lo
    g += lo
    g *= dy
    return g


def _pick(cond: np.ndarray, a: float, b: float, like: np.ndarray) -> np.ndarray:
    """np.where(cond, a, b) in like's dtype (Python floats in np.where would give float64)."""
    t = like.dtype.type
    return np.where(cond, t(a), t(b))


# --- linear, relu and friends: piecewise linear ------------------------------------

def _linear(x):
    return x


def _linear_back(x, y, dy):
    return dy


def _relu(x):
    return np.maximum(x, 0)


def _relu_back(x, y, dy):  # slope 0 at x = 0, as Darknet's (y > 0)
    return dy * (x > 0)


def _leaky(x):  # x > 0 ? x : .1x
    return np.maximum(x, 0.1 * x)


def _leaky_back(x, y, dy):  # .1 at x = 0
    return _two_slopes(x > 0, 1.0, 0.1, dy)


def _relie(x):  # x > 0 ? x : .01x
    return np.maximum(x, 0.01 * x)


def _relie_back(x, y, dy):
    return _two_slopes(x > 0, 1.0, 0.01, dy)


def _ramp(x):  # x·(x > 0) + .1x: slope 1.1 above 0, .1 below
    return np.maximum(1.1 * x, 0.1 * x)


def _ramp_back(x, y, dy):  # .1 at x = 0
    return _two_slopes(x > 0, 1.1, 0.1, dy)


def _hardtan(x):
    return np.clip(x, -1, 1)


def _hardtan_back(x, y, dy):  # 0 at ±1
    return dy * ((x > -1) & (x < 1))


def _lhtan(x):  # .001x below 0, x on [0, 1], 1 + .001(x − 1) above 1
    y = np.where(x < 0, 0.001 * x, x)
    return np.where(x > 1, 0.001 * (x - 1) + 1, y)


def _lhtan_back(x, y, dy):  # .001 at 0 and 1
    return dy * _pick((x > 0) & (x < 1), 1.0, 0.001, x)


def _plse(x):  # .01(x + 4) below −4, .125x + .5 on [−4, 4], .01(x − 4) + 1 above 4
    y = np.where(x < -4, 0.01 * (x + 4), 0.125 * x + 0.5)
    return np.where(x > 4, 0.01 * (x - 4) + 1, y)


def _plse_back(x, y, dy):  # .125 at ±4
    return dy * _pick((x < -4) | (x > 4), 0.01, 0.125, x)


def _stair(x):
    # n = floor(x): flat floor(x/2) on [2k, 2k+1), rising x − n + floor(x/2) on [2k+1, 2k+2)
    n = np.floor(x)
    return np.floor(x / 2) + (np.mod(n, 2) != 0) * (x - n)


def _stair_back(x, y, dy):  # 0 at integers (Darknet: floor(y) == y)
    n = np.floor(x)
    return dy * ((np.mod(n, 2) != 0) & (x != n))


# --- smooth ---------------------------------------------------------------------------

def _logistic(x):
    y = np.negative(x)
    with np.errstate(over="ignore"):  # e^{-x} = inf for x ≪ 0 gives y = 0, correctly
        np.exp(y, out=y)
    y += 1
    return np.reciprocal(y, out=y)


def _logistic_back(x, y, dy):  # σ(1 − σ)
    g = 1 - y
    g *= y
    g *= dy
    return g


def _loggy(x):  # 2σ(x) − 1
    y = _logistic(x)
    y *= 2
    y -= 1
    return y


def _loggy_back(x, y, dy):  # 2σ(1 − σ) = (1 − y)(1 + y)/2
    g = 1 - y
    g *= 1 + y
    g *= 0.5
    g *= dy
    return g


def _tanh(x):
    return np.tanh(x)


def _tanh_back(x, y, dy):
    g = 1 - y * y
    g *= dy
    return g


def _elu(x):  # x ≥ 0 ? x : eˣ − 1
    return np.where(x >= 0, x, np.expm1(np.minimum(x, 0)))


def _elu_back(x, y, dy):  # x ≥ 0 ? 1 : eˣ, which is e^min(x, 0); 1 at 0
    return dy * np.exp(np.minimum(x, 0))


def _selu(x):  # λ·(x ≥ 0 ? x : α(eˣ − 1))
    y = np.where(x >= 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0)))
    y *= SELU_LAMBDA
    return y


def _selu_back(x, y, dy):  # λ·(x ≥ 0 ? 1 : α·eˣ); λ at 0
    g = np.where(x >= 0, x.dtype.type(1), SELU_ALPHA * np.exp(np.minimum(x, 0)))
    g *= SELU_LAMBDA
    g *= dy
    return g


# --- AlexeyAB's elementwise ones (src/activations.c, activation_kernels.cu) --------------

MISH_THRESHOLD = 20.0   # AlexeyAB's softplus threshold: softplus(x) = x above it


def _mish_parts(x):
    """tanh(softplus(x)) and σ(x) (softplus' derivative), from e = eˣ: with n = e(e + 2),
    tanh(log(1 + e)) = n/(n + 2) exactly, which keeps its digits far below 0 (AlexeyAB's
    GPU form) where log(1 + eˣ) rounds to 0; e is capped at e^20 (the threshold: above it
    tanh(softplus(x)) = 1 to the last bit, so y = x)."""
    e = np.exp(np.minimum(x, MISH_THRESHOLD))
    n = e * (e + 2)
    return n / (n + 2), e / (e + 1)


def _mish(x):  # x·tanh(softplus(x))
    t, _ = _mish_parts(x)
    t *= x
    return t


def _mish_back(x, y, dy):  # tanh(sp) + x·(1 − tanh²(sp))·σ(x), AlexeyAB's (from x)
    t, s = _mish_parts(x)
    g = 1 - t * t
    g *= s
    g *= x
    g += t
    g *= dy
    return g


def _swish(x):  # x·σ(x)
    y = _logistic(x)
    y *= x
    return y


def _swish_back(x, y, dy):  # σ + y(1 − σ), AlexeyAB's y + σ(1 − y) rearranged
    s = _logistic(x)
    g = 1 - s
    g *= x * s
    g += s
    g *= dy
    return g


def _hard_mish(x):  # x > 0 ? x : x > −2 ? x²/2 + x : 0
    return np.where(x > 0, x, np.where(x > -2, x * x / 2 + x, x.dtype.type(0)))


def _hard_mish_back(x, y, dy):  # 1 above 0, x + 1 on (−2, 0], 0 at −2 and below
    g = np.where(x > 0, x.dtype.type(1), np.where(x > -2, x + 1, x.dtype.type(0)))
    g *= dy
    return g


def _gelu(x):  # .5x(1 + tanh(u)), u = .797885x + .035677x³: AlexeyAB's tanh form and constants
    return x * _gelu_half(x)


def _gelu_half(x):
    """(1 + tanh(u))/2 = σ(2u), which keeps its digits where tanh(u) → −1."""
    return _logistic(2 * x * (0.797885 + 0.035677 * (x * x)))


def _gelu_back(x, y, dy):  # s + x·2s(1 − s)·u', s = σ(2u), u' = .797885 + 3·.035677x²
    s = _gelu_half(x)
    g = 1 - s
    g *= s
    g *= 2 * x * (0.797885 + 3 * 0.035677 * (x * x))
    g += s
    g *= dy
    return g


def _relu6(x):
    return np.clip(x, 0, 6)


def _relu6_back(x, y, dy):  # 1 on (0, 6), 0 at both ends, as AlexeyAB's
    return dy * ((x > 0) & (x < 6))


# --- AlexeyAB's per-pixel normalisations across channels (axis 1) ---------------------
# eps = 1e-4 in every denominator, as AlexeyAB's.  The sums run over axis 1 of
# (A, C, ...), whatever the layout the layer stores its batch in.

NORM_EPS = 1e-4


def _channel_sum(a):
    return a.sum(axis=1, keepdims=True)


def _normalize_channels(x):  # relu(x)/(eps + Σ_c relu(x))
    r = np.maximum(x, 0)
    return r / (NORM_EPS + _channel_sum(r))


def _normalize_channels_back(x, y, dy):
    # dx_j = [x_j > 0]/(eps + S)·(dy_j − Σ_k y_k dy_k), S = Σ relu(x)
    s = NORM_EPS + _channel_sum(np.maximum(x, 0))
    g = dy - _channel_sum(y * dy)
    g *= x > 0
    g /= s
    return g


def _softmax_shifted(x, eps_scale):
    """e^{x−m}/(eps·eps_scale(m) + Σ e^{x−m}), m the channels' max: the same function for
    any m, computed where no exp overflows."""
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    return e / (NORM_EPS * eps_scale(m) + _channel_sum(e))


def _exp_minus(m):
    with np.errstate(over="ignore"):  # e^{−m} = inf for m ≪ 0: y = 0, the limit
        return np.exp(-m)


def _normalize_channels_softmax(x):  # eˣ/(eps + Σ_c eˣ) = e^{x−m}/(eps·e^{−m} + Σ e^{x−m})
    return _softmax_shifted(x, _exp_minus)


def _softmax_back(x, y, dy):  # softmax's y ⊙ (dy − Σ y·dy): eps is a constant
    g = dy - _channel_sum(y * dy)
    g *= y
    return g


def _normalize_channels_softmax_maxval(x):  # e^{x−m}/(eps + Σ e^{x−m}), m = max_c x
    return _softmax_shifted(x, np.ones_like)


def _normalize_channels_softmax_maxval_back(x, y, dy):
    # = eˣ/(eps·eᵐ + Σ eˣ): m moves with the max channel's x, which adds
    # −(Σ y·dy)·eps/(eps + Σ e^{x−m}) to that channel's gradient
    m = x.max(axis=1, keepdims=True)
    w = _channel_sum(y * dy)
    g = dy - w
    g *= y
    first = np.cumsum(x == m, axis=1) == 1           # one channel per pixel, the first max
    first &= x == m
    g -= first * (w * NORM_EPS / (NORM_EPS + _channel_sum(np.exp(x - m))))
    return g


ACTIVATIONS: dict[str, Activation] = {
    a.name: a for a in (
        Activation("linear", _linear, _linear_back, _linear, _linear_back, from_output=True),
        Activation("logistic", _logistic, _logistic_back, from_output=True),
        Activation("loggy", _loggy, _loggy_back, from_output=True),
        Activation("relu", _relu, _relu_back, lambda x: np.maximum(x, 0, out=x),
                   lambda x, y, dy: np.multiply(dy, x > 0, out=dy), kinks=(0.0,),
                   from_output=True),
        Activation("elu", _elu, _elu_back),
        Activation("selu", _selu, _selu_back, kinks=(0.0,)),
        Activation("relie", _relie, _relie_back, lambda x: np.maximum(x, 0.01 * x, out=x),
                   kinks=(0.0,), from_output=True),
        Activation("ramp", _ramp, _ramp_back, kinks=(0.0,), from_output=True),
        Activation("leaky", _leaky, _leaky_back, lambda x: np.maximum(x, 0.1 * x, out=x),
                   kinks=(0.0,), from_output=True),
        Activation("tanh", _tanh, _tanh_back, lambda x: np.tanh(x, out=x), from_output=True),
        Activation("plse", _plse, _plse_back, kinks=(-4.0, 4.0)),
        Activation("stair", _stair, _stair_back),
        Activation("hardtan", _hardtan, _hardtan_back, lambda x: np.clip(x, -1, 1, out=x),
                   kinks=(-1.0, 1.0), from_output=True),
        Activation("lhtan", _lhtan, _lhtan_back, kinks=(0.0, 1.0), from_output=True),
        # AlexeyAB's fork
        Activation("mish", _mish, _mish_back),
        Activation("swish", _swish, _swish_back),
        Activation("hard_mish", _hard_mish, _hard_mish_back, kinks=(-2.0,)),
        Activation("gelu", _gelu, _gelu_back),
        Activation("relu6", _relu6, _relu6_back, lambda x: np.clip(x, 0, 6, out=x),
                   kinks=(0.0, 6.0), from_output=True),
        # AlexeyAB's revleaky is leaky (one `case` for both in activate() and gradient())
        Activation("revleaky", _leaky, _leaky_back, lambda x: np.maximum(x, 0.1 * x, out=x),
                   kinks=(0.0,), from_output=True),
        Activation("normalize_channels", _normalize_channels, _normalize_channels_back,
                   kinks=(0.0,), channels=True),
        Activation("normalize_channels_softmax", _normalize_channels_softmax, _softmax_back,
                   channels=True),
        Activation("normalize_channels_softmax_maxval", _normalize_channels_softmax_maxval,
                   _normalize_channels_softmax_maxval_back, channels=True),
    )
}


def is_activation(name: str) -> bool:
    """Whether `name` is one of Darknet's activations that darkbp implements."""
    return name in ACTIVATIONS


def activation(name: str) -> Activation:
    """The activation called `name`; ValueError naming the known ones otherwise."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}") from None
