"""AlexeyAB's [convolutional] dilation and antialiasing and [maxpool] maxpool_depth, beside
the loop references (tests/naive.py). Their gradients are checked by the contract test
(tests/layer_cfgs/conv_dilation.cfg, maxpool_depth.cfg), their numbers against AlexeyAB's
in tests/test_golden_alexeyab_convpool.py."""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.cfg import read_cfg_text
from darkbp.errors import DarkbpError
from darkbp.layers.convolutional import ConvolutionalLayer
from darkbp.network import build_network
from darkbp.ops.layout import as_nchw, ordered
from darkbp.ops.maxpool import maxpool_depth_backward, maxpool_depth_forward
from darkbp.passes import Pass
from tests import naive
from tests.conftest import assert_cfg_error, count_fuzz_builds


def network(body: str, width: int = 28, channels: int = 1):
    text = f"[net]\nbatch=2\nwidth={width}\nheight={width}\nchannels={channels}\n{body}"
    return build_network(read_cfg_text(text, "t.cfg"), "t.cfg")


# ---------------------------------------------------------------------- dilation
def test_explicit_padding_with_dilation_is_refused_at_its_line(tmp_path):
    # The alexeyab-new README's measured case: 3x3 dilation=2 padding=2 on 28x28, whose
    # table says 30x30 while its im2col pads by 4 and fills 32x32 (a heap overflow).
    path = tmp_path / "dilated.cfg"
    path.write_text("[net]\nwidth=28\nheight=28\nchannels=1\n[convolutional]\nfilters=2\n"
                    "size=3\npadding=2\ndilation=2\nactivation=linear\n")
    error = assert_cfg_error(path, 9, "convolutional", "dilation=2 with a 3x3 kernel and padding 2")
    assert "output 30 x 30" in error.message and "fills a 32 x 32 grid" in error.message
    assert "writes past its column buffer" in error.message


@pytest.mark.parametrize("options", [
    "size=3\ndilation=2",                 # no padding: AlexeyAB's sizes 26, its im2col 24
    "size=2\npad=1\ndilation=2",          # even size with pad=1: 29 against 30
])
def test_other_inconsistent_dilations_are_refused(options):
    with pytest.raises(DarkbpError, match="dilation=2") as error:
        network(f"[convolutional]\nfilters=2\n{options}\nactivation=linear\n")
    if "pad" not in options:                      # a smaller grid: nothing written past
        assert "writes past" not in str(error.value)


