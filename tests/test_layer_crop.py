"""[crop]: a random window (and mirror) per training pass, the centre at inference, 2x − 1.

Against the loop references of tests/naive_layers.py (forward_crop_layer transcribed),
torch slicing with autograd, Darknet's golden crop run (../shared/darknet-golden/crop/,
replayed with the offsets Darknet drew: the crop's exact outputs here, the whole run in
tests/test_golden.py), Darknet's table line, and the errors a bad section gives. Where
darkbp differs: Darknet's backward_crop_layer is empty, darkbp passes the gradient on to
the window's input cells (SPEC 2a).
"""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.layers.crop import CropLayer
from darkbp.network import parse_network
from darkbp.passes import EVAL, Noise, Pass
from darkbp.summary import darknet_text
from tests import naive_layers as nl
from tests.conftest import assert_cfg_error
from tests.golden import CropDraws, Golden


def chwn(a):
    """The same (N, C, H, W) values stored CHWN (ops/layout.py), as a view."""
    return np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def crop_layer(shape, crop_height, crop_width, flip=False, noadjust=False, index=0):
    layer = CropLayer(shape[1:], crop_height, crop_width, flip, noadjust)
    layer.index = index
    return layer


def training_pass(layer, dh, dw, mirrored):
    """The training Pass in which `layer` crops at (dh, dw), mirrored or not."""
    _, h, w = layer.in_shape
    ranges = (h - layer.crop_height + 1, w - layer.crop_width + 1)
    if layer.flip:
        return Pass.training(CropDraws(layer=layer.index, highs=(2,) + ranges,
                                       draws=(int(mirrored), dh, dw)))
    return Pass.training(CropDraws(layer=layer.index, highs=ranges, draws=(dh, dw)))


# (N, C, H, W), crop_height, crop_width, dh, dw, mirrored
CASES = [
    ((2, 3, 6, 7), 4, 5, 0, 0, False),
    ((2, 3, 6, 7), 4, 5, 2, 2, False),
    ((2, 3, 6, 7), 4, 5, 1, 2, True),
    ((1, 1, 5, 5), 5, 5, 0, 0, True),
    ((3, 2, 8, 4), 1, 3, 7, 1, True),
    ((2, 2, 4, 9), 3, 1, 0, 8, False),
    ((2, 2, 4, 9), 3, 1, 1, 0, True),
]


@pytest.mark.parametrize("shape, crop_height, crop_width, dh, dw, mirrored", CASES)
@pytest.mark.parametrize("noadjust", [False, True])
@pytest.mark.parametrize("layout", ["NCHW", "CHWN"])
def test_training_crop_equals_the_loop_reference(shape, crop_height, crop_width, dh, dw,
                                                 mirrored, noadjust, layout):
    rng = np.random.default_rng(dh * 10 + dw)
    x = rng.standard_normal(shape)
    layer = crop_layer(shape, crop_height, crop_width, flip=True, noadjust=noadjust)
    y = layer.forward(chwn(x) if layout == "CHWN" else x, training_pass(layer, dh, dw, mirrored))
    expected = nl.crop_forward(x, crop_height, crop_width, dh, dw, mirrored, not noadjust)
    np.testing.assert_array_equal(y, expected)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(chwn(dy) if layout == "CHWN" else dy.copy())
    np.testing.assert_array_equal(dx, nl.crop_backward(shape, dy, crop_height, crop_width,
                                                       dh, dw, mirrored, not noadjust))


@pytest.mark.parametrize("shape, crop_height, crop_width, centre", [
    ((2, 1, 28, 28), 24, 24, (2, 2)),
    ((1, 2, 7, 6), 4, 3, (1, 1)),        # (7 − 4)/2 and (6 − 3)/2 rounded down, as C does
    ((1, 1, 5, 8), 2, 1, (1, 3)),
    ((1, 1, 3, 3), 3, 3, (0, 0)),
])
def test_inference_crops_the_centre_unmirrored(shape, crop_height, crop_width, centre):
    x = np.random.default_rng(0).standard_normal(shape)
    layer = crop_layer(shape, crop_height, crop_width, flip=True)
    assert layer.offset(EVAL) == (*centre, False)
    np.testing.assert_array_equal(layer.forward(x, EVAL),
                                  nl.crop_forward(x, crop_height, crop_width, *centre))


def test_without_flip_no_mirror_is_drawn():
    layer = crop_layer((1, 1, 6, 6), 4, 4, flip=False, index=3)
    # Darknet: flip = (l.flip && rand()%2), so with flip=0 only dh and dw are drawn
    ctx = Pass.training(CropDraws(layer=3, highs=(3, 3), draws=(2, 1)))
    assert layer.offset(ctx) == (2, 1, False)


