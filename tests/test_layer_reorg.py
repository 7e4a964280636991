"""[reorg]: pjreddie's reorg_cpu permutation (stride, reverse), flatten, extra.

Against the loop references of tests/naive_layers.py (reorg_cpu transcribed, darknet=
"pjreddie" as SPEC 2a says), loop references written here for Darknet's flatten and
extra (which naive_layers does not model), torch's pixel_shuffle / pixel_unshuffle with
the channel order Darknet's permutation uses, Darknet's table lines (yolov2, go), and the
errors a bad section gives. No golden fixture of ../shared/darknet-golden/ uses [reorg].
"""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.layers.reorg import ReorgLayer
from darkbp.network import parse_network
from darkbp.passes import EVAL, Pass
from darkbp.summary import darknet_text
from tests import naive_layers as nl
from tests.conftest import SHARED, assert_cfg_error

# (N, C, H, W), stride, reverse: every shape pjreddie's reorg_cpu permutes
CASES = [
    ((2, 4, 4, 6), 2, False),
    ((1, 8, 2, 2), 2, False),
    ((2, 9, 3, 6), 3, False),
    ((1, 3, 5, 4), 1, False),
    ((3, 16, 4, 8), 4, False),
    ((2, 4, 3, 5), 2, True),
    ((1, 18, 2, 3), 3, True),
    ((2, 2, 3, 3), 1, True),
    ((1, 32, 1, 2), 4, True),
]


def chwn(a):
    """The same (N, C, H, W) values stored CHWN (ops/layout.py), as a view."""
    return np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def layer_for(shape, stride=1, reverse=False, flatten=False, extra=0):
    return ReorgLayer(shape[1:], stride=stride, reverse=reverse, flatten=flatten, extra=extra)


# --- loop references for what naive_layers does not model -------------------------------------

def darknet_flatten(x, size, layers, forward):
    """pjreddie/darknet src/blas.c flatten(x, size, layers, batch, forward) on (N, size·layers).

    i1 = c·size + i, i2 = i·layers + c; forward: swap[i2] = x[i1], else swap[i1] = x[i2].
    """
    n = x.shape[0]
    flat = np.asarray(x, float).reshape(n, -1)
    out = np.zeros_like(flat)
    for b in range(n):
        for c in range(layers):
            for i in range(size):
                i1 = c * size + i
                i2 = i * layers + c
                if forward:
                    out[b, i2] = flat[b, i1]
                else:
                    out[b, i1] = flat[b, i2]
    return out


def flatten_forward(x, reverse):
    """forward_reorg_layer with flatten=1: memcpy, then flatten(output, l.w·l.h, l.c, batch,
    reverse ? 0 : 1), l.w, l.h, l.c the layer's input sizes."""
    _, c, h, w = x.shape
    return darknet_flatten(x, w * h, c, forward=not reverse)


def flatten_backward(x_shape, dy, reverse):
    """backward_reorg_layer with flatten=1: memcpy into net.delta, then flatten(net.delta,
    l.w·l.h, l.c, batch, reverse ? 1 : 0): the inverse permutation."""
    _, c, h, w = x_shape
    return darknet_flatten(dy, w * h, c, forward=reverse).reshape(x_shape)


def extra_forward(x, extra):
    """forward_reorg_layer with extra: copy_cpu(l.inputs, input + i·l.inputs, 1, output +
    i·l.outputs, 1) per image into a calloc'd output of l.inputs + extra values per image."""
    n = x.shape[0]
    inputs = x[0].size
    out = np.zeros((n, inputs + extra))
    for b in range(n):
        for e in range(inputs):
            out[b, e] = x.reshape(n, -1)[b, e]
    return out


def extra_backward(x_shape, dy):
    """backward_reorg_layer with extra (and no reverse): copy_cpu(l.inputs, delta + i·l.outputs,
    1, net.delta + i·l.inputs, 1): the first l.inputs values of each image's delta."""
    n = x_shape[0]
    inputs = int(np.prod(x_shape[1:]))
    dx = np.zeros((n, inputs))
    for b in range(n):
        for e in range(inputs):
            dx[b, e] = dy.reshape(n, -1)[b, e]
    return dx.reshape(x_shape)


