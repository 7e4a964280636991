"""Slow, obviously-correct loop references for the kernels in darkbp/ops (tests only).

Every function here is written from the definition, element by element, in
float64, sharing no code with darkbp: the fast kernels must agree with it.
"""

from __future__ import annotations

import math

import numpy as np


# --- convolution --------------------------------------------------------------

def conv_forward(x, weights, stride, padding, groups, dilation=1):
    """y[n, f, oh, ow] = Σ_{c in f's group, i, j} x[n, c, oh·s−p+i·d, ow·s−p+j·d] · W[f, c', i, j],
    d the dilation; the output has as many positions as the dilated kernel fits."""
    n_img, chans, h, w = x.shape
    filters, cg, size, _ = weights.shape
    fg = filters // groups
    span = dilation * (size - 1) + 1
    oh_n = (h + 2 * padding - span) // stride + 1
    ow_n = (w + 2 * padding - span) // stride + 1
    y = np.zeros((n_img, filters, oh_n, ow_n))
    for n in range(n_img):
        for f in range(filters):
            g = f // fg
            for oh in range(oh_n):
                for ow in range(ow_n):
                    total = 0.0
                    for ci in range(cg):
                        for i in range(size):
                            for j in range(size):
                                ih = oh * stride - padding + i * dilation
                                iw = ow * stride - padding + j * dilation
                                if 0 <= ih < h and 0 <= iw < w:
                                    total += x[n, g * cg + ci, ih, iw] * weights[f, ci, i, j]
                    y[n, f, oh, ow] = total
    return y


def conv_backward(x, weights, dy, stride, padding, groups, dilation=1):
    """(dx, dweights) by distributing every dy[n, f, oh, ow] along the forward's terms."""
    n_img, chans, h, w = x.shape
    filters, cg, size, _ = weights.shape
    fg = filters // groups
    _, _, oh_n, ow_n = dy.shape
    dx = np.zeros(x.shape)
    dw = np.zeros(weights.shape)
    for n in range(n_img):
        for f in range(filters):
            g = f // fg
            for oh in range(oh_n):
                for ow in range(ow_n):
                    d = dy[n, f, oh, ow]
                    for ci in range(cg):
                        for i in range(size):
                            for j in range(size):
                                ih = oh * stride - padding + i * dilation
                                iw = ow * stride - padding + j * dilation
                                if 0 <= ih < h and 0 <= iw < w:
                                    c = g * cg + ci
                                    dw[f, ci, i, j] += d * x[n, c, ih, iw]
                                    dx[n, c, ih, iw] += d * weights[f, ci, i, j]
    return dx, dw


# --- max pooling (Darknet's maxpool_layer.c) ------------------------------------

