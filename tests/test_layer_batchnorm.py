"""[batchnorm] (darkbp/layers/batchnorm.py): y = scales·x̂ + biases per channel, on images and
on flat vectors, against loops, torch, Darknet's table line and AlexeyAB's .weights layout.

No Darknet golden run has a [batchnorm] section: pjreddie's CPU build crashes on it (its
make_batchnorm_layer allocates no x / x_norm buffers for the forward to copy into). Its
formulas are those of batch_normalize=1, tested against Darknet in test_ops_batchnorm.py.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from click.testing import CliRunner

from darkbp.cli import main
from darkbp.layers.batchnorm import BatchnormLayer
from darkbp.network import parse_network
from darkbp.ops.layout import as_nchw, layout_of
from darkbp.passes import EVAL, Pass
from darkbp.summary import darknet_text
from darkbp.weights import load_weights, save_weights
from tests import naive
from tests.conftest import assert_cfg_error

IMAGES = """\
[net]
batch=8
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[batchnorm]

[connected]
output=32
activation=leaky

[batchnorm]

[softmax]
"""


def _layer(shape, dtype=np.float64, seed=0):
    """A [batchnorm] on per-image `shape` (C, H, W) with random parameters and state."""
    layer = BatchnormLayer(shape, flat=shape[1:] == (1, 1))
    layer.init_params(np.random.default_rng(seed), dtype)
    rng = np.random.default_rng(seed + 1)
    c = shape[0]
    layer.biases[...] = rng.uniform(-1, 1, c)
    layer.scales[...] = rng.uniform(0.5, 2, c)
    layer.rolling_mean[...] = rng.standard_normal(c)
    layer.rolling_variance[...] = rng.uniform(0.5, 2, c)
    return layer


def _stored(x, layout):
    """x (N, C, H, W) as a batch stored in `layout`: itself, or a CHWN view."""
    if layout == "NCHW":
        return np.ascontiguousarray(x)
    return as_nchw(np.ascontiguousarray(x.transpose(1, 2, 3, 0)), "CHWN")


SHAPES = [(2, 3, 4, 5), (6, 2, 1, 1), (1, 3, 3, 3), (3, 1, 2, 2), (4, 5, 1, 1)]   # (N, C, H, W)


@pytest.mark.parametrize("layout", ["NCHW", "CHWN"])
@pytest.mark.parametrize("shape", SHAPES)
def test_training_forward_and_backward_equal_loops(shape, layout):
    n, c, h, w = shape
    layer = _layer((c, h, w))
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape) * 2 + rng.standard_normal((1, c, 1, 1))
    x_in = _stored(x, layout)
    dy = rng.standard_normal(shape)
    old_mean, old_var = layer.rolling_mean.copy(), layer.rolling_variance.copy()
    biases, scales = layer.biases.copy(), layer.scales.copy()

    y = layer.forward(x_in, Pass.training())
    dx = layer.backward(_stored(dy, layout).copy())

    loops, mean, variance = naive.batchnorm_forward_train(x.reshape(n, c, -1), scales)
    np.testing.assert_allclose(y, (loops + biases[:, None]).reshape(shape), rtol=1e-12, atol=1e-12)
    ndx, ndscales = naive.batchnorm_backward_train(x.reshape(n, c, -1), scales,
                                                   dy.reshape(n, c, -1))
    np.testing.assert_allclose(dx, ndx.reshape(shape), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.scale_grads, ndscales, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.bias_grads, dy.sum(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(layer.rolling_mean, 0.99 * old_mean + 0.01 * mean, rtol=1e-13)
    np.testing.assert_allclose(layer.rolling_variance, 0.99 * old_var + 0.01 * variance,
                               rtol=1e-13)
    assert layout_of(y) == layout_of(dx) == layout_of(x_in)
    np.testing.assert_array_equal(x_in, x)                   # the input is not written into


@pytest.mark.parametrize("layout", ["NCHW", "CHWN"])
@pytest.mark.parametrize("shape", SHAPES)
def test_evaluation_uses_the_rolling_statistics(shape, layout):
    n, c, h, w = shape
    layer = _layer((c, h, w), seed=3)
    state = layer.rolling_mean.copy(), layer.rolling_variance.copy()
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    y = layer.forward(_stored(x, layout), EVAL)
    expected = np.zeros(shape)
    for i in range(n):
        for k in range(c):
            for r in range(h):
                for q in range(w):
                    expected[i, k, r, q] = (layer.scales[k] * (x[i, k, r, q] - state[0][k])
                                            / np.sqrt(state[1][k] + 1e-5) + layer.biases[k])
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(layer.rolling_mean, state[0])
    np.testing.assert_array_equal(layer.rolling_variance, state[1])


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (8, 6, 1, 1)])
def test_training_matches_torch_batch_norm(shape):
    """torch's batch norm (biased variance) with weight scale·r and eps·r², r² = (M − 1)/M, is
    exactly the unbiased normalisation (see tests/test_ops_torch.py); biases are its shift."""
    torch = pytest.importorskip("torch")
    n, c, h, w = shape
    layer = _layer((c, h, w), seed=5)
    t_mean = torch.tensor(layer.rolling_mean.copy())
    t_var = torch.tensor(layer.rolling_variance.copy())
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape) * 3 + 1
    dy = rng.standard_normal(shape)
    r2 = (n * h * w - 1) / (n * h * w)
    tx = torch.tensor(x, requires_grad=True)
    ts = torch.tensor(layer.scales.copy(), requires_grad=True)
    tb = torch.tensor(layer.biases.copy(), requires_grad=True)
    view = tx if h * w > 1 else tx.reshape(n, c)          # a flat input: BatchNorm1d's (N, C)
    ty = torch.nn.functional.batch_norm(view, t_mean, t_var, ts * r2 ** 0.5, tb, training=True,
                                        momentum=0.01, eps=1e-5 * r2)
    tdx, tds, tdb = torch.autograd.grad(ty, [tx, ts, tb], torch.tensor(dy).reshape(ty.shape))

    y = layer.forward(x, Pass.training())
    dx = layer.backward(dy.copy())
    close = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y, ty.detach().numpy().reshape(shape), **close)
    np.testing.assert_allclose(dx, tdx.numpy(), **close)
    np.testing.assert_allclose(layer.scale_grads, tds.numpy(), **close)
    np.testing.assert_allclose(layer.bias_grads, tdb.numpy(), **close)
    np.testing.assert_allclose(layer.rolling_mean, t_mean.numpy(), **close)
    np.testing.assert_allclose(layer.rolling_variance, t_var.numpy(), **close)


def test_shapes_parameters_and_darknet_table_lines(tmp_path):
    path = tmp_path / "net.cfg"
    path.write_text(IMAGES)
    network = parse_network(path)
    image, flat = network.layers[1], network.layers[3]
    assert (image.type, image.in_shape, image.out_shape, image.flat) == \
        ("batchnorm", (8, 16, 16), (8, 16, 16), False)
    assert (flat.in_shape, flat.out_shape, flat.flat) == ((32, 1, 1), (32, 1, 1), True)
    assert image.param_shapes() == {name: (8,) for name in
                                    ("biases", "scales", "rolling_mean", "rolling_variance")}
    assert image.parameter_count() == 16 and image.bflops == 0
    assert image.batch_statistics and image.values_per_channel(8) == 8 * 16 * 16
    assert flat.values_per_channel(8) == 8
    # No Darknet table in darknet-golden/*/summary.txt or darknet-summary/ has a [batchnorm]
    # line (grep "Batch Normalization"): the literals are Darknet's format string in
    # make_batchnorm_layer (src/batchnorm_layer.c, both Darknets), "Batch Normalization Layer:
    # %d x %d x %d image\n" with w, h, c, after parse_network_cfg's "%5d " index; after a
    # [connected] Darknet's w = h = 1 and c = outputs. The conv line is bn_leaky/summary.txt's
    # first; the connected and softmax lines follow their formats (tests/test_summary_darknet.py).
    assert darknet_text(network).splitlines()[1:] == [
        "    0 conv      8  3 x 3 / 1    16 x  16 x   3   ->    16 x  16 x   8  0.000 BFLOPs",
        "    1 Batch Normalization Layer: 16 x 16 x 8 image",
        "    2 connected                            2048  ->    32",
        "    3 Batch Normalization Layer: 1 x 1 x 32 image",
        "    4 softmax                                          32",
    ]


def test_scales_start_at_one_and_the_rest_at_zero():
    layer = BatchnormLayer((3, 2, 2), flat=False)
    layer.init_params(np.random.default_rng(0), np.float32)
    np.testing.assert_array_equal(layer.scales, np.ones(3, np.float32))
    for name in ("biases", "rolling_mean", "rolling_variance"):
        np.testing.assert_array_equal(getattr(layer, name), np.zeros(3, np.float32))
    assert [name for name, _, _ in layer.parameters()] == ["biases", "scales"]


def test_weights_file_holds_alexeyabs_order(tmp_path):
    """AlexeyAB's save_batchnorm_weights / load_batchnorm_weights (src/parser.c): biases,
    scales, rolling_mean, rolling_variance, c floats each, after the conv's own arrays."""
    cfg = tmp_path / "net.cfg"
    cfg.write_text(IMAGES)
    network = parse_network(cfg).initialize(0, np.float32)
    rng = np.random.default_rng(1)
    blocks = []
    for layer in network.layers:
        for name in layer.weights_order():
            array = getattr(layer, name)
            array[...] = rng.standard_normal(array.shape)
            blocks.append((layer.index, name, array.copy()))
    assert [(i, name) for i, name, _ in blocks if i in (1, 3)] == [
        (i, name) for i in (1, 3) for name in ("biases", "scales", "rolling_mean",
                                               "rolling_variance")]
    by_hand = struct.pack("<iiiQ", 0, 2, 0, 16) + b"".join(
        a.astype("<f4").tobytes() for _, _, a in blocks)
    (tmp_path / "hand.weights").write_bytes(by_hand)
    loaded = parse_network(cfg).initialize(5, np.float32)
    assert load_weights(tmp_path / "hand.weights", loaded.layers) == 16
    for i, name, array in blocks:
        np.testing.assert_array_equal(getattr(loaded.layers[i], name), array)
    save_weights(tmp_path / "saved.weights", loaded.layers, seen=16)
    assert (tmp_path / "saved.weights").read_bytes() == by_hand