# --- the fast kernels against the loops --------------------------------------------------------

@pytest.mark.parametrize("shape, stride, reverse", CASES)
@pytest.mark.parametrize("layout", ["NCHW", "CHWN"])
def test_reorg_equals_darknets_reorg_cpu_loop(shape, stride, reverse, layout):
    rng = np.random.default_rng(shape[1] * 10 + stride)
    x = rng.standard_normal(shape)
    layer = layer_for(shape, stride, reverse)
    y = layer.forward(chwn(x) if layout == "CHWN" else x, Pass.training())
    expected = nl.reorg_forward(x, stride, reverse, darknet="pjreddie")
    np.testing.assert_array_equal(y, expected)
    assert y.shape == (shape[0],) + layer.out_shape
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(chwn(dy) if layout == "CHWN" else dy.copy())
    np.testing.assert_array_equal(dx, nl.reorg_backward(shape, dy, stride, reverse,
                                                        darknet="pjreddie"))


@pytest.mark.parametrize("shape, stride, reverse", [
    ((2, 4, 4, 6), 2, False), ((1, 3, 6, 3), 3, False), ((2, 3, 2, 5), 1, False),
    ((2, 8, 3, 2), 2, True), ((1, 9, 2, 2), 3, True),
])
@pytest.mark.parametrize("layout", ["NCHW", "CHWN"])
def test_flatten_equals_darknets_flatten_loop(shape, stride, reverse, layout):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape)
    layer = layer_for(shape, stride, reverse, flatten=True)
    y = layer.forward(chwn(x) if layout == "CHWN" else x, EVAL)
    assert y.shape == (shape[0],) + layer.out_shape      # the reorg shape rule, as Darknet's
    np.testing.assert_array_equal(y.reshape(shape[0], -1), flatten_forward(x, reverse))
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(chwn(dy) if layout == "CHWN" else dy.copy())
    np.testing.assert_array_equal(dx, flatten_backward(shape, dy, reverse))


@pytest.mark.parametrize("shape, extra", [((2, 1, 3, 3), 1), ((3, 2, 2, 4), 5), ((1, 4, 1, 1), 2)])
@pytest.mark.parametrize("layout", ["NCHW", "CHWN"])
def test_extra_equals_darknets_copy_loop(shape, extra, layout):
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape)
    layer = layer_for(shape, extra=extra)
    y = layer.forward(chwn(x) if layout == "CHWN" else x, EVAL)
    assert y.shape == (shape[0], x[0].size + extra, 1, 1) and layer.flat
    np.testing.assert_array_equal(y.reshape(shape[0], -1), extra_forward(x, extra))
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(chwn(dy) if layout == "CHWN" else dy.copy())
    np.testing.assert_array_equal(dx, extra_backward(shape, dy))
    assert not np.shares_memory(dx, dy)


@pytest.mark.parametrize("forward", [True, False])
def test_every_backward_is_the_adjoint_of_its_forward(forward):
    # Σ dy·f(x) == Σ f*(dy)·x for each form (all are linear), on the contract shapes.
    rng = np.random.default_rng(9)
    for layer in [layer_for((2, 4, 4, 4), 2), layer_for((2, 16, 2, 2), 2, True),
                  layer_for((2, 4, 4, 4), 2, flatten=True),
                  layer_for((2, 16, 2, 2), 2, True, flatten=True),
                  layer_for((2, 4, 4, 4), extra=2)]:
        x = rng.standard_normal((2,) + layer.in_shape)
        y = layer.forward(x, EVAL)
        dy = rng.standard_normal(y.shape)
        dx = layer.backward(dy.copy())
        assert np.sum(dy * y) == pytest.approx(np.sum(dx * x), rel=1e-13)


