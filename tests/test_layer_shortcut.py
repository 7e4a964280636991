"""[shortcut] (darkbp/layers/shortcut.py, ops/shortcut.py) against things darkbp did not write.

There is no golden fixture for [shortcut]. The kernel is checked against the loop
reference tests/naive_layers.py (transcribed from Darknet's shortcut_cpu) on many shapes
and both layouts; a residual network against its torch float64 twin built by hand (forward,
every parameter gradient, the input gradient, with outputs read by two layers); its table
lines against Darknet's printout of resnet18 and darknet53; Darknet's backward (transcribed
here) against darkbp's exact one, which differ where alpha ≠ 1 meets a `from` of another
size; every bad `from` through the CLI. tests/layer_cfgs/shortcut.cfg runs the layer
contract (gradcheck, split passes, .weights).

AlexeyAB's form (several `from` layers, weights per input): the kernels against a loop
transcription of AlexeyAB's shortcut_multilayer_cpu/kernel (tests/naive_layers.py), the
weights' gradient against finite differences for every normalisation, AlexeyAB's own two
weight rules shown not to be that gradient, its table lines, and training and averaging of
the weights; tests/layer_cfgs/shortcut_weighted.cfg runs the contract and
tests/test_golden_alexeyab_shortcut.py checks AlexeyAB's own numbers.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from darkbp.ema import EMA
from darkbp.layers.base import INPUT
from darkbp.layers.shortcut import ShortcutLayer
from darkbp.network import parse_network
from darkbp.ops.activations import ACTIVATIONS
from darkbp.ops.layout import as_nchw, ordered
from darkbp.ops.shortcut import (mix_backward, shortcut_backward, shortcut_forward,
                                 shortcut_plan)
from darkbp.passes import EVAL, Pass
from darkbp.sgd import SGD
from darkbp.summary import darknet_text
from tests import naive
from tests import naive_layers as nl
from tests.conftest import (ROOT, SHARED, assert_cfg_error, assert_equals_torch_twin,
                            count_fuzz_builds, torch_params, torch_twin)

# (prev (N, C, H, W), src (N, C1, H1, W1)): the previous layer's output and the `from` one's.
CASES = [
    ((2, 3, 5, 4), (2, 3, 5, 4)),          # equal: every value paired
    ((2, 3, 4, 4), (2, 2, 8, 8)),          # src twice the size, fewer channels (resnet's)
    ((2, 4, 4, 4), (2, 6, 8, 8)),          # src twice the size, more channels
    ((2, 2, 3, 3), (2, 4, 7, 7)),          # 7 // 3 = 2: src read at 0, 2, 4 of 7
    ((2, 4, 6, 6), (2, 5, 3, 3)),          # src half the size: onto every 2nd pixel
    ((1, 2, 7, 5), (1, 2, 3, 2)),          # 7 // 3 = 5 // 2 = 2: onto rows 0, 2, 4, cols 0, 2
    ((2, 3, 4, 6), (2, 3, 8, 12)),         # rectangular, stride 2
    ((3, 2, 9, 9), (3, 2, 3, 3)),          # sample 3
    ((3, 5, 1, 1), (3, 7, 1, 1)),          # vectors: the first 5 values
    ((2, 1, 2, 2), (2, 1, 2, 2)),
]
SCALES = [(1.0, 1.0), (0.5, 2.0), (-1.5, 0.25)]


def _ids(case):
    (n, c, h, w), (_, c1, h1, w1) = case
    return f"{c}x{h}x{w}+{c1}x{h1}x{w1}"


def _stored(x, layout):
    """x as an (N, C, H, W) array stored in `layout` (ops/layout.py)."""
    if layout == "NCHW":
        return np.ascontiguousarray(x)
    return as_nchw(np.ascontiguousarray(x.transpose(1, 2, 3, 0)), "CHWN")


# --- the kernel against the loop reference ----------------------------------------------------

@pytest.mark.parametrize("layouts", [("NCHW", "NCHW"), ("CHWN", "CHWN"), ("CHWN", "NCHW")])
@pytest.mark.parametrize("alpha, beta", SCALES)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_kernel_equals_the_loop_reference(case, alpha, beta, layouts):
    prev_shape, src_shape = case
    rng = np.random.default_rng(sum(prev_shape) * 7 + sum(src_shape))
    prev = _stored(rng.standard_normal(prev_shape), layouts[0])
    src = _stored(rng.standard_normal(src_shape), layouts[1])
    copies = prev.copy(), src.copy()
    plan = shortcut_plan(prev_shape[1:], src_shape[1:])

    z = shortcut_forward(prev, src, alpha, beta, plan)
    np.testing.assert_allclose(z, nl.shortcut_forward(prev, src, alpha, beta), rtol=1e-14,
                               atol=1e-14)
    dy = _stored(rng.standard_normal(prev_shape), layouts[0])
    want_prev, want_src = nl.shortcut_backward(prev_shape, src_shape, dy, alpha, beta)
    d_prev, d_src = shortcut_backward(dy.copy(order="K"), src_shape, alpha, beta, plan)
    np.testing.assert_allclose(d_prev, want_prev, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(d_src, want_src, rtol=1e-14, atol=1e-14)
    # stored as dz, so that the sum with src's other gradient and src's own backward (a
    # CHWN conv's, its activation's) run without a transposing pass
    assert np.shares_memory(ordered(d_src, layouts[0]), d_src)
    assert not np.shares_memory(d_prev, d_src)
    assert not np.shares_memory(z, prev) and not np.shares_memory(z, src)
    np.testing.assert_array_equal(prev, copies[0])            # inputs untouched
    np.testing.assert_array_equal(src, copies[1])


def test_kernel_keeps_float32():
    rng = np.random.default_rng(0)
    prev = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    src = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    plan = shortcut_plan(prev.shape[1:], src.shape[1:])
    z = shortcut_forward(prev, src, 0.5, 2.0, plan)
    d_prev, d_src = shortcut_backward(z.copy(), src.shape, 0.5, 2.0, plan)
    assert z.dtype == d_prev.dtype == d_src.dtype == np.float32


@pytest.mark.parametrize("prev, src", [((1, 2, 2), (1, 4, 2)),    # 2 // 2 = 1 but 4 // 2 = 2
                                       ((1, 4, 7), (1, 2, 4)),    # 4 // 7 = 0 but 2 // 4 = 0,
                                                                  # 7 // 4 = 1 but 4 // 2 = 2
                                       ((3, 8, 8), (3, 8, 4))])
def test_ratios_that_disagree_have_no_plan(prev, src):
    assert shortcut_plan(prev, src) is None
    with pytest.raises(ValueError, match="ratios agree"):         # the reference: Darknet asserts
        nl.shortcut_forward(np.zeros((1,) + prev), np.zeros((1,) + src))


def _layer(prev_shape, src_shape, activation, alpha, beta):
    return ShortcutLayer(prev_shape, [src_shape], [0], activation, alpha, beta)


@pytest.mark.parametrize("activation", ["leaky", "logistic", "linear", "relu"])
def test_layer_applies_its_activation_after_the_sum(activation):
    rng = np.random.default_rng(3)
    act = ACTIVATIONS[activation]
    layer = _layer((4, 3, 3), (3, 6, 6), activation, 1.5, -0.5)
    prev, src = rng.standard_normal((2, 4, 3, 3)), rng.standard_normal((2, 3, 6, 6))
    z = nl.shortcut_forward(prev, src, 1.5, -0.5)
    y = layer.forward([prev, src], Pass.training())
    np.testing.assert_allclose(y, act.forward(z), rtol=1e-14)
    np.testing.assert_allclose(layer.forward([prev, src], EVAL), y, rtol=1e-14)
    layer.forward([prev, src], Pass.training())
    dy = rng.standard_normal(y.shape)
    d_prev, d_src = layer.backward(dy.copy())
    want_prev, want_src = nl.shortcut_backward(prev.shape, src.shape, act.backward(z, y, dy),
                                               1.5, -0.5)
    np.testing.assert_allclose(d_prev, want_prev, rtol=1e-14)
    np.testing.assert_allclose(d_src, want_src, rtol=1e-14)


def test_margin_is_the_distance_of_the_sum_to_the_activations_kink():
    layer = _layer((1, 1, 2), (1, 1, 2), "relu", 1.0, 1.0)
    layer.forward([np.array([[[[0.5, -1.0]]]]), np.array([[[[-0.25, 0.75]]]])], Pass.training())
    assert layer.margin([]) == pytest.approx(0.25)            # z = 0.25, -0.25
    linear = _layer((1, 1, 2), (1, 1, 2), "linear", 1.0, 1.0)
    linear.forward([np.ones((1, 1, 1, 2)), np.ones((1, 1, 1, 2))], Pass.training())
    assert linear.margin([]) == np.inf


# --- where Darknet's backward is not the adjoint of its forward -------------------------------

def darknet_backward(dz, src_shape, alpha, beta):
    """backward_shortcut_layer (pjreddie/darknet src/shortcut_layer.c), transcribed:

        axpy_cpu(l.outputs*l.batch, l.alpha, l.delta, 1, net.delta, 1);
        shortcut_cpu(l.batch, l.out_w, l.out_h, l.out_c, l.delta, l.w, l.h, l.c,
                     1, l.beta, net.layers[l.index].delta);

    i.e. the previous layer gets alpha·δ at EVERY value, and the `from` layer
    shortcut_cpu's pairing with the roles swapped: from.δ[src] = 1·from.δ[src] + beta·δ[prev].
    (Darknet's δ is −∂loss; the sign does not matter for a linear map.)
    """
    n, c2, h2, w2 = dz.shape
    _, c1, h1, w1 = src_shape
    d_prev = alpha * dz
    d_src = np.zeros(src_shape)
    # shortcut_cpu(batch, w1=out_w, h1=out_h, c1=out_c, add=δ, w2=l.w, h2=l.h, c2=l.c, ...)
    stride, sample = max(w2 // w1, 1), max(w1 // w2, 1)
    for b in range(n):
        for k in range(min(c1, c2)):
            for j in range(min(h1, h2)):
                for i in range(min(w1, w2)):
                    d_src[b, k, j * sample, i * sample] = (
                        1 * d_src[b, k, j * sample, i * sample]
                        + beta * dz[b, k, j * stride, i * stride])
    return d_prev, d_src


def test_darknets_backward_differs_only_where_alpha_meets_unpaired_values():
    rng = np.random.default_rng(5)
    for (prev_shape, src_shape), (alpha, beta) in [(case, scale) for case in CASES
                                                   for scale in SCALES]:
        dz = rng.standard_normal(prev_shape)
        plan = shortcut_plan(prev_shape[1:], src_shape[1:])
        d_prev, d_src = shortcut_backward(dz.copy(), src_shape, alpha, beta, plan)
        theirs_prev, theirs_src = darknet_backward(dz, src_shape, alpha, beta)
        np.testing.assert_allclose(d_src, theirs_src, rtol=1e-14)  # the from part: exact
        paired = np.zeros(prev_shape, bool)
        paired[plan.prev_index] = True
        np.testing.assert_allclose(d_prev[paired], theirs_prev[paired], rtol=1e-14)
        # Unpaired values pass through the forward unchanged: their gradient is dz, where
        # Darknet gives alpha·dz.
        np.testing.assert_array_equal(d_prev[~paired], dz[~paired])
        np.testing.assert_allclose(theirs_prev[~paired], alpha * dz[~paired], rtol=1e-14)


def test_finite_differences_side_with_darkbp_at_an_unpaired_value():
    # prev 4 x 3 x 3, src 3 x 6 x 6, alpha = 1.5: channel 3 of prev is not paired.
    rng = np.random.default_rng(6)
    prev, src = rng.standard_normal((1, 4, 3, 3)), rng.standard_normal((1, 3, 6, 6))
    dy = rng.standard_normal(prev.shape)
    numeric = naive.numeric_grad(lambda: float(np.sum(dy * nl.shortcut_forward(prev, src,
                                                                               1.5, 1.0))),
                                 prev)
    plan = shortcut_plan(prev.shape[1:], src.shape[1:])
    ours, _ = shortcut_backward(dy.copy(), src.shape, 1.5, 1.0, plan)
    theirs, _ = darknet_backward(dy, src.shape, 1.5, 1.0)
    assert naive.max_rel_error(ours, numeric) < 1e-6          # central differences' rounding
    np.testing.assert_allclose(numeric[0, 3], dy[0, 3], rtol=1e-6)        # factor 1 ...
    np.testing.assert_allclose(theirs[0, 3], 1.5 * dy[0, 3], rtol=1e-14)  # ... not 1.5


# --- a residual network against its torch twin --------------------------------------------------

RESIDUAL = """
[net]
batch=4
width=8
height=8
channels=3

# 0: read by layer 1, the shortcut 3 and the route 6
[convolutional]
filters=4
size=3
pad=1
activation=leaky

[convolutional]
filters=4
size=3
pad=1
activation=leaky

[convolutional]
filters=4
size=3
pad=1
activation=linear

# 3: a residual block, conv -> conv -> + layer 0; read by layer 4 and by the shortcut 5
[shortcut]
from=-3
activation=leaky

# 4: 4 x 4 x 6
[convolutional]
filters=6
size=3
stride=2
pad=1
activation=leaky

# 5: + layer 3 (8 x 8 x 4) read every 2nd pixel onto channels 0-3 of 6; alpha on those only
[shortcut]
from=-2
alpha=0.5
beta=2
activation=linear

# 6: layers 2 and 0, 8 x 8 x 8
[route]
layers=2,0

# 7: + layer 5 (4 x 4 x 6) onto every 2nd pixel, channels 0-5 of 8
[shortcut]
from=5
beta=-1
activation=tanh

[connected]
output=5
activation=linear

[softmax]
"""


def torch_shortcut(torch, prev, src, alpha, beta):
    """Darknet's pairing (ops/shortcut.py's docstring) in torch: autograd gives its adjoint."""
    stride = max(src.shape[3] // prev.shape[3], 1)
    sample = max(prev.shape[3] // src.shape[3], 1)
    c, h, w = (min(a, b) for a, b in zip(prev.shape[1:], src.shape[1:]))
    out = prev.clone()
    paired = (slice(None), slice(0, c), slice(0, h * sample, sample), slice(0, w * sample, sample))
    out[paired] = alpha * prev[paired] + beta * src[:, :c, :h * stride:stride, :w * stride:stride]
    return out


def test_a_residual_network_equals_its_torch_twin(write_cfg):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    network = parse_network(write_cfg(RESIDUAL)).initialize(2, np.float64)
    x, tx, params = torch_twin(network, np.random.default_rng(7), (4, 3, 8, 8))
    truth = np.eye(5)[[0, 3, 1, 4]]

    def conv(i, a, stride=1):
        return F.conv2d(a, params[(i, "weights")], params[(i, "biases")], stride=stride,
                        padding=1)

    def leaky(a):
        return F.leaky_relu(a, 0.1)

    y0 = leaky(conv(0, tx))
    y1 = leaky(conv(1, y0))
    y2 = conv(2, y1)
    y3 = leaky(torch_shortcut(torch, y2, y0, 1.0, 1.0))
    y4 = leaky(conv(4, y3, stride=2))
    y5 = torch_shortcut(torch, y4, y3, 0.5, 2.0)
    y6 = torch.cat([y2, y0], dim=1)
    y7 = torch.tanh(torch_shortcut(torch, y6, y5, 1.0, -1.0))
    logits = F.linear(y7.reshape(4, -1), params[(8, "weights")], params[(8, "biases")])
    assert_equals_torch_twin(network, x, truth, tx, params, logits)


# darknet53's block: layer 0 is read by a 1x1 convolution and by the shortcut.
BLOCK = """
[net]
batch=4
width=8
height=8
channels=3

