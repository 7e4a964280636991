"""[sam] (AlexeyAB's spatial attention): the previous output times the `from` layer's.

Against the loop reference of tests/naive_layers.py (AlexeyAB's forward_sam_layer and its
backward, transcribed), a torch float64 twin of a graph where the `from` layer is read
twice, the table lines and the errors a bad section gives. AlexeyAB's own numbers
(alexeyab-new/sam) and its tables of yolov4-sam and cspx-p7 are checked in
tests/test_golden_alexeyab_layers.py; gradcheck, split passes and .weights on
tests/layer_cfgs/sam.cfg (tests/test_layer_contract.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.layers.sam import SamLayer
from darkbp.network import parse_network
from darkbp.ops.activations import ACTIVATIONS
from darkbp.passes import EVAL, Pass
from darkbp.summary import alexeyab_text, darknet_text
from tests import naive_layers as nl
from tests.conftest import assert_cfg_error

SHAPES = [(2, 3, 5, 4), (1, 1, 1, 1), (3, 8, 2, 7), (2, 6, 1, 1)]


def chwn(x):
    """The same (N, C, H, W) values stored CHWN (ops/layout.py), as a view."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", ["linear", "logistic", "leaky"])
@pytest.mark.parametrize("stored", ["NCHW", "CHWN"])
def test_forward_and_backward_equal_the_loop_reference(shape, activation, stored):
    rng = np.random.default_rng(sum(shape))
    prev, src = rng.standard_normal(shape), rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    act = ACTIVATIONS[activation]
    z = nl.sam_forward(prev, src)
    want_prev, want_src = nl.sam_backward(prev, src, dy * act.backward(z, act.forward(z),
                                                                       np.ones(shape)))
    place = chwn if stored == "CHWN" else np.ascontiguousarray
    layer = SamLayer(shape[1:], 0, activation)
    xs = [place(prev), place(src)]
    y = layer.forward(xs, Pass.training())
    np.testing.assert_allclose(y, act.forward(z), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(layer.forward(xs, EVAL), act.forward(z), rtol=1e-14, atol=1e-15)
    layer.forward(xs, Pass.training())
    d_prev, d_src = layer.backward(place(dy.copy()))
    np.testing.assert_allclose(d_prev, want_prev, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(d_src, want_src, rtol=1e-13, atol=1e-15)
    assert not np.shares_memory(d_prev, d_src)
    np.testing.assert_array_equal(xs[0], prev)            # the inputs are not written
    np.testing.assert_array_equal(xs[1], src)


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    prev, src = (rng.standard_normal((2, 3, 4, 4)).astype(np.float32) for _ in range(2))
    layer = SamLayer((3, 4, 4), 0, "logistic")
    y = layer.forward([prev, src], Pass.training())
    assert y.dtype == np.float32
    assert all(d.dtype == np.float32 for d in layer.backward(np.ones_like(y)))


def test_a_graph_reading_the_from_layer_twice_equals_its_torch_twin(write_cfg):
    # Layer 0 feeds the conv 1, the [sam] 2 (as `from`) and the [sam] 3 (as `from` again):
    # its gradient is the sum of all three, which AlexeyAB's CPU would not give (it assigns).
    torch = pytest.importorskip("torch")
    path = write_cfg("""
        [net]
        width=4
        height=3
        channels=2
        [convolutional]
        filters=3
        size=3
        pad=1
        activation=tanh
        [convolutional]
        filters=3
        size=1
        activation=logistic
        [sam]
        from=0
        [sam]
        from=0
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
    conv0, conv1, _, _, connected, _ = network.layers

    params = {}
    for layer in (conv0, conv1, connected):
        for name, value, _ in layer.parameters():
            params[layer.index, name] = torch.tensor(value, requires_grad=True)
    f = torch.nn.functional
    tx = torch.tensor(x)
    y0 = torch.tanh(f.conv2d(tx, params[0, "weights"], params[0, "biases"], padding=1))
    y1 = torch.sigmoid(f.conv2d(y0, params[1, "weights"], params[1, "biases"]))
    y2 = y1 * y0
    y3 = torch.tanh(y2 * y0)
    logits = y3.reshape(3, -1) @ params[4, "weights"].T + params[4, "biases"]
    loss = -(torch.tensor(truth) * torch.log_softmax(logits, 1)).sum()
    loss.backward()
    for layer in (conv0, conv1, connected):
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
        [convolutional]
        filters=4
        size=1
        activation=logistic
        [sam]
        from=0
        """)
    network = parse_network(path)
    assert darknet_text(network).splitlines()[3] == (
        "    2 sam    0                   6 x   5 x   4   ->     6 x   5 x   4")
    # make_sam_layer prints "scale Layer: %d\n" with the `from` index, as [scale_channels]
    assert alexeyab_text(network).splitlines()[3] == "   2 scale Layer: 0"


def test_options_and_default_activation(write_cfg):
    path = write_cfg("""
        [net]
        width=4
        height=4
        channels=2
        [convolutional]
        filters=2
        size=1
        [sam]
        from=-1
        [sam]
        from=1
        activation=leaky
        """)
    network = parse_network(path)
    plain, leaky = network.layers[1:]
    assert (plain.source, plain.activation, plain.sources) == (0, "linear", (0, 0))
    assert (leaky.source, leaky.activation, leaky.sources) == (1, "leaky", (1, 1))
    assert network.warnings == []


@pytest.mark.parametrize("activation", ["mish", "swish"])
def test_mish_and_swish_are_applied_and_the_user_told_alexeyab_outputs_zeros(write_cfg,
                                                                             activation):
    # AlexeyAB's activate_array (CPU) and activate_array_ongpu (GPU) have no case for them
    # and return 0: AlexeyAB's [sam] outputs zeros. darkbp applies the function.
    path = write_cfg(f"""
        [net]
        width=3
        height=3
        channels=2
        [convolutional]
        filters=2
        size=1
        [convolutional]
        filters=2
        size=1
        activation=logistic
        [sam]
        from=-2
        activation={activation}
        """)
    network = parse_network(path)
    (warning,) = network.warnings
    assert warning.line == 12
    assert warning.message.startswith(f"[sam] activation={activation}: AlexeyAB's Darknet "
                                      f"outputs 0 for it in this layer")
    network.initialize(0, np.float64)
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 3))
    outputs = network.run(x, keep=True)
    z = outputs[1] * outputs[0]
    np.testing.assert_allclose(outputs[2], ACTIVATIONS[activation].forward(z), rtol=1e-14)
    assert np.abs(outputs[2]).max() > 0.1                          # not AlexeyAB's zeros


SAM_HEAD = "[net]\nwidth=4\nheight=4\nchannels=2\n[convolutional]\nfilters=2\nsize=1\n"


BAD = [
    ("no_from", SAM_HEAD + "[sam]\nactivation=linear\n", 8, "[sam] needs 'from'"),
    ("itself", SAM_HEAD + "[sam]\nfrom=1\n", 9, "from=1 is this layer itself (layer 1)"),
    ("before_first", SAM_HEAD + "[sam]\nfrom=-3\n", 9, "points before the first layer"),
    ("other_shape", SAM_HEAD + "[convolutional]\nfilters=3\nsize=1\n[sam]\nfrom=0\n", 12,
     "the 'from' layer 0 outputs 4 x 4 x 2 and the previous layer 4 x 4 x 3"),
    ("unknown_activation", SAM_HEAD + "[sam]\nfrom=0\nactivation=mush\n", 10,
     "unknown activation 'mush'"),
]


@pytest.mark.parametrize("name, text, line, words", BAD, ids=[case[0] for case in BAD])
def test_bad_sam_is_one_clear_error(tmp_path, name, text, line, words):
    path = tmp_path / f"{name}.cfg"
    path.write_text(text)
    assert_cfg_error(path, line, "sam", words)
