"""[avgpool] (alias [avg]): Darknet's global average pooling.

Against the loop reference (tests/naive_layers.py), torch's adaptive_avg_pool2d, Darknet's
printed table lines and Darknet's own numbers (darknet-golden/avgpool, where Darknet is right:
darkbp must agree to float32 rounding; the whole run is in tests/test_golden.py, the avg
layer's own output here). The gradcheck, split-pass and .weights checks run on
tests/layer_cfgs/avgpool.cfg (tests/test_layer_contract.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.layers.avgpool import AvgpoolLayer
from darkbp.network import parse_network
from darkbp.passes import EVAL, Pass
from darkbp.summary import darknet_text
from tests import naive_layers as nl
from tests.conftest import SHARED, assert_cfg_error
from tests.golden import Golden, relative
from tests.test_golden import FORWARD_TOL

SHAPES = [(1, 1, 1, 1), (2, 3, 5, 4), (3, 1, 7, 7), (2, 4, 1, 6), (4, 2, 6, 1), (1, 5, 8, 8)]


def chwn(x):
    """The same (N, C, H, W) values stored CHWN (a pixel's N values adjacent), as a view."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def layer_for(shape):
    _, c, h, w = shape
    return AvgpoolLayer((c, h, w), (c, 1, 1))


# --- the loop reference ------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("stored", ["NCHW", "CHWN"])
def test_forward_and_backward_equal_the_loop_reference(shape, stored):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    dy = rng.standard_normal((shape[0], shape[1], 1, 1))
    x_in = chwn(x) if stored == "CHWN" else x.copy()
    x_in.setflags(write=False)                       # the layer must not write into its input
    layer = layer_for(shape)
    y = layer.forward(x_in, Pass.training())
    assert y.shape == (shape[0], shape[1], 1, 1)
    np.testing.assert_allclose(y, nl.avgpool_forward(x), rtol=1e-13, atol=1e-15)
    dx = layer.backward(dy.copy())
    assert dx.shape == shape and dx.flags.writeable  # the layer before may write into it
    np.testing.assert_allclose(dx, nl.avgpool_backward(shape, dy), rtol=1e-13, atol=1e-15)


def test_backward_keeps_the_layout_its_input_came_in():
    # A convolution before it computes in either layout; handing dx back in the same one
    # saves its backward a transpose.
    x = chwn(np.random.default_rng(1).random((3, 2, 4, 4)))
    layer = layer_for(x.shape)
    layer.forward(x, EVAL)
    dx = layer.backward(np.ones((3, 2, 1, 1)))
    assert dx.transpose(1, 2, 3, 0).flags.c_contiguous


def test_float32_stays_float32():
    x = np.random.default_rng(2).random((2, 3, 4, 4), dtype=np.float32)
    layer = layer_for(x.shape)
    assert layer.forward(x, EVAL).dtype == np.float32
    assert layer.backward(np.ones((2, 3, 1, 1), np.float32)).dtype == np.float32


# --- torch -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_equal_torch_adaptive_avg_pool2d(shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7 + sum(shape))
    x = rng.standard_normal(shape)
    dy = rng.standard_normal((shape[0], shape[1], 1, 1))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.adaptive_avg_pool2d(xt, 1)
    (yt * torch.tensor(dy)).sum().backward()
    layer = layer_for(shape)
    np.testing.assert_allclose(layer.forward(x, Pass.training()), yt.detach().numpy(),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.backward(dy.copy()), xt.grad.numpy(), rtol=1e-12,
                               atol=1e-14)


# --- Darknet's table ---------------------------------------------------------------------------

def test_table_line_equals_darknets(write_cfg):
    # Copied from ../shared/darknet-summary/resnet18.txt (layer 26) and darknet.txt (layer 13).
    resnet18 = "   26 avg                        8 x   8 x 512   ->   512\n"
    darknet = "   13 avg                        4 x   4 x1024   ->  1024\n"
    for literal, (w, h, c) in [(resnet18, (8, 8, 512)), (darknet, (4, 4, 1024))]:
        network = parse_network(write_cfg(f"[net]\nwidth={w}\nheight={h}\nchannels={c}\n"
                                          "[avgpool]\n"))
        assert network.layers[0].darknet_line() == literal[6:]
        assert network.layers[0].out_shape == (c, 1, 1)


@pytest.mark.parametrize("name", ["cifar", "darknet", "tiny"])
def test_whole_tables_with_avg_equal_darknets(name):
    # Darknet's own tables (../shared/darknet-summary/NAME.txt): [avg] after convolutions,
    # its 1 x 1 x c output read by a [softmax] (and, in cifar, [dropout] on images).
    expected = (SHARED / "darknet-summary" / f"{name}.txt").read_text()
    assert darknet_text(parse_network(SHARED / "darknet-cfg" / f"{name}.cfg")) == expected


def test_alias_avg(write_cfg):
    network = parse_network(write_cfg("[net]\nwidth=3\nheight=2\nchannels=4\n[avg]\n"))
    assert type(network.layers[0]) is AvgpoolLayer
    assert not network.layers[0].flat                # a 1 x 1 x 4 image: a conv may follow


# --- bad input ---------------------------------------------------------------------------------

def test_avgpool_after_a_flat_layer_is_an_error_at_its_line(write_cfg):
    path = write_cfg("[net]\nwidth=4\nheight=4\nchannels=1\n[connected]\noutput=6\n"
                     "[avgpool]\n")
    assert_cfg_error(path, 7, "avgpool", "[avgpool] needs an image input", match="starts")


# --- Darknet's numbers (darknet-golden/avgpool: conv, max, conv/2, conv 1x1, avg, softmax) -----
# The run itself (forward, losses, weights, .weights files) is tests/test_golden.py's.

def test_golden_avg_layers_output_equals_darknets():
    fixture = Golden("avgpool")
    ours = fixture.network().run(fixture.input, EVAL, keep=True)[4]
    assert relative(ours.reshape(8, -1), fixture.layer_output("forward", 4)) < FORWARD_TOL