@pytest.mark.parametrize("size,dilation,stride", [(3, 2, 1), (3, 2, 2), (5, 3, 1), (7, 4, 3)])
def test_pad_1_with_an_odd_size_keeps_alexeyabs_output_size(size, dilation, stride):
    net = network(f"[convolutional]\nfilters=2\nsize={size}\nstride={stride}\npad=1\n"
                  f"dilation={dilation}\nactivation=linear\n", width=13)
    (layer,) = net.layers
    assert layer.out_shape == (2, (13 - 1) // stride + 1, (13 - 1) // stride + 1)
    net.initialize(0, np.float64)
    x = np.random.default_rng(0).standard_normal((2, 1, 13, 13))
    expected = naive.conv_forward(x, layer.weights, stride, (size // 2) * dilation, 1,
                                  dilation) + layer.biases[:, None, None]
    np.testing.assert_allclose(net.run(x)[0], expected, rtol=1e-12, atol=1e-12)


def test_a_1x1_kernel_ignores_dilation_as_alexeyab():
    (layer,) = network("[convolutional]\nfilters=2\nsize=1\ndilation=3\n").layers
    assert layer.dilation == 1
    assert "(" not in layer.alexeyab_line()


def test_dilation_must_be_positive():
    with pytest.raises(DarkbpError, match="dilation"):
        network("[convolutional]\nfilters=2\nsize=3\npad=1\ndilation=0\n")


# ---------------------------------------------------------------------- antialiasing
def _leaky(z):
    return np.where(z > 0, z, 0.1 * z)


@pytest.mark.parametrize("antialiasing,blur,padding", [
    (1, np.outer([1, 2, 1], [1, 2, 1]) / 16, 1),
    (2, np.full((2, 2), 0.25), 0),
])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_antialiasing_blurs_a_stride_1_conv_at_the_stride(antialiasing, blur, padding, stride):
    net = network(f"[convolutional]\nfilters=3\nsize=3\nstride={stride}\npad=1\n"
                  f"antialiasing={antialiasing}\nactivation=leaky\n", width=11, channels=2)
    net.initialize(1, np.float64)
    (layer,) = net.layers
    x = np.random.default_rng(2).standard_normal((2, 2, 11, 11))
    host = _leaky(naive.conv_forward(x, layer.weights, 1, 1, 1) + layer.biases[:, None, None])
    blurs = np.broadcast_to(blur, (3, 1) + blur.shape)
    expected = naive.conv_forward(host, blurs, stride, padding, 3)
    assert layer.out_shape == expected.shape[1:]
    np.testing.assert_allclose(net.run(x)[0], expected, rtol=1e-12, atol=1e-12)
    assert layer.param_names == ("biases", "weights")          # the blur is not trained


def test_antialiasing_table_lines():
    net = network("[convolutional]\nfilters=64\nsize=3\nstride=2\npad=1\nantialiasing=1\n"
                  "activation=leaky\n", width=56)
    (layer,) = net.layers
    # make_convolutional_layer prints the host at stride 1 (2·64·9·56·56 = 3.6e6 flops),
    # then its blur layer's line (groups = filters, 3x3, the cfg's stride, 2·64·9·28·28 =
    # 9.0e5), unindexed; "AA:  " goes to stdout.
    assert layer.alexeyab_line() == (
        "conv     64       3 x 3/ 1     56 x  56 x   1 ->   56 x  56 x  64 0.004 BF\n"
        "conv     64/  64  3 x 3/ 2     56 x  56 x  64 ->   28 x  28 x  64 0.001 BF\n")
    assert layer.alexeyab_bflops == pytest.approx(2 * 64 * 9 * 56 * 56 / 1e9)  # the host's
    assert layer.bflops == pytest.approx(2 * 64 * 9 * (56 * 56 + 28 * 28) / 1e9)  # darkbp's
    # pjreddie ignores antialiasing: a 3x3/2 conv, 2·64·9·28·28 flops.
    assert layer.darknet_line() == ("conv     64  3 x 3 / 2    56 x  56 x   1   ->    28 x  28 x"
                                    "  64  0.001 BFLOPs\n")
    assert layer.alexeyab_outputs == 56 * 56 * 64                # the host's l.outputs
    assert layer.out_shape == (64, 28, 28)


def test_unknown_antialiasing_is_refused():
    with pytest.raises(DarkbpError, match="antialiasing=3"):
        network("[convolutional]\nfilters=2\nsize=3\npad=1\nantialiasing=3\n")


def test_the_blur_weights_are_not_in_the_weights_file():
    plain = network("[convolutional]\nfilters=4\nsize=3\nstride=2\npad=1\n").layers[0]
    blurred = network("[convolutional]\nfilters=4\nsize=3\nstride=2\npad=1\n"
                      "antialiasing=1\n").layers[0]
    assert isinstance(blurred, ConvolutionalLayer)
    assert blurred.param_shapes() == plain.param_shapes()


# ---------------------------------------------------------------------- maxpool_depth
@pytest.mark.parametrize("channels,out_channels", [(8, 4), (7, 3), (5, 5), (6, 1), (4, 3)])
@pytest.mark.parametrize("layout", ["NCHW", "CHWN"])
def test_maxpool_depth_equals_naive(channels, out_channels, layout):
    rng = np.random.default_rng(channels * 10 + out_channels)
    x = rng.standard_normal((3, channels, 4, 5))
    x[0, :, 0, 0] = 1.5                                  # ties: the lowest channel wins
    stored = as_nchw(ordered(x, layout), layout)
    y, cache = maxpool_depth_forward(stored, out_channels)
    expected, arg = naive.maxpool_depth_forward(x, out_channels)
    np.testing.assert_array_equal(y, expected)
    dy = rng.standard_normal(y.shape)
    dx = maxpool_depth_backward(as_nchw(ordered(dy, layout), layout), cache)
    np.testing.assert_array_equal(dx, naive.maxpool_depth_backward(x.shape, arg, dy))
    inference, none = maxpool_depth_forward(stored, out_channels, backward=False)
    assert none is None
    np.testing.assert_array_equal(inference, expected)


def test_maxpool_depth_ignores_size_and_stride_and_prints_them():
    net = network("[convolutional]\nfilters=8\nsize=3\npad=1\n"
                  "[maxpool]\nmaxpool_depth=1\nout_channels=4\nsize=2\nstride=2\n")
    layer = net.layers[1]
    assert layer.out_shape == (4, 28, 28)
    assert layer.alexeyab_line() == (
        "max-depth          2x 2/ 2     28 x  28 x   8 ->   28 x  28 x   4 0.000 BF\n")
    net.initialize(0, np.float64)
    x = np.random.default_rng(0).random((2, 1, 28, 28))
    outputs = net.run(x, Pass.training(), keep=True)
    np.testing.assert_array_equal(outputs[1], naive.maxpool_depth_forward(outputs[0], 4)[0])


def test_maxpool_depth_needs_as_many_channels_as_it_outputs():
    with pytest.raises(DarkbpError, match="out_channels=9") as error:
        network("[convolutional]\nfilters=8\nsize=3\npad=1\n"
                "[maxpool]\nmaxpool_depth=1\nout_channels=9\n")
    assert error.value.line == 12


# ---------------------------------------------------------------------- any value
FUZZ = {
    "dilation": "[convolutional]\nfilters=4\nsize=3\npad=1\ndilation={value}\nactivation=tanh\n",
    "antialiasing": ("[convolutional]\nfilters=4\nsize=3\nstride=2\npad=1\n"
                     "antialiasing={value}\nactivation=tanh\n"),
    "out_channels": ("[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=tanh\n"
                     "[maxpool]\nmaxpool_depth=1\nout_channels={value}\n"),
}
VALUES = ["0", "1", "2", "3", "4", "5", "-1", "", "x", "1e9", "99999999999999999999", ".5",
          "nan", "2,3"]


@pytest.mark.parametrize("option", FUZZ)
def test_any_value_builds_and_runs_or_is_one_clear_error(option):
    template = ("[net]\nbatch=2\nwidth=7\nheight=7\nchannels=2\n" + FUZZ[option]
                + "[convolutional]\nfilters=3\nsize=1\nactivation=linear\n[avgpool]\n"
                  "[softmax]\n")
    assert count_fuzz_builds(template, VALUES, np.random.default_rng(0)) >= 2


# ---------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("opset", [13, 17, 18, 21])
@pytest.mark.parametrize("name", ["conv_dilation", "maxpool_depth"])
def test_onnxruntime_equals_forward_at_every_opset(tmp_path, name, opset):
    # Conv's dilations and ReduceMax (whose axes are an attribute before opset 18, an input
    # from it) in the oldest, the default and the newest opsets darkbp writes.
    pytest.importorskip("onnxruntime")
    from tests.test_export_onnx import LAYER_CFGS, compare, export, images, trained_files
    cfg = LAYER_CFGS / f"{name}.cfg"
    network, weights = trained_files(tmp_path, cfg)
    model = export(tmp_path, cfg, weights, "--opset", str(opset))
    if name == "maxpool_depth":
        assert "ReduceMax" in {node.op_type for node in model.graph.node}
    else:
        dilations = {tuple(attribute.ints) for node in model.graph.node if node.op_type == "Conv"
                     for attribute in node.attribute if attribute.name == "dilations"}
        assert dilations == {(1, 1), (2, 2), (3, 3)}
    assert compare(network, model, images(network)) < 1e-5
