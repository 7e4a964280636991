"""AlexeyAB's own cfg zoo (../shared/darknet-cfg/alexeyab/) builds and trains, through the
library.

Every cfg there that darkbp can train takes one training step (forward, cost, backward,
SGD) on 2 random images (a detector: with 1 to 4 random boxes each), which must move every
parameter that receives a gradient (in float64: a batch=1 cfg's learning rate moves a
scale of 1 by less than float32 resolves). The networks meant for 416 to 1280 pixels take that
step at the smallest input their strides allow of 64 and 128 (Network.resize, as multi-scale
training does): the layers and their parameters are the cfg's, and the step's cost stays
within this suite's time. A cfg that is pjreddie's own file byte for byte is trained by
tests/test_darknet_cfgs.py. The
cfgs darkbp can not train are listed with the reason it gives, so the list can not grow
or stay unnoticed.
"""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.errors import DarkbpError
from darkbp.network import parse_network
from tests.conftest import SHARED
from tests.test_darknet_cfgs import CLASSIFIERS, DETECTORS, FEATURES, one_training_step

ZOO = SHARED / "darknet-cfg" / "alexeyab"
NAMES = sorted(path.stem for path in ZOO.glob("*.cfg"))
SMALL = (64, 128)    # the inputs a larger resizable network may train at here, smallest first
# The zoo's cfgs that are pjreddie's stock cfg of the same name, byte for byte.
SAME = sorted(name for name in NAMES if (SHARED / "darknet-cfg" / f"{name}.cfg").is_file()
              and (SHARED / "darknet-cfg" / f"{name}.cfg").read_bytes()
              == (ZOO / f"{name}.cfg").read_bytes())
# The required three, and the reason darkbp gives for each cfg it can not train.
REQUIRED = {"csdarknet53-omega", "efficientnet_b0", "yolov4-tiny"}
TABULATED = "can only be tabulated: darkbp does not run this section"
UNTRAINABLE = {
    "Gaussian_yolov3_BDD": f"[Gaussian_yolo] {TABULATED}",
    "crnn.train": f"[crnn] {TABULATED}",
    "lstm.train": f"[lstm] {TABULATED}",
    "gru": f"[gru] {TABULATED}",
    "rnn": f"[rnn] {TABULATED}",
    "rnn.train": f"[rnn] {TABULATED}",
    "vgg-conv": "need a [softmax] or a [cost] as the last layer",
    "cspx-p7-mish_hp": "counters_per_class=",
}


def _refusal(name: str) -> str | None:
    """Why darkbp can not train the cfg, None when it can."""
    try:
        parse_network(ZOO / f"{name}.cfg").check_trainable()
    except DarkbpError as error:
        return str(error)
    return None


def test_the_zoo_is_here_and_the_required_cfgs_train():
    assert len(NAMES) >= 60
    assert REQUIRED <= set(NAMES) - set(UNTRAINABLE) - set(SAME)


def test_the_cfgs_pjreddie_ships_too_are_trained_with_his():
    assert len(SAME) == 11
    assert set(SAME) <= set(CLASSIFIERS + DETECTORS + FEATURES)


@pytest.mark.parametrize("name", sorted(UNTRAINABLE))
def test_what_darkbp_can_not_train_says_why(name):
    refusal = _refusal(name)
    assert refusal is not None and UNTRAINABLE[name] in refusal


@pytest.mark.parametrize("name", [n for n in NAMES if n not in UNTRAINABLE and n not in SAME])
def test_one_training_step(name):
    network = parse_network(ZOO / f"{name}.cfg").initialize(0, np.float64)
    _, h, w = network.input_shape
    for size in SMALL:
        if min(h, w) <= size:
            break
        try:
            network.resize(size, size)
            break
        except DarkbpError:    # strides it can not take, or a [connected] layer fixes the size
            pass
    one_training_step(network)