[convolutional]
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=4
size=1
activation=leaky

[convolutional]
filters=8
size=3
pad=1
activation=leaky

[shortcut]
from=-3
activation=linear

[connected]
output=5
activation=linear

[softmax]
"""


def darknet_network_backward(network, truth):
    """backward_network (pjreddie/darknet src/network.c) over darkbp's layers, transcribed:
    layers in reverse, each adding its input gradients into its sources' δ, except that a
    1x1 convolution's backward (convolutional_layer.c: `if (l.size == 1) c = imd;` then
    gemm(..., 0, c, k), BETA = 0) writes its input's δ instead of adding to it."""
    cost = network.layers[-1]
    deltas = {cost.sources[0]: cost.input_grad(truth)}
    for layer in reversed(network.layers[:-1]):
        dxs = layer.backward(deltas.pop(layer.index))
        for source, dx in zip(layer.sources, [dxs] if layer.arity == 1 else dxs):
            if source == INPUT:
                continue
            overwrites = layer.type == "convolutional" and layer.size == 1
            deltas[source] = dx.copy() if overwrites or source not in deltas else (
                deltas[source] + dx)


def test_a_block_read_by_a_1x1_conv_gets_both_gradients_where_darknet_keeps_one(write_cfg):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    network = parse_network(write_cfg(BLOCK)).initialize(0, np.float64)
    rng = np.random.default_rng(0)
    x, truth = rng.random((4, 3, 8, 8)), np.eye(5)[[0, 1, 2, 3]]

    def layer0_weight_grad(residual):
        """d loss / d layer 0's weights in torch, with the shortcut's layer-0 term given by
        residual(y0)."""
        w = torch_params(network)
        y0 = F.leaky_relu(F.conv2d(torch.tensor(x), w[0, "weights"], w[0, "biases"], stride=2,
                                   padding=1), 0.1)
        y1 = F.leaky_relu(F.conv2d(y0, w[1, "weights"], w[1, "biases"]), 0.1)
        y2 = F.leaky_relu(F.conv2d(y1, w[2, "weights"], w[2, "biases"], padding=1), 0.1)
        logits = F.linear((y2 + residual(y0)).reshape(4, -1), w[4, "weights"], w[4, "biases"])
        (-(torch.tensor(truth) * F.log_softmax(logits, dim=1)).sum()).backward()
        return w[0, "weights"].grad.numpy()

    exact = layer0_weight_grad(lambda y0: y0)
    through_the_1x1_conv = layer0_weight_grad(lambda y0: y0.detach())

    network.forward(x, Pass.training())
    network.backward(truth)
    np.testing.assert_allclose(network.layers[0].weight_grads, exact, rtol=1e-10, atol=1e-13)
    network.zero_grads()
    network.forward(x, Pass.training())
    darknet_network_backward(network, truth)
    theirs = network.layers[0].weight_grads
    np.testing.assert_allclose(theirs, through_the_1x1_conv, rtol=1e-10, atol=1e-13)
    # Here Darknet's step loses 56 % of this gradient (its norm).
    lost = np.linalg.norm(theirs - exact) / np.linalg.norm(exact)
    assert lost > 0.5, lost