def test_draws_cover_darknets_ranges_evenly():
    # Darknet: dh = rand() % (H − crop_h + 1), dw = rand() % (W − crop_w + 1), a mirror with
    # probability 1/2 when flip=1, one draw per pass. darkbp's draws over 3000 passes:
    layer = crop_layer((1, 1, 9, 7), 5, 5, flip=True, index=1)
    seen = np.array([layer.offset(Pass.training(Noise(seed=4, batch_num=b)))
                     for b in range(3000)], dtype=int)
    for column, values in [(0, 5), (1, 3), (2, 2)]:
        counts = np.bincount(seen[:, column], minlength=values)
        assert len(counts) == values             # exactly 0 .. H − crop_h (and W − crop_w)
        expected = len(seen) / values
        # within 5 standard deviations of a uniform count
        assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts
    # the same pass draws the same window: every image of a pass, and every shard of it
    assert layer.offset(Pass.training(Noise(4, 17))) == layer.offset(Pass.training(Noise(4, 17)))


def test_float32_stays_float32_and_the_input_is_not_written():
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    before = x.copy()
    for noadjust in (False, True):
        layer = crop_layer(x.shape, 4, 4, noadjust=noadjust)
        y = layer.forward(x, EVAL)
        assert y.dtype == np.float32 and not np.shares_memory(y, x)
        assert layer.backward(np.ones_like(y)).dtype == np.float32
        assert layer.backward(np.ones_like(y), need_dx=False) is None
    np.testing.assert_array_equal(x, before)


# --- torch ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, crop_height, crop_width, dh, dw, mirrored", CASES)
@pytest.mark.parametrize("noadjust", [False, True])
def test_crop_equals_torch_slicing_and_its_autograd(shape, crop_height, crop_width, dh, dw,
                                                    mirrored, noadjust):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    layer = crop_layer(shape, crop_height, crop_width, flip=True, noadjust=noadjust)
    y = layer.forward(x, training_pass(layer, dh, dw, mirrored))
    tx = torch.tensor(x, requires_grad=True)
    # mirrored: the image flipped left-right, then cut at dw
    source = torch.flip(tx, dims=[3]) if mirrored else tx
    ty = source[:, :, dh:dh + crop_height, dw:dw + crop_width]
    if not noadjust:
        ty = ty * 2 - 1
    np.testing.assert_array_equal(y, ty.detach().numpy())
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    np.testing.assert_array_equal(layer.backward(dy.copy()), tx.grad.numpy())


# --- Darknet's golden run (../shared/darknet-golden/crop/) --------------------------------------
# The run (forward, losses, weights, .weights files) is tests/test_golden.py's, with the same
# offsets (CropDraws.recorded); here the crop's own windows and the gradient Darknet drops.

@pytest.fixture(scope="module")
def golden():
    fixture = Golden("crop")
    return fixture, CropDraws.offsets(fixture), CropDraws.recorded(fixture)


def test_replayed_draws_are_darknets(golden):
    # 28 − 24 + 1 = 5 positions on each axis: Darknet's rand() % 5; flip=0: no mirror drawn.
    _, offsets, noise = golden
    for step in range(1, 6):
        dh, dw, flip = offsets[f"train{step}"]
        assert flip == 0
        assert noise(step) == CropDraws(layer=0, highs=(5, 5), draws=(dh, dw)), step


def test_inference_centre_is_darknets(golden):
    fixture, offsets, _ = golden
    layer = fixture.network().layers[0]
    dh, dw, flip = offsets["predict"]
    assert offsets["predict_step5"] == offsets["predict"]
    assert layer.offset(EVAL) == (dh, dw, bool(flip)) == (2, 2, False)


def test_crop_outputs_equal_darknets_exactly(golden):
    fixture, _, noise = golden
    network = fixture.network()
    x = fixture.input
    inference = network.run(x, EVAL, keep=True)[0]
    training = network.run(x, Pass.training(noise(1)), keep=True)[0]
    np.testing.assert_array_equal(inference.reshape(8, -1), fixture.layer_output("forward", 0))
    np.testing.assert_array_equal(training.reshape(8, -1), fixture.layer_output("train1", 0))


