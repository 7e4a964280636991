"""Shared test helpers: the repository's folders, a cfg writer and a cfg at another [net]
setting, a small mnist-det, small real layers, the check of a bad cfg's one-line error, a
fuzz loop over one cfg value, and the comparison of a network with its torch twin."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from darkbp.cfg import read_cfg_text
from darkbp.cli import main
from darkbp.datasets import load_dataset
from darkbp.errors import DarkbpError
from darkbp.layers.connected import ConnectedLayer
from darkbp.layers.convolutional import ConvolutionalLayer
from darkbp.network import build_network, parse_network
from darkbp.passes import Pass
from darkbp.summary import darknet_text, summary_data

ROOT = Path(__file__).resolve().parent.parent
CFG_DIR = ROOT / "cfg"
SAMPLE = ROOT / "data" / "mnist-sample"         # the 4,000 MNIST digits shipped in data/
SHARED = ROOT.parent / "shared"


@pytest.fixture
def write_cfg(tmp_path):
    """write_cfg(text) -> path of a cfg file holding the dedented text."""
    def write(text: str, name: str = "net.cfg") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path
    return write


def cfg_with(path: Path, folder: Path, **net) -> Path:
    """A copy of the cfg in `folder` with these [net] options' lines replaced
    (cfg_with(path, tmp_path, width=32, height=32))."""
    text = path.read_text()
    for key, value in net.items():
        text, count = re.subn(rf"(?m)^{key}\s*=.*$", f"{key}={value}", text, count=1)
        assert count == 1, f"{path} has no {key}= line"
    out = folder / f"{path.stem}-{'-'.join(f'{k}{v}' for k, v in net.items())}.cfg"
    out.write_text(text)
    return out


def make_mnist_det(tmp_path: Path, monkeypatch, train: int, valid: int) -> None:
    """A small mnist-det in a dataset cache of its own under tmp_path (--data mnist-det)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = CliRunner().invoke(main, ["data", "make", "mnist-det", "--train", str(train),
                                     "--valid", str(valid)])
    assert made.exit_code == 0, made.output


@pytest.fixture(scope="module")
def sample():
    """The shipped MNIST sample as a Dataset."""
    return load_dataset(str(SAMPLE))


def data_root() -> Path | None:
    """$DARKBP_DATA as an absolute path (the README's command gives a relative one)."""
    value = os.environ.get("DARKBP_DATA")
    return Path(value).resolve() if value else None


def zeroed(layer, dtype=np.float32):
    """`layer` with its parameters, gradients and state allocated in `dtype`, all zero."""
    layer.init_params(np.random.default_rng(0), dtype)
    for name in (*layer.param_names, *layer.state_names):
        getattr(layer, name).fill(0)
    return layer


def conv_layer(channels, filters, size, batch_normalize, groups=1, side=4, dtype=np.float32):
    """A zeroed [convolutional] on side x side inputs: stride 1, no padding, linear."""
    return zeroed(ConvolutionalLayer((channels, side, side), filters, size, 1, 0, groups,
                                     "linear", batch_normalize), dtype)


def connected_layer(inputs, outputs, batch_normalize, dtype=np.float32):
    """A zeroed [connected], linear."""
    return zeroed(ConnectedLayer((inputs, 1, 1), outputs, "linear", batch_normalize), dtype)


def assert_error(result, where: str, *words: str) -> None:
    """Exit 2, nothing on stdout, one line on stderr `darkbp: error: WHERE...` with `words`."""
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    line, = result.stderr.splitlines()
    assert line.startswith(f"darkbp: error: {where}"), line
    for word in words:
        assert word in line, (word, line)