# --- Darknet's table ----------------------------------------------------------------------------

# Copied from ../shared/darknet-summary/resnet18.txt (Darknet's printout of resnet18.cfg).
RESNET18_RES_LINES = """\
    4 res    1                  64 x  64 x  64   ->    64 x  64 x  64
    7 res    4                  64 x  64 x  64   ->    64 x  64 x  64
   10 res    7                  64 x  64 x  64   ->    32 x  32 x 128
   13 res   10                  32 x  32 x 128   ->    32 x  32 x 128
   16 res   13                  32 x  32 x 128   ->    16 x  16 x 256
   19 res   16                  16 x  16 x 256   ->    16 x  16 x 256
   22 res   19                  16 x  16 x 256   ->     8 x   8 x 512
   25 res   22                   8 x   8 x 512   ->     8 x   8 x 512
"""


def _res_lines(text):
    return [line for line in text.splitlines() if re.match(r" *\d+ res ", line)]


def test_resnet18_res_lines_equal_darknets():
    network = parse_network(SHARED / "darknet-cfg" / "resnet18.cfg")
    assert _res_lines(darknet_text(network)) == RESNET18_RES_LINES.splitlines()


def test_darknet53_res_lines_equal_darknets():
    network = parse_network(SHARED / "darknet-cfg" / "darknet53.cfg")
    theirs = _res_lines((SHARED / "darknet-summary" / "darknet53.txt").read_text())
    assert len(theirs) == 23
    assert _res_lines(darknet_text(network)) == theirs


