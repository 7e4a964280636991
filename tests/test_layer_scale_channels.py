"""[scale_channels] (AlexeyAB's squeeze-excitation): the `from` layer's output scaled per
channel (or, scale_wh=1, per position) by the previous layer's.

Against the loop reference of tests/naive_layers.py (AlexeyAB's forward and CPU backward,
transcribed over its flat indexes), a torch float64 twin of an SE block, the table lines
and the errors a bad section gives. AlexeyAB's own numbers (alexeyab-new/se_scale_channels)
and its efficientnet_b0 table are checked in tests/test_golden_alexeyab_layers.py; gradcheck,
split passes and .weights on tests/layer_cfgs/scale_channels.cfg (test_layer_contract.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.layers.scale_channels import ScaleChannelsLayer
from darkbp.network import parse_network
from darkbp.ops.activations import ACTIVATIONS
from darkbp.passes import EVAL, Pass
from darkbp.summary import alexeyab_text, darknet_text
from tests import naive_layers as nl
from tests.conftest import assert_cfg_error

SHAPES = [(2, 3, 5, 4), (1, 1, 1, 1), (3, 8, 2, 7), (2, 6, 1, 1), (2, 1, 4, 3)]


def chwn(x):
    """The same (N, C, H, W) values stored CHWN (ops/layout.py), as a view."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def scales_shape(shape, scale_wh):
    n, c, h, w = shape
    return (n, 1, h, w) if scale_wh else (n, c, 1, 1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale_wh", [False, True])
@pytest.mark.parametrize("activation", ["linear", "tanh"])
@pytest.mark.parametrize("stored", ["NCHW", "CHWN"])
def test_forward_and_backward_equal_the_loop_reference(shape, scale_wh, activation, stored):
    rng = np.random.default_rng(sum(shape) + scale_wh)
    scales = rng.standard_normal(scales_shape(shape, scale_wh))
    src, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    act = ACTIVATIONS[activation]
    z = nl.scale_channels_forward(scales, src, scale_wh)
    dz = act.backward(z, act.forward(z), dy)
    want_scales, want_src = nl.scale_channels_backward(scales, src, dz, scale_wh)
    place = chwn if stored == "CHWN" else np.ascontiguousarray
    layer = ScaleChannelsLayer(scales.shape[1:], shape[1:], 0, scale_wh, activation)
    xs = [place(scales), place(src)]
    np.testing.assert_allclose(layer.forward(xs, EVAL), act.forward(z), rtol=1e-14,
                               atol=1e-15)
    y = layer.forward(xs, Pass.training())
    np.testing.assert_allclose(y, act.forward(z), rtol=1e-14, atol=1e-15)
    d_scales, d_src = layer.backward(place(dy.copy()))
    assert d_scales.shape == scales.shape
    np.testing.assert_allclose(d_scales, want_scales, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(d_src, want_src, rtol=1e-13, atol=1e-15)
    assert not np.shares_memory(d_scales, d_src)
    np.testing.assert_array_equal(xs[0], scales)          # the inputs are not written
    np.testing.assert_array_equal(xs[1], src)


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    scales = rng.standard_normal((2, 3, 1, 1)).astype(np.float32)
    src = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    layer = ScaleChannelsLayer((3, 1, 1), (3, 4, 4), 0, False, "logistic")
    y = layer.forward([scales, src], Pass.training())
    assert y.dtype == np.float32
    assert all(d.dtype == np.float32 for d in layer.backward(np.ones_like(y)))


def test_an_se_block_equals_its_torch_twin(write_cfg):
    # efficientnet_b0's squeeze-excitation, then a per-position scale: the `from` layer 0 is
    # read by the [avgpool] 1 and the [scale_channels] 4, layer 4 by the conv 5 and layer 6.
    torch = pytest.importorskip("torch")
    path = write_cfg("""
        [net]
        width=5
        height=4
        channels=2
        [convolutional]
        filters=4
        size=3
        pad=1
        activation=tanh
        [avgpool]
        [convolutional]
        filters=2
        size=1
        activation=leaky
        [convolutional]
        filters=4
        size=1
        activation=logistic
        [scale_channels]
        from=-4
        [convolutional]
        filters=1
        size=3
        pad=1
        activation=logistic
        [scale_channels]
        from=-2
        scale_wh=1
        activation=tanh
        [connected]
        output=4
        activation=linear
        [softmax]
        """)
    network = parse_network(path).initialize(2, np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3,) + network.input_shape)
    truth = np.eye(4)[[0, 3, 1]]
    network.forward(x, Pass.training())
    network.zero_grads()
    network.backward(truth)
    trained = [layer for layer in network.layers if layer.param_names]

    params = {}
    for layer in trained:
        for name, value, _ in layer.parameters():
            params[layer.index, name] = torch.tensor(value, requires_grad=True)
    f = torch.nn.functional

    def conv(i, y, pad=0):
        return f.conv2d(y, params[i, "weights"], params[i, "biases"], padding=pad)

    y0 = torch.tanh(conv(0, torch.tensor(x), 1))
    y1 = y0.mean(dim=(2, 3), keepdim=True)
    y2 = f.leaky_relu(conv(2, y1), 0.1)
    y3 = torch.sigmoid(conv(3, y2))
    y4 = y0 * y3
    y5 = torch.sigmoid(conv(5, y4, 1))
    y6 = torch.tanh(y4 * y5)
    logits = y6.reshape(3, -1) @ params[7, "weights"].T + params[7, "biases"]
    loss = -(torch.tensor(truth) * torch.log_softmax(logits, 1)).sum()
    loss.backward()
    for layer in trained:
        for name, _, grad in layer.parameters():
            np.testing.assert_allclose(grad, params[layer.index, name].grad.numpy(),
                                       rtol=1e-10, atol=1e-12, err_msg=f"{layer.index} {name}")


def test_table_lines(write_cfg):
    path = write_cfg("""
        [net]
        width=6
        height=5
        channels=3
        [convolutional]
        filters=4
        size=1
        activation=linear
        [avgpool]
        [scale_channels]
        from=0
        [convolutional]
        filters=1
        size=1
        [scale_channels]
        from=-2
        scale_wh=1
        """)
    network = parse_network(path)
    lines = darknet_text(network).splitlines()
    assert lines[3] == "    2 scale   0                  1 x   1 x   4   ->     6 x   5 x   4"
    assert lines[5] == "    4 scale   2                  6 x   5 x   1   ->     6 x   5 x   4"
    lines = alexeyab_text(network).splitlines()
    assert (lines[3], lines[5]) == ("   2 scale Layer: 0", "   4 scale Layer: 2")
    # avg_outputs counts the layers whose l.w and l.h exceed 1: [scale_channels] holds the
    # previous layer's (the scales') width and height there, 1 x 1 per channel.
    # (120 + 1·4 [avgpool l.w = 6] + 30 + 120) / 4, layer 2 (1 x 1) left out
    assert lines[-1] == "avg_outputs = %d " % ((120 + 4 + 30 + 120) // 4)


def test_swish_is_applied_and_the_user_told_alexeyab_outputs_zeros(write_cfg):
    # As [sam] (tests/test_layer_sam.py): AlexeyAB's activate_array has no swish case.
    path = write_cfg("""
        [net]
        width=3
        height=3
        channels=2
        [convolutional]
        filters=2
        size=1
        [avgpool]
        [scale_channels]
        from=0
        activation=swish
        """)
    network = parse_network(path)
    (warning,) = network.warnings
    assert warning.message.startswith("[scale_channels] activation=swish: AlexeyAB's Darknet "
                                      "outputs 0 for it in this layer")
    network.initialize(0, np.float64)
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 3))
    conv, avg, scaled = network.run(x, keep=True)
    np.testing.assert_allclose(scaled, ACTIVATIONS["swish"].forward(conv * avg), rtol=1e-14)


