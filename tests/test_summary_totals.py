"""The summary's totals against numbers darkbp did not compute, and what a summary costs.

- VGG-16: 138,357,544 parameters, the count published for the network (torchvision's
  vgg16 has exactly these layers; Darknet's vgg-16.cfg is the same network).
- ResNet-18: torchvision's resnet18 has 11,689,512 parameters; Darknet's resnet18.cfg is
  the same network without the three 1x1 projection shortcuts (its [shortcut] samples the
  input instead), which hold 64·128 + 128·256 + 256·512 = 172,032 weights and
  2·(128 + 256 + 512) = 1,792 batch-norm scales and shifts.
- Darknet19: 7.29 billion operations per 256x256 image, as published with the network
  (pjreddie.com, "ImageNet Classification": Darknet19, 7.29 Bn ops).
"""

from __future__ import annotations

import pytest

from darkbp.network import parse_network
from darkbp.summary import summary_data
from tests.conftest import SHARED

DARKNET_CFG = SHARED / "darknet-cfg"


def _totals(name):
    return summary_data(parse_network(DARKNET_CFG / f"{name}.cfg"))["totals"]


def test_vgg16_parameters():
    assert _totals("vgg-16")["params"] == 138_357_544


def test_resnet18_parameters_are_torchvisions_without_projection_shortcuts():
    projections = 64 * 128 + 128 * 256 + 256 * 512 + 2 * (128 + 256 + 512)
    assert _totals("resnet18")["params"] == 11_689_512 - projections


def test_darknet19_operations():
    assert _totals("darknet19")["bflops"] == pytest.approx(7.29, abs=0.005)


def test_a_summary_allocates_no_parameters():
    network = parse_network(DARKNET_CFG / "densenet201.cfg")
    summary_data(network)
    assert len(network.layers) == 305
    assert not any(hasattr(layer, name) for layer in network.layers
                   for name in layer.param_names)