def test_line_of_a_from_of_another_size():
    # Darknet's format: "res  %3d                %4d x%4d x%4d   ->  %4d x%4d x%4d\n",
    # the `from` layer's index and w h c, then this layer's. The literal: resnet18.txt, layer 10.
    layer = ShortcutLayer((128, 32, 32), [(64, 64, 64)], [7], "leaky", 1.0, 1.0)
    assert "%5d " % 10 + layer.darknet_line() == (
        "   10 res    7                  64 x  64 x  64   ->    32 x  32 x 128\n")


# --- bad input -----------------------------------------------------------------------------------

NET = "[net]\nwidth=8\nheight=8\nchannels=1\n"
CONV = "[convolutional]\nfilters=2\nsize=3\npad=1\n"          # 4 lines

# (name, cfg text, line of the error, words the message must contain)
BAD = [
    ("no from", NET + CONV + "[shortcut]\nactivation=leaky\n", 9,
     "[shortcut] needs 'from'"),
    ("itself", NET + CONV + "[shortcut]\nfrom=1\n", 10,
     "from=1 is this layer itself (layer 1)"),
    ("later", NET + CONV + "[shortcut]\nfrom=3\n", 10,
     "from=3 is layer 3, after this one (layer 1)"),
    ("before the first", NET + CONV + "[shortcut]\nfrom=-5\n", 10,
     "from=-5 points before the first layer (1 - 5 = -4)"),
    ("the net input", NET + CONV + "[shortcut]\nfrom=-2\n", 10,
     "from=-2 points before the first layer (1 - 2 = -1)"),
    ("first layer", NET + "[shortcut]\nfrom=-1\n", 6,
     "from=-1 points before the first layer (0 - 1 = -1)"),
    ("not a number", NET + CONV + "[shortcut]\nfrom=a\n", 10,
     "'from' must be a whole number, got 'a'"),
    # AlexeyAB's several `from` layers: each entry must name an earlier layer
    ("a list reaching the input", NET + CONV + "[shortcut]\nfrom=-1,-2\n", 10,
     "'from' entry -2 points before the first layer (1 - 2 = -1)"),
    ("a list naming itself", NET + CONV + CONV + "[shortcut]\nfrom=-2,2\n", 14,
     "'from' entry 2 is this layer itself (layer 2)"),
    ("a list with a word", NET + CONV + CONV + "[shortcut]\nfrom=-2,a\n", 14,
     "'from' must be a comma-separated list of whole numbers, got '-2,a'"),
    ("unknown weights_type", NET + CONV + CONV + "[shortcut]\nfrom=-2\nweights_type=per_pixel\n",
     15, "unknown weights_type 'per_pixel' (one of: none, per_feature, per_layer, per_channel)"),
    ("unknown normalization", NET + CONV + CONV
     + "[shortcut]\nfrom=-2\nweights_type=per_feature\nweights_normalization=max\n", 16,
     "unknown weights_normalization 'max' (one of: none, relu, avg_relu, softmax)"),
    ("alpha with weights", NET + CONV + CONV
     + "[shortcut]\nfrom=-2\nweights_type=per_channel\nweights_normalization=relu\nalpha=2\n",
     17, "'alpha' scales pjreddie's shortcut of one 'from' layer without weights_type"),
    ("beta with two froms", NET + CONV + CONV + "[shortcut]\nfrom=-2,-1\nbeta=2\n", 15,
     "AlexeyAB's shortcut of several 'from' layers or with weights_type reads no alpha or beta"),
    ("bad alpha", NET + CONV + CONV + "[shortcut]\nfrom=-2\nalpha=x\n", 15,
     "'alpha' must be a number, got 'x'"),
    ("unknown activation", NET + CONV + CONV + "[shortcut]\nfrom=-2\nactivation=bogus\n", 15,
     "unknown activation 'bogus'"),
    # 7 x 4 -> 4 x 2 by a stride-2 conv: widths 7 // 4 = 1 apart, heights 4 // 2 = 2
    ("ratios disagree", "[net]\nwidth=7\nheight=4\nchannels=1\n" + CONV
     + "[convolutional]\nfilters=2\nsize=3\nstride=2\npad=1\n[shortcut]\nfrom=-2\n", 15,
     "the 'from' layer 0 is 7 x 4 and the previous layer 4 x 2: widths and heights must be "
     "the same whole-number ratio apart"),
]


