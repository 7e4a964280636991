"""Darknet's stock classifier and detector cfgs (../shared/darknet-cfg/) build and train,
through the library.

For each: the network builds, and one training step (forward, cost, backward, SGD) on a
batch of 2 random images of the cfg's input shape runs and changes every parameter that
receives a gradient. vgg-conv and jnet-conv end in a convolution (feature extractors
with no cost): they run forward, and training says clearly why it cannot start.
"""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.errors import DarkbpError
from darkbp.network import parse_network
from darkbp.ops.detection import Truth
from darkbp.parallel import Runner
from darkbp.sgd import SGD
from tests.conftest import SHARED

DARKNET_CFG = SHARED / "darknet-cfg"
CLASSIFIERS = ["alexnet", "cifar", "cifar.test", "darknet", "darknet19", "darknet19_448",
               "darknet53", "darknet53_448", "densenet201", "extraction", "extraction.conv",
               "extraction22k", "go", "go.test", "resnet18", "resnet34", "resnet50",
               "resnet101", "resnet152", "resnext50", "resnext101-32x4d", "resnext152-32x4d",
               "strided", "tiny", "vgg-16", "writing"]
FEATURES = ["vgg-conv", "jnet-conv"]
DETECTORS = ["yolov1-tiny", "yolov1", "yolov2-tiny-voc", "yolov2-tiny", "yolov2", "yolov2-voc",
             "yolov3-tiny", "yolov3", "yolov3-voc", "yolov3-spp", "yolov3-openimages", "t1.test"]
IMAGES = 2


def _random_batch(network, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((IMAGES,) + network.input_shape, dtype=np.float32)
    truth = np.zeros((IMAGES, network.outputs), np.float32)
    truth[np.arange(IMAGES), rng.integers(network.outputs, size=IMAGES)] = 1
    return x, truth


def _random_boxes(network, seed=0):
    """2 random images and 1 to 4 random boxes each, as a detector trains on them."""
    rng = np.random.default_rng(seed)
    x = rng.random((IMAGES,) + network.input_shape, dtype=np.float32)
    _, h, w = network.input_shape
    truth = Truth.random(rng, IMAGES, network.heads[0].classes, w, h)
    return x, Truth(truth.boxes, w, h, seen=IMAGES)


def one_training_step(network) -> np.ndarray:
    """One training step of `network` on 2 random images (and boxes), checked: a finite
    cost, and every parameter that receives a gradient moved by SGD; the input."""
    network.check_trainable()
    config = network.config
    before = {(layer.index, n): w.copy() for layer in network.layers
              for n, w, _ in layer.parameters()}
    x, truth = (_random_boxes if network.heads else _random_batch)(network)
    x = x.astype(network.dtype)
    with np.errstate(over="ignore", invalid="ignore"):    # as the trainer: Darknet's exp()s
        cost = Runner(network, 1).train_step(x, truth)
    assert np.isfinite(cost)
    moved = {(layer.index, n): bool(g.any()) for layer in network.layers
             for n, _, g in layer.parameters()}
    SGD(network.layers, config.momentum, config.decay, IMAGES).step(config.schedule.learning_rate)
    for layer in network.layers:
        for n, w, _ in layer.parameters():
            if moved[(layer.index, n)]:
                assert not np.array_equal(w, before[(layer.index, n)]), (layer.index, n)
    assert sum(moved.values()) >= len(moved) // 2     # gradients reach most of the network
    return x


@pytest.mark.parametrize("name", CLASSIFIERS + DETECTORS)
def test_one_training_step(name):
    network = parse_network(DARKNET_CFG / f"{name}.cfg").initialize(0, np.float32)
    x = one_training_step(network)
    # Evaluation uses the rolling statistics, still near their start (variance 0.01·batch's)
    # after one step: a deep batch-normalised network then overflows, in Darknet too.
    if not any(layer.batch_statistics for layer in network.layers):
        assert np.all(np.isfinite(network.forward(x)))


@pytest.mark.parametrize("name", FEATURES)
def test_feature_extractors_run_forward_and_refuse_to_train(name):
    network = parse_network(DARKNET_CFG / f"{name}.cfg").initialize(0, np.float32)
    x, _ = _random_batch(network)
    y = network.forward(x)
    assert y.shape == (IMAGES, network.outputs) and np.all(np.isfinite(y))
    with pytest.raises(DarkbpError, match=r"need a \[softmax\] or a \[cost\] as the last layer"):
        network.check_trainable()


def test_every_stock_detector_is_listed():
    with_head = {path.stem for path in DARKNET_CFG.glob("*.cfg")
                 if parse_network(path).heads}
    assert with_head == set(DETECTORS) | {"yolo9000"}      # its [region] tree: table-only


def test_the_hierarchical_softmax_of_darknet9000_is_tabulated_only():
    network = parse_network(DARKNET_CFG / "darknet9000.cfg")
    with pytest.raises(DarkbpError, match=r"\[softmax\] can only be tabulated") as error:
        network.check_trainable()
    assert error.value.line == 199