def maxpool_forward(x, size, stride, padding):
    """Returns (y, argmax) with argmax[n, c, oh, ow] = (ih, iw) of the winner or None.

    Windows start at −(padding // 2); outside cells are −∞; a later cell wins
    only if strictly greater (the first maximum in row-major order wins).
    """
    n_img, chans, h, w = x.shape
    oh_n = (h + padding - size) // stride + 1
    ow_n = (w + padding - size) // stride + 1
    offset = -(padding // 2)
    y = np.zeros((n_img, chans, oh_n, ow_n))
    arg = np.empty((n_img, chans, oh_n, ow_n), dtype=object)
    for n in range(n_img):
        for c in range(chans):
            for oh in range(oh_n):
                for ow in range(ow_n):
                    best, where = -math.inf, None
                    for i in range(size):
                        for j in range(size):
                            ih = offset + oh * stride + i
                            iw = offset + ow * stride + j
                            inside = 0 <= ih < h and 0 <= iw < w
                            val = x[n, c, ih, iw] if inside else -math.inf
                            if val > best:
                                best, where = val, (ih, iw)
                    y[n, c, oh, ow] = best
                    arg[n, c, oh, ow] = where
    return y, arg


def maxpool_backward(x_shape, arg, dy):
    dx = np.zeros(x_shape)
    n_img, chans, oh_n, ow_n = dy.shape
    for n in range(n_img):
        for c in range(chans):
            for oh in range(oh_n):
                for ow in range(ow_n):
                    if arg[n, c, oh, ow] is not None:
                        ih, iw = arg[n, c, oh, ow]
                        dx[n, c, ih, iw] += dy[n, c, oh, ow]
    return dx


def maxpool_depth_forward(x, out_channels):
    """AlexeyAB's maxpool_depth: y[n, g, h, w] = max over k = g, g + out_channels, ... < C of
    x[n, k, h, w], the lowest k on ties. Returns (y, argmax channel per output)."""
    n_img, chans, h, w = x.shape
    y = np.zeros((n_img, out_channels, h, w))
    arg = np.zeros((n_img, out_channels, h, w), dtype=int)
    for n in range(n_img):
        for g in range(out_channels):
            for i in range(h):
                for j in range(w):
                    best, where = -math.inf, None
                    for k in range(g, chans, out_channels):
                        if x[n, k, i, j] > best:
                            best, where = x[n, k, i, j], k
                    y[n, g, i, j], arg[n, g, i, j] = best, where
    return y, arg


def maxpool_depth_backward(x_shape, arg, dy):
    dx = np.zeros(x_shape)
    n_img, out_channels, h, w = dy.shape
    for n in range(n_img):
        for g in range(out_channels):
            for i in range(h):
                for j in range(w):
                    dx[n, arg[n, g, i, j], i, j] += dy[n, g, i, j]
    return dx


# --- batch normalisation ---------------------------------------------------------
# Darknet's definition (SPEC section 3): per channel, over the M = N·P values of the
# pass, mean μ = Σx/M and the unbiased variance v = Σ(x − μ)²/(M − 1);
# y = scale·(x − μ)/σ with σ = sqrt(v + eps).

def batchnorm_forward_train(x, scales, eps=1e-5):
    """x (N, C, P) -> (y, mean (C,), unbiased variance (C,)), by the definition above."""
    n_img, chans, pix = x.shape
    m = n_img * pix
    y = np.zeros(x.shape)
    means, variances = np.zeros(chans), np.zeros(chans)
    for c in range(chans):
        values = [x[n, c, p] for n in range(n_img) for p in range(pix)]
        mean = sum(values) / m
        variance = sum((v - mean) ** 2 for v in values) / (m - 1)
        means[c], variances[c] = mean, variance
        for n in range(n_img):
            for p in range(pix):
                y[n, c, p] = scales[c] * (x[n, c, p] - mean) / math.sqrt(variance + eps)
    return y, means, variances


def batchnorm_backward_train(x, scales, dy, eps=1e-5):
    """(dx, dscales) through the full Jacobian of the training forward, per channel.

    By the chain rule on the definition: ∂μ/∂x_i = 1/M,
    ∂v/∂x_i = Σ_k 2(x_k − μ)(δ_ki − ∂μ/∂x_i)/(M − 1), ∂σ/∂x_i = ∂v/∂x_i / (2σ),
    ∂y_j/∂x_i = scale·[(δ_ij − ∂μ/∂x_i)/σ − (x_j − μ)·∂σ/∂x_i/σ²].
    """
    n_img, chans, pix = x.shape
    m = n_img * pix
    dx = np.zeros(x.shape)
    dscales = np.zeros(chans)
    for c in range(chans):
        idx = [(n, p) for n in range(n_img) for p in range(pix)]
        vals = [x[n, c, p] for n, p in idx]
        mean = sum(vals) / m
        sigma = math.sqrt(sum((v - mean) ** 2 for v in vals) / (m - 1) + eps)
        for (nj, pj), xj in zip(idx, vals):
            dscales[c] += dy[nj, c, pj] * (xj - mean) / sigma
        dmean = 1.0 / m
        for a, (ni, pi) in enumerate(idx):
            dvar = sum(2 * (vals[k] - mean) * ((k == a) - dmean) for k in range(m)) / (m - 1)
            dsigma = dvar / (2 * sigma)
            total = 0.0
            for b, (nj, pj) in enumerate(idx):
                jac = ((a == b) - dmean) / sigma - (vals[b] - mean) * dsigma / sigma ** 2
                total += dy[nj, c, pj] * scales[c] * jac
            dx[ni, c, pi] = total
    return dx, dscales


# --- softmax and cross-entropy ---------------------------------------------------

def softmax(x, groups, temperature):
    n_img, n = x.shape
    width = n // groups
    p = np.zeros(x.shape)
    for r in range(n_img):
        for g in range(groups):
            z = [x[r, g * width + k] / temperature for k in range(width)]
            top = max(z)
            e = [math.exp(v - top) for v in z]
            s = sum(e)
            for k in range(width):
                p[r, g * width + k] = e[k] / s
    return p


def cross_entropy(p, truth):
    return np.array([-sum(t * math.log(q) for q, t in zip(pr, tr) if t != 0)
                     for pr, tr in zip(p, truth)])


# --- activations, transcribed from Darknet's src/activations.h --------------------
# Forward functions of the pre-activation x; Darknet's gradients are functions of
# the OUTPUT y (gradient_array(l.output, ...)).

def _stair(x):
    n = math.floor(x)
    if n % 2 == 0:
        return math.floor(x / 2)
    return (x - n) + math.floor(x / 2)


def _plse(x):
    if x < -4:
        return .01 * (x + 4)
    if x > 4:
        return .01 * (x - 4) + 1
    return .125 * x + .5


def _lhtan(x):
    if x < 0:
        return .001 * x
    if x > 1:
        return .001 * (x - 1) + 1
    return x


DARKNET_ACTIVATE = {
    "linear": lambda x: x,
    "logistic": lambda x: 1 / (1 + math.exp(-x)),
    "loggy": lambda x: 2 / (1 + math.exp(-x)) - 1,
    "relu": lambda x: x * (x > 0),
    "elu": lambda x: (x >= 0) * x + (x < 0) * (math.exp(x) - 1),
    "selu": lambda x: (x >= 0) * 1.0507 * x + (x < 0) * 1.0507 * 1.6732 * (math.exp(x) - 1),
    "relie": lambda x: x if x > 0 else .01 * x,
    "ramp": lambda x: x * (x > 0) + .1 * x,
    "leaky": lambda x: x if x > 0 else .1 * x,
    "tanh": lambda x: (math.exp(2 * x) - 1) / (math.exp(2 * x) + 1),
    "plse": _plse,
    "stair": _stair,
    "hardtan": lambda x: -1 if x < -1 else (1 if x > 1 else x),
    "lhtan": _lhtan,
}

DARKNET_GRADIENT_OF_OUTPUT = {
    "linear": lambda y: 1,
    "logistic": lambda y: (1 - y) * y,
    "loggy": lambda y: 2 * (1 - (y + 1) / 2) * ((y + 1) / 2),
    "relu": lambda y: float(y > 0),
    "elu": lambda y: (y >= 0) + (y < 0) * (y + 1),
    "selu": lambda y: (y >= 0) * 1.0507 + (y < 0) * (y + 1.0507 * 1.6732),
    "relie": lambda y: 1 if y > 0 else .01,
    "ramp": lambda y: (y > 0) + .1,
    "leaky": lambda y: 1 if y > 0 else .1,
    "tanh": lambda y: 1 - y * y,
    "plse": lambda y: .01 if (y < 0 or y > 1) else .125,
    "stair": lambda y: 0 if math.floor(y) == y else 1,
    "hardtan": lambda y: 1 if -1 < y < 1 else 0,
    "lhtan": lambda y: 1 if 0 < y < 1 else .001,
}


# --- AlexeyAB's activations, transcribed from its src/activations.h/.c ---------------
# Its forward functions of x; ALEXEYAB_GRADIENT is the factor its backward multiplies the
# delta by, a function of (x, y) as its code evaluates it: mish and hard_mish from the kept
# input (activation_input), swish from the output and the kept sigmoid.

def _softplus(x, threshold=20.0):
    if x > threshold:
        return x
    if x < -threshold:
        return math.exp(x)
    return math.log(math.exp(x) + 1)


def _tanh_activate(x):            # AlexeyAB's tanh_activate: 2/(1 + e^{−2x}) − 1
    return 2 / (1 + math.exp(-2 * x)) - 1


def _hard_mish(x):
    if x > 0:
        return x
    if x > -2:
        return x * x / 2 + x
    return 0.0


def _hard_mish_gradient(x):
    if x > 0:
        return 1.0
    if x > -2:
        return x + 1
    return 0.0


def _mish_gradient(x):
    sp = _softplus(x)
    grad_sp = 1 - math.exp(-sp)
    tsp = math.tanh(sp)
    return x * (1 - tsp * tsp) * grad_sp + tsp


def _gelu(x):
    return 0.5 * x * (1 + math.tanh(0.797885 * x + 0.035677 * x ** 3))


def _gelu_gradient(x):           # AlexeyAB's gelu_gradient (its constants: .0356774 here)
    x3 = x ** 3
    u = 0.0356774 * x3 + 0.797885 * x
    sech = 2 / (math.exp(u) + math.exp(-u))
    return 0.5 * math.tanh(u) + (0.0535161 * x3 + 0.398942 * x) * sech ** 2 + 0.5


# relu6: the GPU's activate (its CPU activate() has no RELU6 case and returns 0).
ALEXEYAB_ACTIVATE = {
    "mish": lambda x: x * _tanh_activate(_softplus(x)),
    "swish": lambda x: x / (1 + math.exp(-x)),
    "hard_mish": _hard_mish,
    "gelu": _gelu,
    "relu6": lambda x: min(max(x, 0.0), 6.0),
    "revleaky": lambda x: x if x > 0 else .1 * x,
}

# What AlexeyAB's backward multiplies the delta by where that is the true derivative. Its
# gelu's is not: gradient_array(l.output, ...) evaluates _gelu_gradient at the OUTPUT y.
ALEXEYAB_GRADIENT = {
    "mish": lambda x, y: _mish_gradient(x),
    "swish": lambda x, y: y + (1 / (1 + math.exp(-x))) * (1 - y),
    "hard_mish": lambda x, y: _hard_mish_gradient(x),
    "relu6": lambda x, y: float(0 < y < 6),
    "revleaky": lambda x, y: 1 if y > 0 else .1,
}
ALEXEYAB_GELU_GRADIENT = _gelu_gradient     # of its argument; AlexeyAB passes y


# Per pixel across channels: x (N, C, H, W); loops over images, pixels and channels as
# AlexeyAB's activate_array_normalize_channels* and gradient_array_normalize_channels*
# (CPU) do. Their gradients are not the true derivative (see the _CPU ones' notes).

def _pixels(x):
    """(image, pixel) pairs of x (N, C, ...), pixels numbered row-major."""
    return [(b, p) for b in range(x.shape[0]) for p in range(int(np.prod(x.shape[2:], dtype=int)))]


def normalize_channels(x, softmax=False, max_val=False):
    """relu(x)/(1e-4 + Σ_c relu(x)); softmax: exp(x − m)/(1e-4 + Σ_c exp(x − m)), m = 0,
    or the channels' max with max_val."""
    flat = np.asarray(x, float).reshape(x.shape[0], x.shape[1], -1)
    out = np.zeros_like(flat)
    for b, p in _pixels(x):
        vals = [float(v) for v in flat[b, :, p]]
        if softmax:
            m = max(vals) if max_val else 0.0
            total = 1e-4 + sum(math.exp(v - m) for v in vals)
            out[b, :, p] = [math.exp(v - m) / total for v in vals]
        else:
            total = 1e-4 + sum(v for v in vals if v > 0)
            out[b, :, p] = [v / total if v > 0 else 0.0 for v in vals]
    return out.reshape(x.shape)


def normalize_channels_gradient_cpu(y, dy, softmax=False):
    """AlexeyAB's CPU gradient_array_normalize_channels(_softmax): with g = Σ_c y·dy per
    pixel, dx = dy·g (normalize_channels: where y > 0; elsewhere dx = dy, untouched)."""
    yf = np.asarray(y, float).reshape(y.shape[0], y.shape[1], -1)
    df = np.asarray(dy, float).reshape(yf.shape)
    out = df.copy()
    for b, p in _pixels(y):
        g = sum(float(yf[b, k, p]) * float(df[b, k, p]) for k in range(yf.shape[1]))
        for k in range(yf.shape[1]):
            if softmax or yf[b, k, p] > 0:
                out[b, k, p] = df[b, k, p] * g
    return out.reshape(y.shape)


# --- finite differences ------------------------------------------------------------

def numeric_grad(loss, x, eps=1e-6):
    """Central differences (loss(x+ε) − loss(x−ε)) / 2ε for every element of x (float64, in place)."""
    grad = np.zeros(x.shape)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + eps
        plus = loss()
        flat[k] = old - eps
        minus = loss()
        flat[k] = old
        gflat[k] = (plus - minus) / (2 * eps)
    return grad


def max_rel_error(analytic, numeric, floor=1e-8):
    """Max over elements of |a − n| / max(|a|, |n|, floor) (floor keeps exact zeros comparable)."""
    a, n = np.asarray(analytic, float), np.asarray(numeric, float)
    return float(np.max(np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)))