@pytest.mark.parametrize("name, text, line, words", BAD, ids=[case[0] for case in BAD])
def test_bad_shortcut_is_one_clear_error_and_exit_2(tmp_path, name, text, line, words):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    assert_cfg_error(path, line, "shortcut", words)


# Layers of three sizes and channel counts for `from` to point at (layer 5 reads one).
FUZZ_NET = """
[net]
batch=2
width=8
height=8
channels=2
[convolutional]
filters=3
size=3
pad=1
[convolutional]
filters=5
size=3
stride=2
pad=1
[route]
layers=0
[convolutional]
filters=2
size=1
[maxpool]
size=2
stride=4
[shortcut]
from={value}
alpha=0.5
[connected]
output=3
[softmax]
"""
FUZZ_VALUES = [str(v) for v in range(-100, 101)] + [
    "a", "", "1,,2", "1,2", "1.5", "+2", "-0", "0x1", " 3", "2147483648", "-2147483649",
    "--1", "1e1", ","]


def test_any_from_builds_and_runs_or_is_a_darkbp_error():
    built = count_fuzz_builds(FUZZ_NET, FUZZ_VALUES, np.random.default_rng(0))
    assert built == 13       # 0..4, -1..-5, +2, -0 and " 3" (Darknet strips spaces)


