"""[reorg3d] (AlexeyAB's reorg_layer.c): reorg_cpu called with the output's sizes.

Against the loop reference of tests/naive_layers.py (reorg_cpu transcribed, darknet=
"alexeyab"), torch's pixel_unshuffle with AlexeyAB's channel order, the table lines and the
errors a bad section gives. AlexeyAB's own table of yolov4-sam-mish-csp-reorg-bfm is checked
in tests/test_golden_alexeyab_layers.py; gradcheck, split passes and .weights on
tests/layer_cfgs/reorg3d.cfg (tests/test_layer_contract.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.layers.reorg3d import Reorg3dLayer
from darkbp.network import parse_network
from darkbp.passes import EVAL, Pass
from darkbp.summary import alexeyab_text, darknet_text
from tests import naive_layers as nl
from tests.conftest import assert_cfg_error

# (N, C, H, W), stride, reverse
CASES = [
    ((2, 3, 4, 6), 2, False),
    ((1, 1, 6, 3), 3, False),
    ((2, 5, 2, 2), 2, False),
    ((1, 3, 5, 4), 1, False),
    ((2, 16, 3, 2), 2, True),
    ((1, 32, 2, 1), 2, True),
    ((1, 81, 1, 2), 3, True),
    ((2, 2, 3, 3), 1, True),
]


def _ids(case):
    (n, c, h, w), s, reverse = case
    return f"{c}x{h}x{w}/{s}" + ("-reverse" if reverse else "")


def chwn(a):
    """The same (N, C, H, W) values stored CHWN (ops/layout.py), as a view."""
    return np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("stored", ["NCHW", "CHWN"])
def test_forward_and_backward_equal_the_loop_reference(case, stored):
    shape, stride, reverse = case
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    want = nl.reorg_forward(x, stride, reverse, darknet="alexeyab")
    layer = Reorg3dLayer(shape[1:], stride, reverse)
    assert layer.out_shape == want.shape[1:]
    place = chwn if stored == "CHWN" else np.ascontiguousarray
    np.testing.assert_array_equal(layer.forward(place(x), Pass.training()), want)
    dy = rng.standard_normal(want.shape)
    np.testing.assert_array_equal(layer.backward(place(dy)),
                                  nl.reorg_backward(shape, dy, stride, reverse,
                                                    darknet="alexeyab"))
    assert layer.backward(dy, need_dx=False) is None


def test_float32_stays_float32_and_the_input_is_not_written():
    x = np.random.default_rng(0).standard_normal((2, 16, 4, 4)).astype(np.float32)
    before = x.copy()
    for reverse in (False, True):
        layer = Reorg3dLayer(x.shape[1:], 2, reverse)
        y = layer.forward(x, EVAL)
        assert y.dtype == layer.backward(np.ones_like(y)).dtype == np.float32
    np.testing.assert_array_equal(x, before)


def test_reorg3d_is_a_space_to_depth_unlike_pjreddies_reorg():
    # torch's pixel_unshuffle puts block offset o of channel c at c·s² + o, AlexeyAB at
    # o·C + c; the same permutation otherwise. pjreddie's [reorg] (darkbp's [reorg]) is not.
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((2, 6, 8, 4))
    n, c, h, w = x.shape
    unshuffled = torch.nn.functional.pixel_unshuffle(torch.tensor(x), 2).numpy()
    alexeyab_order = unshuffled.reshape(n, c, 4, h // 2, w // 2).transpose(0, 2, 1, 3, 4)
    ours = Reorg3dLayer(x.shape[1:], 2, False).forward(x, EVAL)
    np.testing.assert_array_equal(ours, alexeyab_order.reshape(n, 4 * c, h // 2, w // 2))
    first4 = x[:, :4]                       # pjreddie's reorg needs C a multiple of s²
    assert not np.array_equal(Reorg3dLayer((4, 8, 4), 2, False).forward(first4, EVAL),
                              nl.reorg_forward(first4, 2, darknet="pjreddie"))


def test_table_lines(write_cfg):
    path = write_cfg("""
        [net]
        width=32
        height=32
        channels=256
        [reorg3d]
        stride=2
        [reorg3d]
        stride=2
        reverse=1
        """)
    network = parse_network(path)
    assert darknet_text(network).splitlines()[1:] == [
        "    0 reorg3d            / 2    32 x  32 x 256   ->    16 x  16 x1024",
        "    1 reorg3d            / 2    16 x  16 x1024   ->    32 x  32 x 256"]
    # make_reorg_layer: "reorg                    /%2d %4d x%4d x%4d -> %4d x%4d x%4d\n"
    assert alexeyab_text(network).splitlines()[1:3] == [
        "   0 reorg                    / 2   32 x  32 x 256 ->   16 x  16 x1024",
        "   1 reorg                    / 2   16 x  16 x1024 ->   32 x  32 x 256"]


HEAD = "[net]\nwidth=6\nheight=4\nchannels=2\n"

BAD = [
    ("flat", HEAD + "[connected]\noutput=4\n[reorg3d]\nstride=2\n", 7, "needs an image input"),
    ("indivisible", HEAD + "[reorg3d]\nstride=4\n", 6,
     "stride=4 must divide the input's width and height (6 x 4)"),
    ("reverse_channels", HEAD + "[convolutional]\nfilters=8\nsize=1\n[reorg3d]\nstride=2\n"
     "reverse=1\n", 10, "so they must be a multiple of stride⁴ = 16"),
    ("stride_0", HEAD + "[reorg3d]\nstride=0\n", 6, "stride"),
]


@pytest.mark.parametrize("name, text, line, words", BAD, ids=[case[0] for case in BAD])
def test_bad_reorg3d_is_one_clear_error(tmp_path, name, text, line, words):
    path = tmp_path / f"{name}.cfg"
    path.write_text(text)
    assert_cfg_error(path, line, "reorg3d", words)
