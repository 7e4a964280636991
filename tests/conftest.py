"""Shared test helpers: the repository's folders, a cfg writer, small real layers."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from darkbp.layers.connected import ConnectedLayer
from darkbp.layers.convolutional import ConvolutionalLayer

ROOT = Path(__file__).resolve().parent.parent
CFG_DIR = ROOT / "cfg"
SHARED = ROOT.parent / "shared"


@pytest.fixture
def write_cfg(tmp_path):
    """write_cfg(text) -> path of a cfg file holding the dedented text."""
    def write(text: str, name: str = "net.cfg") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path
    return write


def data_root() -> Path | None:
    value = os.environ.get("DARKBP_DATA")
    return Path(value) if value else None


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