# --- AlexeyAB's shortcut: several `from` layers, weights per input -------------------------------

LAYER_CFGS = ROOT / "tests" / "layer_cfgs"
# (prev (N, C, H, W), [src_i], weights_type, weights_normalization): AlexeyAB asserts equal H, W.
MIXED = [
    ((2, 3, 4, 4), [(2, 3, 4, 4)], "per_feature", "relu"),
    ((2, 3, 4, 4), [(2, 3, 4, 4)], "per_channel", "softmax"),
    ((2, 4, 3, 5), [(2, 4, 3, 5), (2, 2, 3, 5)], "per_feature", "softmax"),
    ((2, 4, 3, 5), [(2, 6, 3, 5), (2, 4, 3, 5)], "per_channel", "relu"),
    ((1, 3, 2, 2), [(1, 1, 2, 2), (1, 3, 2, 2), (1, 5, 2, 2)], "per_channel", "none"),
    ((2, 3, 4, 4), [(2, 2, 4, 4), (2, 3, 4, 4)], "none", "none"),
]


def _mixed_ids(case):
    prev, srcs, kind, norm = case
    return f"{len(srcs)}from-{kind}-{norm}-" + "+".join(str(s[1]) for s in srcs)


def _mixed_layer(prev_shape, src_shapes, kind, norm, activation="linear"):
    layer = ShortcutLayer(prev_shape[1:], [s[1:] for s in src_shapes],
                          list(range(len(src_shapes))), activation, weights_type=kind,
                          normalization=norm)
    layer.init_params(np.random.default_rng(0), np.float64)
    return layer


def _random_weights(layer, rng):
    """Weights apart from each other (softmax's max has a kink at ties), some of them below
    relu normalisation's floor 0.001 (a factor held at the floor)."""
    if layer.weights_type != "none":
        layer.weights[...] = rng.uniform(-0.5, 1.5, layer.weights.shape)
    return None if layer.weights_type == "none" else layer.weights.tolist()


