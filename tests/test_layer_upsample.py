"""[upsample]: nearest × scale, negative stride = block sums × scale; backward the adjoint.

Against the loop references of tests/naive_layers.py (upsample_cpu transcribed), against
torch (interpolate(mode="nearest"), avg_pool2d · s²), Darknet's table lines, and the
errors a bad section gives. No golden fixture of ../shared/darknet-golden/ uses [upsample].
"""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.layers.upsample import UpsampleLayer
from darkbp.network import parse_network
from darkbp.ops.layout import ordered
from darkbp.passes import EVAL, Pass
from darkbp.summary import darknet_text
from tests import naive_layers as nl
from tests.conftest import assert_cfg_error

# (N, C, H, W), stride, scale: strides both ways, odd sizes, a scale that is not 1
CASES = [
    ((2, 3, 4, 5), 2, 1.0),
    ((1, 1, 1, 1), 3, 1.0),
    ((3, 2, 3, 2), 3, 0.5),
    ((2, 4, 5, 3), 1, -2.0),
    ((2, 3, 4, 6), -2, 1.0),
    ((1, 2, 9, 6), -3, 0.25),
    ((3, 1, 4, 4), -4, 1.5),
    ((2, 2, 5, 5), -1, 2.0),
]


def layer_for(shape, stride, scale):
    return UpsampleLayer(shape[1:], stride=stride, scale=scale)


def chwn(a):
    """The same (N, C, H, W) values stored CHWN (ops/layout.py), as a view."""
    return np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


@pytest.mark.parametrize("shape, stride, scale", CASES)
@pytest.mark.parametrize("layout", ["NCHW", "CHWN"])
def test_forward_and_backward_equal_the_loop_reference(shape, stride, scale, layout):
    rng = np.random.default_rng(abs(stride) * 10 + shape[2])
    x = rng.standard_normal(shape)
    layer = layer_for(shape, stride, scale)
    y = layer.forward(chwn(x) if layout == "CHWN" else x, Pass.training())
    np.testing.assert_allclose(y, nl.upsample_forward(x, stride, scale), rtol=1e-14, atol=0)
    assert y.shape == (shape[0],) + layer.out_shape
    assert np.shares_memory(ordered(y, layout), y)   # stored as x: no transposing copy
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(chwn(dy) if layout == "CHWN" else dy.copy())
    np.testing.assert_allclose(dx, nl.upsample_backward(shape, dy, stride, scale),
                               rtol=1e-13, atol=1e-15)


def test_float32_stays_float32_and_inputs_are_not_written():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    before = x.copy()
    for stride in (2, -2):
        layer = layer_for(x.shape, stride, 0.5)
        y = layer.forward(x, EVAL)
        assert y.dtype == np.float32
        assert layer.backward(np.ones_like(y)).dtype == np.float32
    np.testing.assert_array_equal(x, before)


def test_by_hand():
    x = np.array([[[[1., 2.], [3., 4.]]]])
    up = layer_for(x.shape, 2, 3.0).forward(x, EVAL)
    np.testing.assert_array_equal(up[0, 0], [[3, 3, 6, 6], [3, 3, 6, 6],
                                             [9, 9, 12, 12], [9, 9, 12, 12]])
    # a sum of each 2x2 block, not a mean: (1+2+3+4)·0.5 = 5
    down = layer_for(x.shape, -2, 0.5).forward(x, EVAL)
    np.testing.assert_array_equal(down, [[[[5.0]]]])


def test_need_dx_false_returns_nothing():
    layer = layer_for((1, 1, 2, 2), 2, 1.0)
    layer.forward(np.ones((1, 1, 2, 2)), EVAL)
    assert layer.backward(np.ones((1, 1, 4, 4)), need_dx=False) is None


# --- torch ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, stride, scale", [c for c in CASES if c[1] > 0])
def test_upsample_equals_torch_nearest_interpolation_and_its_autograd(shape, stride, scale):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    layer = layer_for(shape, stride, scale)
    y = layer.forward(x, Pass.training())
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.interpolate(tx, scale_factor=stride, mode="nearest") * scale
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-15, atol=0)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(layer.backward(dy.copy()), tx.grad.numpy(), rtol=1e-13,
                               atol=1e-15)


@pytest.mark.parametrize("shape, stride, scale", [c for c in CASES if c[1] < 0])
def test_downsample_equals_torch_average_pooling_times_s2_and_its_autograd(shape, stride,
                                                                            scale):
    torch = pytest.importorskip("torch")
    s = -stride
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    layer = layer_for(shape, stride, scale)
    y = layer.forward(x, Pass.training())
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.avg_pool2d(tx, s) * (s * s) * scale
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-13, atol=1e-14)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(layer.backward(dy.copy()), tx.grad.numpy(), rtol=1e-13,
                               atol=1e-15)


# --- Darknet's table --------------------------------------------------------------------------

def test_table_line_equals_darknets_yolov3(write_cfg):
    # ../shared/darknet-summary/yolov3.txt, lines 87 and 99
    darknet = ["   85 upsample            2x    19 x  19 x 256   ->    38 x  38 x 256",
               "   97 upsample            2x    38 x  38 x 128   ->    76 x  76 x 128"]
    for line, (side, channels) in zip(darknet, [(19, 256), (38, 128)]):
        path = write_cfg(f"[net]\nwidth={side}\nheight={side}\nchannels={channels}\n"
                         "[upsample]\nstride=2\n")
        layer = parse_network(path).layers[0]
        assert "%5d " % int(line[:5]) + layer.darknet_line() == line + "\n"


def test_downsample_table_line(write_cfg):
    # No Darknet output holds a downsample line: this one is formatted by hand from the printf
    # in pjreddie/darknet src/upsample_layer.c, make_upsample_layer:
    # "downsample         %2dx  %4d x%4d x%4d   ->  %4d x%4d x%4d\n", printed with the
    # positive stride.
    path = write_cfg("[net]\nwidth=38\nheight=38\nchannels=128\n[upsample]\nstride=-2\n")
    assert darknet_text(parse_network(path)).splitlines()[1] == (
        "    0 downsample          2x    38 x  38 x 128   ->    19 x  19 x 128")


def test_defaults_are_stride_2_and_scale_1(write_cfg):
    path = write_cfg("[net]\nwidth=3\nheight=2\nchannels=4\n[upsample]\n")
    layer = parse_network(path).layers[0]
    assert (layer.stride, layer.scale, layer.out_shape) == (2, 1.0, (4, 4, 6))
    assert parse_network(path).warnings == []


# --- bad input --------------------------------------------------------------------------------

NET = "[net]\nwidth=6\nheight=4\nchannels=2\n"
BAD = [
    ("stride 0", NET + "[upsample]\nscale=2\nstride=0\n", 7, "'stride' must not be 0"),
    ("downsample not dividing", NET + "[upsample]\nstride=-4\n", 6,
     "stride=-4 sums 4x4 blocks: 4 must divide the input's width and height (6 x 4)"),
    ("downsample larger than input", NET + "[upsample]\nstride=-8\n", 6,
     "8 must divide the input's width and height"),
    ("flat input", NET + "[connected]\noutput=4\n[upsample]\n", 7,
     "[upsample] needs an image input, but the layer before it ([connected])"),
    ("non-numeric scale", NET + "[upsample]\nscale=big\n", 6, "'scale' must be a number"),
]


@pytest.mark.parametrize("name, text, line, words", BAD, ids=[b[0] for b in BAD])
def test_bad_section_is_an_error_naming_file_line_and_section(tmp_path, name, text, line,
                                                              words):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    assert_cfg_error(path, line, "upsample", words)
