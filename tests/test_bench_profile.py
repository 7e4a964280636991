"""bench/bench_profile.py, the per-operation profile of a training step: its timers change
no number, reach every kind of layer, count each second once, and count the BLAS products'
FLOPs that Darknet's own formula gives; and `bench.py --profile` runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

import darkbp.layers.convolutional
import darkbp.ops.conv
from bench.bench_profile import (ACTIVATIONS, COPIES, COST, GEMM_CONNECTED, GEMM_DW, GEMM_DX,
                                 GEMM_FORWARD, GEMMS, IM2COL_BACKWARD, IM2COL_FORWARD,
                                 POOLING, SGD_EMA, TAIL, Profiler)
from darkbp.ema import EMA
from darkbp.network import parse_network
from darkbp.ops import activations
from darkbp.parallel import Runner
from darkbp.sgd import SGD
from tests.conftest import ROOT

BATCH = 4
# Every layer kind the profile has a category for, and each path of conv.py: the first
# layer (no dx), a biased conv whose biases ride in its products (no batch norm), stride 2,
# a plain 1x1 product; then shortcut, maxpool, route, connected, softmax.
CFG = """
[net]
batch=4
subdivisions=1
width=8
height=8
channels=3
momentum=0.9
decay=0.0005
learning_rate=0.01
max_batches=10

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=6
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=6
size=1
stride=1
pad=0
activation=linear

[shortcut]
from=-2
activation=relu

[maxpool]
size=2
stride=2

[route]
layers=-1

[connected]
output=5
activation=linear

[softmax]
"""


@pytest.fixture
def cfg(write_cfg):
    return write_cfg(CFG, "profiled.cfg")


def _trainer(cfg):
    """A network and its training step (Trainer's: passes, SGD, EMA) on fixed batches."""
    network = parse_network(cfg).initialize(0, np.float32)
    rng = np.random.default_rng(1)
    x = rng.random((BATCH, 3, 8, 8), dtype=np.float32)
    truth = np.eye(5, dtype=np.float32)[rng.integers(0, 5, BATCH)]
    runner = Runner(network, 1)
    sgd = SGD(network.layers, 0.9, 0.0005, BATCH)
    ema = EMA(network.layers, 0.99)

    def step():
        runner.train_step(x, truth)
        sgd.step(0.01)
        ema.update()
    return network, step


def _params(network):
    return {(layer.index, name): value.copy() for layer in network.layers
            for name, value, _ in layer.parameters()}


def test_a_profiled_step_changes_no_number_and_the_timers_go_away(cfg):
    plain, plain_step = _trainer(cfg)
    profiled, profiled_step = _trainer(cfg)
    originals = (darkbp.layers.convolutional.conv_forward, dict(activations.ACTIVATIONS),
                 darkbp.ops.conv.np)
    profiler = Profiler()
    for _ in range(2):
        plain_step()
        profiler.step(profiled_step)
    for key, value in _params(plain).items():
        np.testing.assert_array_equal(_params(profiled)[key], value, err_msg=str(key))
    assert darkbp.layers.convolutional.conv_forward is originals[0]
    assert all(activations.ACTIVATIONS[key] is act for key, act in originals[1].items())
    assert darkbp.ops.conv.np is np


def test_the_categories_add_up_to_the_step_and_every_layer_kind_is_seen(cfg):
    _, step = _trainer(cfg)
    step()
    profiler = Profiler()
    start = time.perf_counter()
    seconds = profiler.step(step)
    outside = time.perf_counter() - start
    # each second counted once: the categories telescope to the outermost timer's time,
    # which the wall clock around the whole step (timers' installation included) bounds
    assert sum(profiler.seconds.values()) == pytest.approx(seconds, rel=1e-9)
    assert 0 < seconds <= outside
    for category in (GEMM_FORWARD, GEMM_DW, GEMM_DX, GEMM_CONNECTED, IM2COL_FORWARD,
                     IM2COL_BACKWARD, TAIL, ACTIVATIONS, COPIES, POOLING, COST, SGD_EMA):
        assert profiler.seconds[category] > 0, category


def test_the_gemm_flops_are_darknets_count(cfg):
    network, step = _trainer(cfg)
    profiler = Profiler()
    profiler.step(step)
    # Darknet's BFLOPs per image (2·filters·size²·C/groups·OH·OW for a conv,
    # 2·inputs·outputs for a connected layer), for the batch; every conv has a forward and a
    # dW product, all but the first (which reads the input) a dx product.  A conv without
    # batch norm has its biases ride in its forward and dW products as one more row of ones
    # (conv.py): 2 FLOPs per filter and output pixel more in each.
    convs = [layer for layer in network.layers if layer.type == "convolutional"]
    (connected,) = [layer for layer in network.layers if layer.type == "connected"]
    assert convs[0].index == 0 and not convs[1].batch_normalize
    darknet = [layer.bflops * 1e9 * BATCH for layer in convs]
    _, oh, ow = convs[1].out_shape
    ones = 2.0 * convs[1].filters * oh * ow * BATCH
    assert profiler.flops[GEMM_FORWARD] == pytest.approx(sum(darknet) + ones, rel=1e-12)
    assert profiler.flops[GEMM_DW] == pytest.approx(sum(darknet) + ones, rel=1e-12)
    assert profiler.flops[GEMM_DX] == pytest.approx(sum(darknet[1:]), rel=1e-12)
    assert profiler.flops[GEMM_CONNECTED] == pytest.approx(3 * connected.bflops * 1e9 * BATCH,
                                                           rel=1e-12)


def test_bench_profile_runs_and_keeps_its_numbers(cfg, tmp_path):
    out = tmp_path / "profile.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--profile",
                           "--cfg", str(cfg), "--batch", str(BATCH), "--windows", "2",
                           "--json", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "GEMM share" in done.stdout and "aten::" in done.stdout
    (row,) = json.loads(out.read_text())["results"]
    ours = row["darkbp"]
    step = sum(ours["categories"].values())
    assert ours["gemm_share"] == pytest.approx(sum(ours["categories"][n] for n in GEMMS) / step)
    assert len(ours["plain_ms"]) == len(ours["profiled_ms"]) == 2
    assert row["torch"]["operators"] and row["torch"]["step_ms"] > 0


def test_convolution_time_adds_darkbps_conv_categories_and_torchs_conv_operators():
    from bench.bench_profile import CONV_OTHER, convolution_ms
    ours = {"categories": {GEMM_DW: 2.0, GEMM_DX: 3.0, IM2COL_BACKWARD: 0.5, CONV_OTHER: 0.25,
                           POOLING: 7.0, TAIL: 11.0}}
    theirs = {"operators": [{"name": "aten::convolution_backward", "ms": 4.0},
                            {"name": "aten::mkldnn_convolution", "ms": 1.5},
                            {"name": "ConvolutionBackward0", "ms": 0.125},
                            {"name": "aten::native_batch_norm", "ms": 9.0}]}
    assert convolution_ms(ours, theirs) == (5.75, 5.625)