def test_float32_stays_float32_and_inputs_are_not_written():
    x = np.random.default_rng(0).standard_normal((2, 8, 4, 4)).astype(np.float32)
    before = x.copy()
    for layer in [layer_for(x.shape, 2), layer_for(x.shape, 2, True),
                  layer_for(x.shape, 2, flatten=True), layer_for(x.shape, extra=3)]:
        y = layer.forward(x, EVAL)
        assert y.dtype == np.float32
        assert layer.backward(np.ones_like(y)).dtype == np.float32
        assert layer.backward(np.ones_like(y), need_dx=False) is None
    np.testing.assert_array_equal(x, before)


def test_pjreddies_reorg_is_not_the_usual_space_to_depth():
    # SPEC 2a: Darknet's own permutation. On YOLOv2's 38 x 38 x 64 passthrough it differs
    # from the per-channel space-to-depth that AlexeyAB's fork computes.
    x = np.arange(64 * 38 * 38, dtype=float).reshape(1, 64, 38, 38)
    ours = layer_for(x.shape, 2).forward(x, EVAL)
    np.testing.assert_array_equal(ours, nl.reorg_forward(x, 2, darknet="pjreddie"))
    assert not np.array_equal(ours, nl.reorg_forward(x, 2, darknet="alexeyab"))


# --- torch ------------------------------------------------------------------------------------

