"""`darkbp gradcheck` passes on every shipped cfg and fails, naming the layer, on a broken one."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from darkbp.cli import main
from darkbp.gradcheck import gradcheck
from darkbp.layers.connected import ConnectedLayer
from darkbp.layers.convolutional import ConvolutionalLayer
from darkbp.network import parse_network
from tests.conftest import CFG_DIR, cfg_with

# yolo-digits.cfg at its 128 x 128: among the ~600,000 leaky pre-activations of a batch of
# 2 some always lie within 10·eps of the kink, so no input can be drawn; its layers and
# heads are checked at 32 x 32 instead (test_yolo_digits_passes_at_32x32). The same holds
# for yolov2-digits.cfg, the [region] detector at 128 x 128: tests/test_yolov2_digits.py
# checks it at 32 x 32.
DETECTORS = {"yolo-digits.cfg", "yolov2-digits.cfg"}
SHIPPED = sorted(path for path in CFG_DIR.glob("*.cfg") if path.name not in DETECTORS)
# The central differences of tiny_cifar.cfg's loss carry more float64 rounding than the
# 1e-8 that gradcheck's noise floor allows: after its nineteen batch norms, the last ones over
# 2x2 maps (8 values per channel at batch 2), the loss moves by up to ~4 per unit of an input
# pixel, and at eps 1e-6 the input gradient's errors reach 2.4e-8 (seed 1). They fall as 1/eps
# (8e-9 at 3e-6, measured over 300 input elements): rounding, not a wrong gradient. A step of
# 3e-6 keeps them under the floor, far from the kinks still (10·eps).
EPS = {"tiny_cifar.cfg": 3e-6}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_cfg_passes(path, seed):
    report = gradcheck(parse_network(path), batch=2, seed=seed, eps=EPS.get(path.name, 1e-6))
    assert report.passed, [row for row in report.rows if not row.passed]
    # every parameter tensor of every layer and the input were checked
    expected = [(i, name) for i, layer in enumerate(parse_network(path).layers)
                for name in layer.param_names] + [(None, "input")]
    assert [(row.layer, row.tensor) for row in report.rows] == expected
    assert all(row.checked == min(row.size, 64) for row in report.rows)


def test_every_activation_passes(write_cfg):
    for activation in ["linear", "logistic", "relu", "leaky", "tanh", "elu", "selu", "relie",
                       "ramp", "plse", "hardtan", "lhtan", "loggy", "mish", "swish", "hard_mish",
                       "gelu", "relu6", "revleaky", "normalize_channels",
                       "normalize_channels_softmax", "normalize_channels_softmax_maxval"]:
        path = write_cfg(f"""
            [net]
            width=5
            height=4
            channels=2
            [convolutional]
            filters=3
            size=3
            pad=1
            activation={activation}
            [connected]
            output=4
            activation={activation}
            [softmax]
        """)
        report = gradcheck(parse_network(path), batch=3, seed=3)
        assert report.passed, (activation, [r for r in report.rows if not r.passed])


@pytest.mark.parametrize("activation", ["mish", "swish", "hard_mish", "gelu", "relu6", "revleaky",
                                        "normalize_channels", "normalize_channels_softmax",
                                        "normalize_channels_softmax_maxval"])
def test_alexeyabs_activations_in_every_layer_that_reads_one(write_cfg, activation):
    # a batch-normalised convolution (relu6 and revleaky: ops/tail.py's fused tail), [local],
    # [shortcut] and [connected]. The shortcut adds a linear 1x1 convolution's output: two
    # relu6 outputs would sum to exactly 0, on its kink, wherever both are 0.
    path = write_cfg(f"""
        [net]
        width=4
        height=3
        channels=2
        [convolutional]
        batch_normalize=1
        filters=3
        size=3
        pad=1
        activation={activation}
        [local]
        filters=3
        size=3
        pad=1
        activation={activation}
        [convolutional]
        filters=3
        size=1
        activation=linear
        [shortcut]
        from=-3
        alpha=4
        activation={activation}
        [connected]
        output=4
        activation={activation}
        [softmax]
    """)
    report = gradcheck(parse_network(path), batch=3, seed=4)
    assert report.passed, [r for r in report.rows if not r.passed]


def test_softmax_groups_and_temperature(write_cfg):
    path = write_cfg("""
        [net]
        inputs=6
        [connected]
        output=8
        activation=tanh
        [softmax]
        groups=2
        temperature=1.7
    """)
    assert gradcheck(parse_network(path), batch=3).passed


def _transposed_kernel(original):
    def backward(self, dy, need_dx=True):
        dx = original(self, dy, need_dx)
        self.weight_grads[...] = np.swapaxes(self.weight_grads, 2, 3).copy()
        return dx
    return backward


def test_a_transposed_kernel_gradient_is_caught(monkeypatch):
    monkeypatch.setattr(ConvolutionalLayer, "backward",
                        _transposed_kernel(ConvolutionalLayer.backward))
    report = gradcheck(parse_network(CFG_DIR / "mnist.cfg"))
    failed = {(row.layer, row.tensor) for row in report.rows if not row.passed}
    assert failed == {(0, "weights"), (2, "weights")}
    assert not report.passed


def test_a_dropped_bias_term_is_caught_and_the_cli_exits_1(monkeypatch):
    original = ConnectedLayer.backward

    def without_bias_grad(self, dy, need_dx=True):
        saved = self.bias_grads.copy()
        dx = original(self, dy, need_dx)
        self.bias_grads[...] = saved          # the bias gradient is never added
        return dx

    monkeypatch.setattr(ConnectedLayer, "backward", without_bias_grad)
    result = CliRunner().invoke(main, ["gradcheck", str(CFG_DIR / "mnist.cfg")])
    assert result.exit_code == 1
    fail_lines = [line for line in result.stdout.splitlines() if line.endswith("FAIL │")]
    assert len(fail_lines) == 2                       # the two connected layers' biases
    assert all("connected" in line and "biases" in line for line in fail_lines)
    assert "GRADIENT CHECK FAILED" in result.stdout


def test_cli_passes_with_exit_0():
    result = CliRunner().invoke(main, ["gradcheck", str(CFG_DIR / "grouped.cfg"), "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "all gradients pass" in result.stdout
    assert "FAIL" not in result.stdout


def test_batch_norm_with_one_value_per_channel_is_a_clear_error():
    result = CliRunner().invoke(main, ["gradcheck", str(CFG_DIR / "batchnorm.cfg"), "--batch", "1"])
    assert result.exit_code == 2
    assert "batchnorm.cfg:42: [connected]: " not in result.stderr      # no section prefix here
    assert "batchnorm.cfg:42: [connected] with batch normalisation needs at least 2 values" \
        in result.stderr
    assert "Traceback" not in result.output


def test_yolo_digits_passes_at_32x32(tmp_path):
    small = cfg_with(CFG_DIR / "yolo-digits.cfg", tmp_path, width=32, height=32)
    network = parse_network(small)
    assert [layer.out_shape for layer in network.heads] == [(45, 2, 2), (45, 4, 4)]
    report = gradcheck(network, batch=2, seed=0, max_elements=16)
    assert report.passed, [row for row in report.rows if not row.passed]
