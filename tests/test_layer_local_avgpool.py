"""[local_avgpool] (AlexeyAB): [maxpool]'s windows, each averaged over its cells inside the input.

Against the loop reference of tests/naive_layers.py (AlexeyAB's forward_local_avgpool_layer
transcribed; the backward as its exact adjoint), torch's avg_pool2d where its windows are
AlexeyAB's, AlexeyAB's own CPU backward (dy / size², transcribed) where it is the adjoint and
where it is not, the table lines and the errors a bad section gives. No cfg of AlexeyAB's
zoo in ../shared/ uses it and no fixture exists: the table line is written from AlexeyAB's
printf. Gradcheck, split passes and .weights on tests/layer_cfgs/local_avgpool.cfg.
"""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.layers.local_avgpool import LocalAvgpoolLayer
from darkbp.network import parse_network
from darkbp.passes import EVAL, Pass
from darkbp.summary import alexeyab_text, darknet_text
from tests import naive_layers as nl
from tests.conftest import assert_cfg_error

# (N, C, H, W), size, stride_x, stride_y, padding
CASES = [
    ((2, 3, 7, 6), 3, 2, 2, 2),          # the default padding (size − 1): windows from −1
    ((1, 2, 4, 5), 2, 1, 1, 1),          # the last window hangs over the far edge
    ((2, 2, 5, 5), 2, 2, 2, 0),          # no padding: every window inside
    ((1, 3, 6, 8), 3, 3, 1, 2),          # stride_x ≠ stride_y
    ((2, 1, 5, 4), 4, 1, 2, 5),          # padding beyond size − 1, windows of 1 cell
    ((3, 2, 1, 1), 1, 1, 1, 0),          # 1 x 1 windows: the identity
    ((1, 2, 3, 3), 3, 1, 1, 0),          # one window: the global mean
]


def _ids(case):
    shape, size, sx, sy, pad = case
    return f"{shape[2]}x{shape[3]}-k{size}-s{sx}x{sy}-p{pad}"