@pytest.mark.parametrize("case", MIXED, ids=_mixed_ids)
def test_weighted_sum_equals_alexeyabs_loops(case):
    prev_shape, src_shapes, kind, norm = case
    rng = np.random.default_rng(len(src_shapes) * 11 + prev_shape[1])
    layer = _mixed_layer(prev_shape, src_shapes, kind, norm)
    weights = _random_weights(layer, rng)
    prev = rng.standard_normal(prev_shape)
    srcs = [rng.standard_normal(shape) for shape in src_shapes]
    y = layer.forward([prev, *srcs], Pass.training())
    np.testing.assert_allclose(y, nl.shortcut_multilayer_forward(prev, srcs, weights, norm),
                               rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(layer.forward([prev, *srcs], EVAL), y, rtol=1e-15)

    layer.forward([prev, *srcs], Pass.training())
    dy = rng.standard_normal(prev_shape)
    grads = layer.backward(dy.copy())
    want_prev, want_srcs, updates = nl.shortcut_multilayer_backward(prev, srcs, dy, weights, norm)
    for ours, want in zip(grads, [want_prev, *want_srcs], strict=True):
        np.testing.assert_allclose(ours, want, rtol=1e-13, atol=1e-14)
    assert all(not np.shares_memory(a, b) for i, a in enumerate(grads) for b in grads[i + 1:])
    # CHWN inputs get CHWN gradients (each stored as its input)
    stored = [_stored(a, "CHWN") for a in (prev, *srcs)]
    layer.forward(stored, Pass.training())
    assert all(np.shares_memory(ordered(d, "CHWN"), d)
               for d in layer.backward(_stored(dy, "CHWN")))
    # What AlexeyAB's CPU code accumulates is the gradient of the normalised factors, g:
    # mix_backward's third result.
    a = layer._factors(np.float64)
    _, _, g = mix_backward(dy, prev, srcs, a, layer.plans)
    np.testing.assert_allclose(g, updates, rtol=1e-12, atol=1e-13)


def _weights_numeric(layer, prev, srcs, dy):
    """d Σ dy·y / d weights by central differences of the loop reference."""
    def loss():
        return float(np.sum(dy * nl.shortcut_multilayer_forward(
            prev, srcs, layer.weights.tolist(), layer.normalization)))
    return naive.numeric_grad(loss, layer.weights)


@pytest.mark.parametrize("case", [c for c in MIXED if c[2] != "none"], ids=_mixed_ids)
def test_weight_gradient_equals_finite_differences(case):
    prev_shape, src_shapes, kind, norm = case
    rng = np.random.default_rng(3)
    layer = _mixed_layer(prev_shape, src_shapes, kind, norm)
    _random_weights(layer, rng)
    if norm == "relu":                                    # one weight held at the floor
        layer.weights[0, 0] = -0.25
    prev = rng.standard_normal(prev_shape)
    srcs = [rng.standard_normal(shape) for shape in src_shapes]
    dy = rng.standard_normal(prev_shape)
    numeric = _weights_numeric(layer, prev, srcs, dy)
    layer.forward([prev, *srcs], Pass.training())
    layer.backward(dy.copy())
    assert naive.max_rel_error(layer.weight_grads, numeric) < 1e-6
    if norm == "relu":
        assert layer.weight_grads[0, 0] == 0 == numeric[0, 0]       # below the floor: none


def test_softmax_gradient_keeps_the_share_of_eps_through_the_max():
    # a = e_i / (1e-4 + Σ e), e = exp(w − max w): the max moves the 1e-4's share. Leaving that
    # term out (the textbook softmax gradient) is off by about 1e-4 relative, which finite
    # differences see.
    rng = np.random.default_rng(4)
    layer = _mixed_layer((2, 3, 4, 4), [(2, 3, 4, 4)], "per_feature", "softmax")
    layer.weights[...] = [[0.3], [1.1]]
    prev, src = rng.standard_normal((2, 2, 3, 4, 4))
    dy = rng.standard_normal((2, 3, 4, 4))
    numeric = _weights_numeric(layer, prev, [src], dy)
    layer.forward([prev, src], Pass.training())
    layer.backward(dy.copy())
    a = layer._factors(np.float64)
    _, _, g = mix_backward(dy, prev, [src], a, layer.plans)
    textbook = a * (g - np.sum(g * a, axis=0))
    assert naive.max_rel_error(layer.weight_grads, numeric) < 1e-7
    assert naive.max_rel_error(textbook, numeric) > 1e-5


def test_relu_factors_follow_the_gpu_floor_where_the_cpu_relu_differs():
    # AlexeyAB's CPU normalises with relu (floor 0), its GPU with lrelu (floor 0.001): equal
    # while every weight is above 0.001, as in the fixture. A weight at -1 is 0 on the CPU and
    # 0.001 on the GPU; darkbp computes the GPU's.
    rng = np.random.default_rng(6)
    layer = _mixed_layer((1, 2, 3, 3), [(1, 2, 3, 3)], "per_channel", "relu")
    layer.weights[...] = [[-1.0, 0.5], [0.8, 2.0]]
    prev, src = rng.standard_normal((2, 1, 2, 3, 3))
    y = layer.forward([prev, src], EVAL)
    weights = layer.weights.tolist()
    gpu = nl.shortcut_multilayer_forward(prev, [src], weights, "relu", floor=0.001)
    cpu = nl.shortcut_multilayer_forward(prev, [src], weights, "relu", floor=0.0)
    np.testing.assert_allclose(y, gpu, rtol=1e-13)
    np.testing.assert_allclose(y[:, 1], cpu[:, 1], rtol=1e-13)      # channel 1: both above
    assert np.abs(y[:, 0] - cpu[:, 0]).max() > 1e-4                 # channel 0: they differ


def test_alexeyabs_weight_rules_are_not_the_gradient():
    # Both of AlexeyAB's rules (tests/naive_layers.py) differ from finite differences by far
    # more than rounding; darkbp's gradient equals them (test above).
    rng = np.random.default_rng(7)
    for norm in ("relu", "softmax"):
        layer = _mixed_layer((2, 3, 4, 4), [(2, 3, 4, 4), (2, 3, 4, 4)], "per_channel", norm)
        _random_weights(layer, rng)
        layer.weights[...] = np.abs(layer.weights) + 0.1
        prev, *srcs = rng.standard_normal((3, 2, 3, 4, 4))
        dy = rng.standard_normal((2, 3, 4, 4))
        numeric = _weights_numeric(layer, prev, srcs, dy)
        for rule in ("cpu", "gpu"):
            *_, updates = nl.shortcut_multilayer_backward(prev, srcs, dy, layer.weights.tolist(),
                                                          norm, rule=rule)
            assert naive.max_rel_error(updates, numeric) > 0.1, (norm, rule)


def test_weights_start_at_one_and_have_alexeyabs_shapes():
    feature = _mixed_layer((2, 5, 4, 4), [(2, 5, 4, 4), (2, 5, 4, 4)], "per_feature", "relu")
    channel = _mixed_layer((2, 5, 4, 4), [(2, 5, 4, 4), (2, 5, 4, 4)], "per_channel", "relu")
    plain = _mixed_layer((2, 5, 4, 4), [(2, 5, 4, 4), (2, 5, 4, 4)], "none", "none")
    # nweights: (n + 1) per_feature, (n + 1)·C per_channel (make_shortcut_layer), prev first
    assert feature.weights.shape == (3, 1) and channel.weights.shape == (3, 5)
    assert np.all(feature.weights == 1) and np.all(channel.weights == 1)
    assert plain.param_names == () and plain.parameter_count() == 0
    assert feature.weights_order() == ("weights",) and channel.parameter_count() == 15


def test_several_froms_of_other_sizes_pair_as_pjreddies_plan_does():
    # Where AlexeyAB would assert (another width and height), each `from` is paired with prev
    # as pjreddie's shortcut_cpu pairs it, weighted by its factor: with weights none and one
    # input at a time that is pjreddie's own sum.
    rng = np.random.default_rng(8)
    prev = rng.standard_normal((2, 4, 3, 3))
    big, small = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((2, 5, 1, 1))
    layer = _mixed_layer((2, 4, 3, 3), [big.shape, small.shape], "none", "none")
    y = layer.forward([prev, big, small], Pass.training())
    want = nl.shortcut_forward(prev, big) + nl.shortcut_forward(prev, small) - prev
    np.testing.assert_allclose(y, want, rtol=1e-13)
    dy = rng.standard_normal(prev.shape)
    d_prev, d_big, d_small = layer.backward(dy.copy())
    np.testing.assert_allclose(d_prev, dy, rtol=1e-15)
    np.testing.assert_allclose(d_big, nl.shortcut_backward(prev.shape, big.shape, dy)[1])
    np.testing.assert_allclose(d_small, nl.shortcut_backward(prev.shape, small.shape, dy)[1])


SEVERAL = NET + CONV + CONV + CONV + """[shortcut]
from=-2,-3
weights_type=per_channel
weights_normalization=softmax
activation=leaky
"""


def test_several_froms_table_lines(write_cfg):
    network = parse_network(write_cfg(SEVERAL))
    layer = network.layers[3]
    assert layer.sources == (2, 1, 0) and layer.sources_from == (1, 0)
    # pjreddie's line, the `from` indexes in its index field
    assert "%5d " % 3 + layer.darknet_line() == (
        "    3 res  1,0                   8 x   8 x   2   ->     8 x   8 x   2\n")
    # make_shortcut_layer: "%d, " per input, wt 2 (per_channel), wn 2 (softmax),
    # bflops 8·8·2·2 inputs·2 (weights) / 1e9
    assert layer.alexeyab_line() == (
        "Shortcut Layer: 1, 0,  wt = 2, wn = 2, outputs:   8 x   8 x   2 0.000 BF\n")
    assert layer.alexeyab_bflops == pytest.approx(8 * 8 * 2 * 2 * 2 / 1e9)
    assert layer.describe() == {"from": [1, 0], "activation": "leaky",
                                "weights_type": "per_channel",
                                "weights_normalization": "softmax"}


def test_alexeyab_notes_a_from_of_other_channels():
    # parse_shortcut's " (%4d x%4d x%4d) + (%4d x%4d x%4d) \n" per input of another shape;
    # the literal: alexeyab-own/csresnext50-panet-spp.txt, layer 8.
    layer = ShortcutLayer((128, 128, 128), [(64, 128, 128)], [4], "linear")
    theirs = (SHARED / "darknet-summary" / "alexeyab-own" / "csresnext50-panet-spp.txt")
    lines = theirs.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("   8 Shortcut Layer: 4,"))
    assert "%4d " % 8 + layer.alexeyab_line() == lines[at] + lines[at + 1]


