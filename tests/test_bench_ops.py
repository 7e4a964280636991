"""bench/bench_ops.py --cfg: the distinct convolutions of a cfg and their FLOPs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_ops import cfg_convs, conv_gflop
from darkbp.network import parse_network

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["resnet_cifar", "yolo-digits", "grouped"])
def test_cfg_convs_stand_for_every_conv_and_count_darknets_flops(name):
    path = ROOT / "cfg" / f"{name}.cfg"
    convs, counts = cfg_convs(path)
    layers = [layer for layer in parse_network(path).layers if layer.type == "convolutional"]
    assert sum(counts) == len(layers)
    assert len(convs) == len(set(row[1:] for row in convs))              # distinct shapes
    batch = 64
    # Darknet's forward BFLOPs per image, times the batch: forward, dW, and dx but in layer 0.
    expected = sum(layer.bflops * batch * (2 if layer.index == 0 else 3) for layer in layers)
    assert sum(conv_gflop(batch, *row[1:]) * count
               for row, count in zip(convs, counts)) == pytest.approx(expected, rel=1e-12)