HEAD = ("[net]\nwidth=4\nheight=4\nchannels=2\n[convolutional]\nfilters=2\nsize=1\n"
        "[avgpool]\n")

BAD = [
    ("no_from", HEAD + "[scale_channels]\n", 9, "[scale_channels] needs 'from'"),
    ("after", HEAD + "[scale_channels]\nfrom=3\n", 10, "is layer 3, after this one (layer 2)"),
    ("not_1x1", HEAD.replace("[avgpool]\n", "") + "[convolutional]\nfilters=2\nsize=1\n"
     "[scale_channels]\nfrom=0\n", 12, "must then be 1 x 1 x 2, but it is 4 x 4 x 2"),
    ("channels", HEAD + "[convolutional]\nfilters=3\nsize=1\n[scale_channels]\nfrom=0\n", 13,
     "must then be 1 x 1 x 2, but it is 1 x 1 x 3"),
    ("wh_channels", HEAD.replace("[avgpool]\n", "") + "[convolutional]\nfilters=2\nsize=1\n"
     "[scale_channels]\nfrom=0\nscale_wh=1\n", 13,
     "which must then be 4 x 4 x 1, but it is 4 x 4 x 2"),
    ("wh_size", HEAD + "[scale_channels]\nfrom=0\nscale_wh=1\n", 11,
     "which must then be 4 x 4 x 1, but it is 1 x 1 x 2"),
    ("unknown_activation", HEAD + "[scale_channels]\nfrom=0\nactivation=swishh\n", 11,
     "unknown activation 'swishh'"),
]


@pytest.mark.parametrize("name, text, line, words", BAD, ids=[case[0] for case in BAD])
def test_bad_scale_channels_is_one_clear_error(tmp_path, name, text, line, words):
    path = tmp_path / f"{name}.cfg"
    path.write_text(text)
    assert_cfg_error(path, line, "scale_channels", words)