def chwn(x):
    """The same (N, C, H, W) values stored CHWN (ops/layout.py), as a view."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def layer_for(shape, size, stride_x, stride_y, padding):
    return LocalAvgpoolLayer(shape[1:], size=size, stride_y=stride_y, stride_x=stride_x,
                             padding=padding)


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("stored", ["NCHW", "CHWN"])
def test_forward_and_backward_equal_the_loop_reference(case, stored):
    shape, size, sx, sy, pad = case
    rng = np.random.default_rng(sum(shape) + size)
    x = rng.standard_normal(shape)
    want = nl.local_avgpool_forward(x, size, sx, sy, pad)
    layer = layer_for(shape, size, sx, sy, pad)
    assert layer.out_shape == want.shape[1:]
    place = chwn if stored == "CHWN" else np.ascontiguousarray
    y = layer.forward(place(x), Pass.training())
    np.testing.assert_allclose(y, want, rtol=1e-14, atol=1e-15)
    dy = rng.standard_normal(want.shape)
    dx = layer.backward(place(dy.copy()))
    np.testing.assert_allclose(dx, nl.local_avgpool_backward(shape, dy, size, sx, sy, pad),
                               rtol=1e-14, atol=1e-15)
    assert layer.backward(dy, need_dx=False) is None


def test_float32_sums_round_as_alexeyabs():
    # AlexeyAB adds a window's cells in row-major order into a float from 0, then divides.
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((2, 3, 7, 6)) * 1e3).astype(np.float32)
    y = layer_for(x.shape, 3, 2, 2, 2).forward(x, EVAL)
    assert y.dtype == np.float32
    _, windows = nl._local_avgpool_windows(x.shape, 3, 2, 2, 2)
    for b in range(2):
        for (k, i, j), cells in windows.items():
            total = np.float32(0)
            for cur_h, cur_w in cells:
                total = np.float32(total + x[b, k, cur_h, cur_w])
            assert y[b, k, i, j] == np.float32(total / np.float32(len(cells)))


def test_equals_torch_avg_pool2d_where_its_windows_are_alexeyabs():
    # torch pads both sides by the same amount: padding p = 2·t gives AlexeyAB's windows
    # from −t, with torch's output one window shorter only where AlexeyAB's last window
    # starts past torch's (not here). count_include_pad=False is AlexeyAB's count.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    for shape, size, stride, padding in [((2, 3, 7, 7), 3, 2, 2), ((1, 2, 9, 6), 5, 1, 4),
                                         ((2, 2, 6, 6), 2, 2, 0)]:
        x = rng.standard_normal(shape)
        tx = torch.tensor(x, requires_grad=True)
        ty = torch.nn.functional.avg_pool2d(tx, size, stride, padding // 2,
                                            count_include_pad=False)
        layer = layer_for(shape, size, stride, stride, padding)
        y = layer.forward(x, Pass.training())
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-13, atol=1e-15)
        dy = rng.standard_normal(y.shape)
        ty.backward(torch.tensor(dy))
        np.testing.assert_allclose(layer.backward(dy.copy()), tx.grad.numpy(), rtol=1e-13,
                                   atol=1e-15)


def test_alexeyabs_cpu_backward_is_the_adjoint_only_inside():
    # backward_local_avgpool_layer gives every valid cell dy / size²: with no window over the
    # edge (padding 0, size | H, W) that is the exact gradient; with windows over the edge
    # it is not (darkbp: dy / the window's count of valid cells).
    rng = np.random.default_rng(5)
    inside = (2, 2, 6, 4), 2, 2, 2, 0
    edge = (2, 2, 7, 6), 3, 2, 2, 2
    for (shape, size, sx, sy, pad), same in [(inside, True), (edge, False)]:
        layer = layer_for(shape, size, sx, sy, pad)
        layer.forward(rng.standard_normal(shape), Pass.training())
        dy = rng.standard_normal((shape[0],) + layer.out_shape)
        ours = layer.backward(dy.copy())
        theirs = nl.local_avgpool_backward(shape, dy, size, sx, sy, pad, darknet=True)
        assert np.allclose(ours, theirs, rtol=1e-14, atol=1e-15) == same


def test_table_lines(write_cfg):
    path = write_cfg("""
        [net]
        width=13
        height=13
        channels=32
        [local_avgpool]
        size=3
        stride=2
        [local_avgpool]
        size=2
        stride_x=2
        stride_y=1
        padding=0
        """)
    network = parse_network(path)
    first, second = network.layers
    assert (first.padding, first.out_shape, second.out_shape) == (2, (32, 7, 7), (32, 6, 3))
    assert darknet_text(network).splitlines()[1:] == [
        "    0 avg          3 x 3 / 2    13 x  13 x  32   ->     7 x   7 x  32",
        "    1 avg          2 x 2 /2x1    7 x   7 x  32   ->     3 x   6 x  32"]
    # make_maxpool_layer (avgpool=1): "avg               %2dx%2d/%2d   %4d x%4d x%4d -> %4d
    # x%4d x%4d %5.3f BF\n", its stride_x ≠ stride_y twin, and l.bflops = size²·c·out_h·out_w
    # / 1e9 (3·3·32·7·7 = 14112: 0.000 BF, summed into Total BFLOPS).
    assert alexeyab_text(network).splitlines()[1:] == [
        "   0 avg                3x 3/ 2     13 x  13 x  32 ->    7 x   7 x  32 0.000 BF",
        "   1 avg               2x 2/ 2x 1    7 x   7 x  32 ->    3 x   6 x  32 0.000 BF",
        "Total BFLOPS 0.000 ",
        "avg_outputs = %d " % ((7 * 7 * 32 + 3 * 6 * 32) // 2)]
    assert first.alexeyab_bflops == pytest.approx(3 * 3 * 32 * 7 * 7 / 1e9)


def test_defaults_follow_parse_local_avgpool(write_cfg):
    path = write_cfg("""
        [net]
        width=8
        height=8
        channels=1
        [local_avgpool]
        [local_avgpool]
        stride=2
        """)
    plain, strided = parse_network(path).layers
    assert (plain.size, plain.stride_x, plain.stride_y, plain.padding) == (1, 1, 1, 0)
    assert (strided.size, strided.stride_x, strided.stride_y, strided.padding) == (2, 2, 2, 1)
    assert strided.out_shape == (1, 4, 4)


HEAD = "[net]\nwidth=4\nheight=4\nchannels=2\n"

BAD = [
    ("flat", HEAD + "[connected]\noutput=4\n[local_avgpool]\nsize=2\n", 7,
     "needs an image input"),
    ("too_big", HEAD + "[local_avgpool]\nsize=6\npadding=0\n", 5,
     "a 6x6 window with padding 0 does not fit the 4 x 4 input"),
    ("whole_window_outside", HEAD + "[local_avgpool]\nsize=2\npadding=3\n", 7,
     "padding=3 puts a whole 2x2 window outside the 4 x 4 input"),
    ("stride_0", HEAD + "[local_avgpool]\nstride_x=0\n", 6, "stride_x"),
]


@pytest.mark.parametrize("name, text, line, words", BAD, ids=[case[0] for case in BAD])
def test_bad_local_avgpool_is_one_clear_error(tmp_path, name, text, line, words):
    path = tmp_path / f"{name}.cfg"
    path.write_text(text)
    assert_cfg_error(path, line, "local_avgpool", words)