def torch_reorg(torch, x, s, reverse):
    """pjreddie's permutation from torch's ops: pixel_shuffle/pixel_unshuffle order a block's
    s² channels as c2·s² + o, Darknet as o·C/s² + c2 (o the offset in the block)."""
    functional = torch.nn.functional
    n, c, h, w = x.shape
    small = c // (s * s)
    if reverse:
        channels = x.reshape(n, s * s, small, h, w).transpose(1, 2).reshape(n, c, h, w)
        return functional.pixel_shuffle(channels, s)
    unshuffled = functional.pixel_unshuffle(x.reshape(n, small, h * s, w * s), s)
    channels = unshuffled.reshape(n, small, s * s, h, w).transpose(1, 2).reshape(n, c, h, w)
    return channels.reshape(n, c * s * s, h // s, w // s)


@pytest.mark.parametrize("shape, stride, reverse", CASES)
def test_reorg_equals_torch_pixel_shuffles_and_their_autograd(shape, stride, reverse):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    layer = layer_for(shape, stride, reverse)
    y = layer.forward(x, Pass.training())
    tx = torch.tensor(x, requires_grad=True)
    ty = torch_reorg(torch, tx, stride, reverse)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    np.testing.assert_array_equal(layer.backward(dy.copy()), tx.grad.numpy())


# --- Darknet's table --------------------------------------------------------------------------

def test_table_line_equals_darknets_yolov2(write_cfg):
    # ../shared/darknet-summary/yolov2.txt, line 29
    darknet = "   27 reorg              / 2    38 x  38 x  64   ->    19 x  19 x 256\n"
    path = write_cfg("[net]\nwidth=38\nheight=38\nchannels=64\n[reorg]\nstride=2\n")
    assert "%5d " % 27 + parse_network(path).layers[0].darknet_line() == darknet


# ../shared/darknet-summary/go.txt, the whole table (go.cfg: 14 convolutions, [reorg] extra=1,
# [softmax]).
GO_TABLE = (
    "layer     filters    size              input                output\n"
    "    0 conv    256  3 x 3 / 1    19 x  19 x   1   ->    19 x  19 x 256  0.002 BFLOPs\n"
    + "".join("%5d conv    256  3 x 3 / 1    19 x  19 x 256   ->    19 x  19 x 256  0.426 "
              "BFLOPs\n" % i for i in range(1, 13)) +
    "   13 conv      1  1 x 1 / 1    19 x  19 x 256   ->    19 x  19 x   1  0.000 BFLOPs\n"
    "   14 reorg               361   ->   362\n"
    "   15 softmax                                         362\n"
)


@pytest.mark.parametrize("name", ["go", "go.test"])
def test_go_table_with_extra_equals_darknets(name):
    network = parse_network(SHARED / "darknet-cfg" / f"{name}.cfg")
    assert darknet_text(network) == GO_TABLE
    reorg = network.layers[14]
    assert (reorg.extra, reorg.out_shape, reorg.flat) == (1, (362, 1, 1), True)


def test_extra_appends_a_constant_zero_logit_for_the_softmax(write_cfg):
    # go.cfg's shape: the softmax sees 361 board logits and a 362nd that is always 0.
    path = write_cfg("[net]\nbatch=2\nwidth=19\nheight=19\nchannels=1\n[reorg]\nextra=1\n"
                     "[softmax]\n")
    network = parse_network(path).initialize(0, np.float64)
    x = np.random.default_rng(1).standard_normal((2, 1, 19, 19))
    outputs = network.run(x, Pass.training(), keep=True)
    np.testing.assert_array_equal(outputs[0].reshape(2, -1)[:, :361], x.reshape(2, -1))
    np.testing.assert_array_equal(outputs[0].reshape(2, -1)[:, 361], 0)
    p = outputs[1].reshape(2, -1)
    # softmax of the 362: e^0 / (Σ e^x + e^0)
    np.testing.assert_allclose(p[:, 361], 1 / (np.exp(x.reshape(2, -1)).sum(axis=1) + 1),
                               rtol=1e-13)


def test_defaults_stride_1_is_the_identity(write_cfg):
    path = write_cfg("[net]\nwidth=3\nheight=2\nchannels=5\n[reorg]\n")
    layer = parse_network(path).layers[0]
    assert (layer.stride, layer.reverse, layer.flatten, layer.extra) == (1, False, False, 0)
    x = np.random.default_rng(0).standard_normal((2, 5, 2, 3))
    np.testing.assert_array_equal(layer.forward(x, EVAL), x)
    assert parse_network(path).warnings == []


# --- bad input --------------------------------------------------------------------------------

NET = "[net]\nwidth=6\nheight=4\nchannels=8\n"
BAD = [
    ("stride not dividing", NET + "[reorg]\nstride=4\n", 6,
     "stride=4 must divide the input's width and height (6 x 4)"),
    ("flatten stride not dividing", NET + "[reorg]\nflatten=1\nstride=3\n", 7,
     "stride=3 must divide the input's width and height (6 x 4)"),
    ("channels not a multiple", "[net]\nwidth=4\nheight=4\nchannels=6\n[reorg]\nstride=2\n", 6,
     "reads the input as 6/4 channels of 8 x 8 pixels: the 6 input channels must be a "
     "multiple of stride² = 4"),
    ("reverse channels", NET + "[reorg]\nreverse=1\nstride=3\n", 7,
     "the 8 input channels must be a multiple of stride² = 9"),
    ("stride 0", NET + "[reorg]\nstride=0\n", 6, "'stride' must be at least 1, got 0"),
    ("negative extra", NET + "[reorg]\nextra=-1\n", 6, "'extra' must be at least 0"),
    ("extra with reverse", NET + "[reorg]\nextra=1\nreverse=1\n", 7,
     "cannot be combined with reverse=1"),
    ("extra with flatten", NET + "[reorg]\nflatten=1\nextra=1\n", 6,
     "cannot be combined with flatten=1"),
    ("extra with stride", NET + "[reorg]\nextra=1\nstride=2\n", 7,
     "cannot be combined with stride=2"),
    ("flat input", NET + "[connected]\noutput=4\n[reorg]\n", 7,
     "[reorg] needs an image input, but the layer before it ([connected])"),
]


@pytest.mark.parametrize("name, text, line, words", BAD, ids=[b[0] for b in BAD])
def test_bad_section_is_an_error_naming_file_line_and_section(tmp_path, name, text, line,
                                                              words):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    assert_cfg_error(path, line, "reorg", words)