def assert_cfg_error(path, line, section, words, match="contains"):
    """The cfg at `path` is one DarkbpError at `line` of [section], and the CLI says so.

    parse_network raises a DarkbpError naming (file, line, section) whose message holds
    `words` (match="contains"), starts with them ("starts") or is exactly them ("equals");
    `darkbp summary` then exits 2 without a traceback, printing nothing on stdout and the
    one line `darkbp: error: {path}:{line}: [{section}]: ...` holding `words` on stderr.
    Returns the error.
    """
    with pytest.raises(DarkbpError) as caught:
        parse_network(path)
    error = caught.value
    where = f"{path}:{line}: [{section}]: "
    assert (error.file, error.line, error.section) == (str(path), line, section)
    assert str(error) == where + error.message
    assert words in error.message
    if match == "starts":
        assert error.message.startswith(words)
    elif match == "equals":
        assert error.message == words
    else:
        assert match == "contains", match
    result = CliRunner().invoke(main, ["summary", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.stderr.startswith(f"darkbp: error: {where}")
    if match != "contains":
        assert result.stderr.startswith(f"darkbp: error: {where}{words}")
    assert words in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""
    return error


def count_fuzz_builds(template, values, rng):
    """How many of the cfgs template.format(value=v), v in `values`, build.

    Each one must either raise a DarkbpError naming 'fuzz.cfg' and a line, or build, print
    its Darknet table and summary, and run a float64 training forward and backward (with
    the input gradient) on an input drawn from `rng`: `template` is a batch=2 network whose
    last layers give 3 outputs to a [softmax].
    """
    built = 0
    for value in values:
        try:
            network = build_network(read_cfg_text(template.format(value=value), "fuzz.cfg"),
                                    "fuzz.cfg")
        except DarkbpError as error:
            assert error.file == "fuzz.cfg" and error.line is not None, value
            continue
        built += 1
        darknet_text(network)
        summary_data(network)
        network.initialize(0, np.float64)
        network.forward(rng.random((2,) + network.input_shape), Pass.training())
        network.backward(np.eye(3)[[0, 2]], input_grad=True)
    return built


# --- a network against its torch float64 twin ----------------------------------------------

def torch_twin(network, rng, x_shape):
    """The start of a torch twin of `network`: (x, tx, params).

    Every bias of `network` is first drawn from U(−0.3, 0.3) (non-zero biases: no value
    sits at an activation's kink), then the input x from U(0, 1), both from `rng`; tx is x
    and params (torch_params) the parameters as torch leaf tensors for the twin to use.
    """
    import torch
    for layer in network.layers:
        for name, value, _ in layer.parameters():
            if name == "biases":
                value[...] = rng.uniform(-0.3, 0.3, value.shape)
    x = rng.random(x_shape)
    return x, torch.tensor(x, requires_grad=True), torch_params(network)


def torch_params(network):
    """Every parameter of `network` as a torch leaf tensor, keyed (layer index, name)."""
    import torch
    return {(layer.index, name): torch.tensor(value, requires_grad=True)
            for layer in network.layers for name, value, _ in layer.parameters()}


def assert_equals_torch_twin(network, x, truth, tx, params, logits):
    """darkbp's training pass of `network` on `x` against its torch twin.

    The twin computed `logits` from the leaf `tx` (x) and `params` (torch_params); its cost
    is softmax cross-entropy against `truth`, summed, as darkbp's [softmax]. Checks the
    probabilities and the cost (rtol 1e-12), the input gradient and every parameter's
    gradient (rtol 1e-10, atol 1e-13) against torch's autograd.
    """
    import torch
    functional = torch.nn.functional
    loss = -(torch.tensor(truth) * functional.log_softmax(logits, dim=1)).sum()
    loss.backward()
    p = network.forward(x, Pass.training())
    np.testing.assert_allclose(p, functional.softmax(logits, dim=1).detach().numpy(),
                               rtol=1e-12)
    assert float(network.cost(truth).sum()) == pytest.approx(loss.item(), rel=1e-12)
    dx = network.backward(truth, input_grad=True)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-13)
    for layer in network.layers:
        for name, _, grad in layer.parameters():
            np.testing.assert_allclose(grad, params[(layer.index, name)].grad.numpy(),
                                       rtol=1e-10, atol=1e-13, err_msg=f"{layer.index}.{name}")
