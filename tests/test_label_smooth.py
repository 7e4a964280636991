"""[net] label_smooth_eps: AlexeyAB's smoothed classifier targets (fill_truth_smooth in its
src/data.c: 1 − eps for the label, eps / (classes − 1) for every other class)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from darkbp.network import parse_network
from darkbp.train import Trainer, TrainOptions, smoothed_truth
from darkbp.datasets import network_input
from tests.conftest import ROOT, assert_cfg_error

CFG = """
[net]
batch=32
width=28
height=28
channels=1
learning_rate=0.05
label_smooth_eps=0.1

[convolutional]
filters=4
size=5
stride=2
activation=leaky

[connected]
output=10
activation=linear

[softmax]
"""


def test_smoothed_rows():
    truth = smoothed_truth(4, 0.3)
    assert truth.dtype == np.float32
    # by hand: 0.7 on the diagonal, 0.3 / 3 = 0.1 elsewhere, as C floats
    expected = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1],
                         [0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7]], np.float32)
    assert np.array_equal(truth, expected)
    assert np.array_equal(smoothed_truth(3), np.eye(3, dtype=np.float32))


def test_the_classifier_trains_on_smoothed_targets(tmp_path, sample, write_cfg):
    network = parse_network(write_cfg(CFG))
    assert network.config.label_smooth_eps == 0.1 and network.warnings == []
    trainer = Trainer(network, sample, TrainOptions(out=tmp_path / "out", max_batches=1))
    labels = sample.train_labels
    rows = trainer.train_truth
    assert rows.shape == (len(labels), 10)
    assert np.all(rows[np.arange(len(labels)), labels] == np.float32(0.9))
    off = np.ones(rows.shape, bool)
    off[np.arange(len(labels)), labels] = False
    assert np.all(rows[off] == np.float32(np.float32(0.1) / np.float32(9)))
    # the loss of the first batch is the cross-entropy against those targets
    trainer.run()
    order = np.random.default_rng([0, 1]).permutation(len(labels))[:32]
    x = network_input(sample.train_images[order], (1, 28, 28))
    fresh = parse_network(write_cfg(CFG, "fresh.cfg")).initialize(0, np.float32)
    p = fresh.forward(x).astype(np.float64)
    t = np.full((32, 10), 0.1 / 9)
    t[np.arange(32), labels[order]] = 0.9
    assert trainer.losses[0] == pytest.approx(-(t * np.log(p)).sum() / 32, rel=1e-5)


@pytest.mark.parametrize("value, words", [
    ("1", "'label_smooth_eps' must be below 1, got 1"),
    ("-0.1", "'label_smooth_eps' must be at least 0, got -0.1"),
])
def test_bad_values_name_their_line(write_cfg, value, words):
    path = write_cfg(CFG.replace("label_smooth_eps=0.1", f"label_smooth_eps={value}"))
    assert_cfg_error(path, 7, "net", words)


def test_a_detector_is_warned_that_net_smoothing_does_not_reach_its_heads(tmp_path):
    cfg = tmp_path / "det.cfg"
    shutil.copy(ROOT / "tests" / "detector_cfgs" / "yolov3-tiny-160x96.cfg", cfg)
    text = cfg.read_text().replace("[net]", "[net]\nlabel_smooth_eps=0.1", 1)
    cfg.write_text(text)
    network = parse_network(cfg)
    assert [w.message for w in network.warnings if "label_smooth_eps" in w.message] == [
        "[net] option 'label_smooth_eps' smooths a classifier's targets; it has no effect on "
        "a detector's"]