def test_aliases_per_layer_and_avg_relu(write_cfg):
    text = SEVERAL.replace("per_channel", "per_layer").replace("softmax", "avg_relu")
    layer = parse_network(write_cfg(text)).layers[3]
    assert (layer.weights_type, layer.normalization) == ("per_feature", "relu")
    assert layer.alexeyab_line().startswith("Shortcut Layer: 1, 0,  wt = 1, wn = 1,")


def test_options_that_change_nothing_or_that_alexeyab_refuses_are_said(write_cfg):
    refused = parse_network(write_cfg(SEVERAL.replace("softmax", "none")))
    assert [str(w).split("warning: ")[1] for w in refused.warnings] == [
        "[shortcut] weights_type=per_channel with weights_normalization=none (also its "
        "default): AlexeyAB's parser refuses the pair; darkbp adds the inputs times the raw "
        "weights, as AlexeyAB's GPU code does"]
    idle = parse_network(write_cfg(SEVERAL.replace("weights_type=per_channel\n", "")))
    assert [w.line for w in idle.warnings] == [17]          # the [shortcut] line
    assert "weights_normalization=softmax without weights_type changes nothing" in str(
        idle.warnings[0])
    assert parse_network(write_cfg(SEVERAL)).warnings == []


def test_shortcut_weights_train_and_are_averaged():
    # Generic through param_names: SGD moves them (with weight decay, as AlexeyAB's
    # update_shortcut_layer does) and EMA averages them.
    network = parse_network(LAYER_CFGS / "shortcut_weighted.cfg").initialize(0, np.float32)
    rng = np.random.default_rng(9)
    x = rng.random((6,) + network.input_shape, dtype=np.float32)
    truth = np.eye(network.outputs, dtype=np.float32)[rng.integers(0, network.outputs, 6)]
    sgd = SGD(network.layers, 0.9, 0.0005, 6)
    ema = EMA(network.layers, 0.5)
    seen = []
    for step in range(2):
        network.forward(x, Pass.training())
        network.backward(truth)
        sgd.step(0.5)
        ema.update()
        seen.append({i: network.layers[i].weights.copy() for i in (2, 4, 6)})
    averaged = ema.averaged()
    for i in (2, 4, 6):
        assert np.all(seen[0][i] != 1) and np.all(seen[1][i] != seen[0][i])
        # (0.5·0.5·w1 + 0.5·w2) / (1 − 0.25)
        want = (0.25 * seen[0][i].astype(float) + 0.5 * seen[1][i]) / 0.75
        np.testing.assert_allclose(averaged[i]["weights"], want, rtol=1e-6)