def test_a_convolution_after_a_flat_batchnorm_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text("[net]\nwidth=4\nheight=4\nchannels=1\n[connected]\noutput=6\n"
                    "[batchnorm]\n[convolutional]\nfilters=2\n")
    assert_cfg_error(path, 8, "convolutional",
                     "[convolutional] needs an image input, but the layer before it "
                     "([batchnorm]) outputs a flat vector of 6")


def test_one_value_per_channel_in_training_is_a_clear_error(tmp_path):
    path = tmp_path / "flat.cfg"
    path.write_text("[net]\nwidth=4\nheight=4\nchannels=1\n[connected]\noutput=6\n"
                    "[batchnorm]\n[softmax]\n")
    result = CliRunner().invoke(main, ["gradcheck", str(path), "--batch", "1"])
    assert result.exit_code == 2
    assert (f"{path}:7: [batchnorm] with batch normalisation needs at least 2 values per "
            "channel in a forward pass, but a batch of 1 gives 1") in result.stderr
    assert "Traceback" not in result.output


def test_options_are_not_read_and_say_so(tmp_path):
    path = tmp_path / "net.cfg"
    path.write_text("[net]\nwidth=4\nheight=4\nchannels=1\n[batchnorm]\nfilters=3\n"
                    "dontload=1\n[softmax]\n")
    messages = [(w.line, w.message) for w in parse_network(path).warnings]
    assert (6, "[batchnorm] unknown option 'filters' (Darknet: Unused field)") in messages
    assert (7, "[batchnorm] option 'dontload' is known to Darknet but not used by darkbp") \
        in messages