def test_darkbp_passes_the_gradient_darknet_drops(golden):
    # Darknet's backward_crop_layer is empty: ∂loss/∂input would be 0 everywhere. The true
    # derivative (central differences of the golden net's cost, float64, Darknet's step-1
    # window (0, 3)) is 2·∂loss/∂crop in the window and 0 outside it: darkbp's.
    fixture, _, noise = golden
    network = fixture.network().astype(np.float64)
    x = fixture.input.astype(np.float64)
    truth = fixture.truth.astype(np.float64)
    ctx = Pass.training(noise(1))

    def loss(images):
        network.forward(images, ctx)
        return float(network.cost(truth).sum())

    loss(x)
    dx = network.backward(truth, input_grad=True)
    window = np.zeros(x.shape, bool)
    window[:, :, 0:24, 3:27] = True
    assert np.all(dx[~window] == 0) and np.abs(dx[window]).max() > 1e-3
    rng = np.random.default_rng(0)
    inside = [(int(rng.integers(8)), 0, int(rng.integers(24)), 3 + int(rng.integers(24)))
              for _ in range(40)]
    outside = [(0, 0, 10, 2), (1, 0, 27, 27), (2, 0, 5, 27), (7, 0, 24, 10)]
    eps = 1e-6
    numeric = {}
    for cell in inside + outside:
        plus, minus = x.copy(), x.copy()
        plus[cell] += eps
        minus[cell] -= eps
        numeric[cell] = (loss(plus) - loss(minus)) / (2 * eps)
        # abs: float64 rounding of a loss of ~22 over 2ε is ~1e-8
        assert dx[cell] == pytest.approx(numeric[cell], rel=1e-6, abs=2e-8), cell
    # Darknet's rule (0 everywhere) misses derivatives of this size inside the window:
    assert max(abs(numeric[cell]) for cell in inside) > 1e-2


def test_table_line_equals_darknets(golden):
    fixture, _, _ = golden
    # ../shared/darknet-golden/crop/summary.txt, line 2
    darknet = "    0 Crop Layer: 28 x 28 -> 24 x 24 x 1 image\n"
    assert darknet_text(parse_network(fixture.cfg)).splitlines(keepends=True)[1] == darknet


def test_gpu_only_options_are_accepted_with_a_warning(golden):
    fixture, _, _ = golden
    warnings = [w.message for w in parse_network(fixture.cfg).warnings]
    for key in ("angle", "saturation", "exposure"):
        assert f"[crop] option '{key}' is known to Darknet but not used by darkbp" in warnings


def test_table_line_puts_height_first(write_cfg):
    # Darknet prints h, w, crop_h, crop_w, c: here 6 x 7 -> 4 x 5 x 3 for a 7-wide, 6-high input
    path = write_cfg("[net]\nwidth=7\nheight=6\nchannels=3\n[crop]\ncrop_height=4\n"
                     "crop_width=5\nshift=0.1\n")
    network = parse_network(path)
    assert network.layers[0].darknet_line() == "Crop Layer: 6 x 7 -> 4 x 5 x 3 image\n"
    assert [w.message for w in network.warnings] == [
        "[crop] option 'shift' is known to Darknet but not used by darkbp"]


def test_defaults_crop_1x1_unflipped_adjusted(write_cfg):
    path = write_cfg("[net]\nwidth=3\nheight=3\nchannels=1\n[crop]\n")
    layer = parse_network(path).layers[0]
    assert (layer.crop_height, layer.crop_width, layer.flip, layer.noadjust) == (1, 1, False,
                                                                                  False)
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(layer.forward(x, EVAL), [[[[2 * 4.0 - 1]]]])


# --- bad input --------------------------------------------------------------------------------

NET = "[net]\nwidth=6\nheight=4\nchannels=2\n"
BAD = [
    ("taller than input", NET + "[crop]\ncrop_width=2\ncrop_height=5\n", 7,
     "crop_height=5 is larger than the input's height 4"),
    ("wider than input", NET + "[crop]\ncrop_height=2\ncrop_width=7\n", 7,
     "crop_width=7 is larger than the input's width 6"),
    ("zero size", NET + "[crop]\ncrop_height=0\n", 6, "'crop_height' must be at least 1, got 0"),
    ("negative flip", NET + "[crop]\nflip=-1\n", 6, "'flip' must be at least 0"),
    ("flat input", NET + "[connected]\noutput=4\n[crop]\n", 7,
     "[crop] needs an image input, but the layer before it ([connected])"),
]


@pytest.mark.parametrize("name, text, line, words", BAD, ids=[b[0] for b in BAD])
def test_bad_section_is_an_error_naming_file_line_and_section(tmp_path, name, text, line,
                                                              words):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    assert_cfg_error(path, line, "crop", words)
