"""[local] (darkbp/layers/local.py, darkbp/ops/local.py) against things darkbp did not write.

The kernel against the loop reference tests/naive_layers.py (transcribed from Darknet's
local_layer.c) and against torch (unfold + einsum, float64); the shape rule against the
reference's; the table line against Darknet's printout; the [local] output and update of
the run from Darknet's init.weights against Darknet's own numbers
(../shared/darknet-golden/local/, where Darknet is right; the whole run is in
tests/test_golden.py); darkbp's own initialisation, which fills every location where
Darknet fills only the first, against make_local_layer's distribution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from darkbp.cfg import read_cfg_text
from darkbp.errors import DarkbpError
from darkbp.network import build_network, parse_network
from darkbp.ops.activations import ACTIVATIONS
from darkbp.ops.layout import as_nchw
from darkbp.ops.local import local_backward, local_forward
from darkbp.summary import darknet_text, summary_data
from tests import naive_layers as nl
from tests.conftest import assert_cfg_error
from tests.golden import Golden, arrays, relative
from tests.test_golden import FORWARD_TOL, WEIGHTS_TOL


# (N, C, H, W, F, size, stride, pad); every one a shape where Darknet's two rules agree.
CASES = [
    (1, 1, 3, 3, 1, 2, 1, 0),
    (2, 2, 5, 6, 3, 3, 1, 1),         # 'same': pad 1, 3x3
    (3, 2, 7, 5, 2, 3, 2, 0),
    (2, 3, 6, 6, 2, 5, 1, 2),         # 'same': pad 2, 5x5
    (2, 2, 5, 5, 2, 2, 2, 1),         # pad 1 with an even size: the rules agree by rounding
    (2, 2, 9, 4, 2, 3, 3, 1),         # stride 3, pad 1
    (1, 2, 4, 7, 3, 1, 1, 0),         # 1x1
    (2, 1, 7, 7, 2, 1, 3, 0),         # 1x1, stride 3: rows the kernel never reads
    (2, 2, 4, 4, 1, 4, 1, 0),         # one location: the kernel is the input
    (2, 2, 1, 5, 2, 3, 1, 1),         # one row, 'same'
    (4, 3, 6, 8, 4, 3, 2, 1),         # 'same', stride 2
]


def _ids(case):
    return "N{}C{}H{}W{}F{}k{}s{}p{}".format(*case)


def _params(rng, c, h, w, f, size, stride, pad):
    out_h, out_w = nl.local_out_size(h, w, size, stride, pad)
    weights = rng.standard_normal((out_h, out_w, f, c, size, size))
    biases = rng.standard_normal((f, out_h, out_w))
    return weights, biases


def _chwn(a):
    """The same (N, C, H, W) values stored CHWN (ops/layout.py)."""
    return as_nchw(np.ascontiguousarray(a.transpose(1, 2, 3, 0)), "CHWN")


def check_against_naive(rng, n, c, h, w, f, size, stride, pad, layout):
    x = rng.standard_normal((n, c, h, w))
    weights, biases = _params(rng, c, h, w, f, size, stride, pad)
    xin = _chwn(x) if layout == "CHWN" else x.copy()
    y, cache = local_forward(xin, weights, biases, stride, pad)
    np.testing.assert_allclose(y, nl.local_forward(x, weights, biases, size, stride, pad),
                               rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, dweights, dbiases = local_backward(_chwn(dy) if layout == "CHWN" else dy.copy(),
                                           cache, weights)
    ndx, ndw, ndb = nl.local_backward(x, weights, dy, size, stride, pad)
    np.testing.assert_allclose(dx, ndx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dweights, ndw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dbiases, ndb, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(xin, x)                   # the input is left as it was
    none, dweights2, dbiases2 = local_backward(dy, cache, weights, need_dx=False)
    assert none is None
    np.testing.assert_array_equal(dweights2, dweights)
    np.testing.assert_array_equal(dbiases2, dbiases)


@pytest.mark.parametrize("layout", ["NCHW", "CHWN"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_kernel_equals_the_loop_reference(case, layout):
    check_against_naive(np.random.default_rng(sum(case)), *case, layout)


@st.composite
def local_shapes(draw):
    size = draw(st.sampled_from([1, 2, 3, 4, 5]))
    stride = draw(st.integers(1, 3))
    pad = draw(st.integers(0, 3))
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    assume(h + 2 * pad >= size and w + 2 * pad >= size)
    try:
        nl.local_out_size(h, w, size, stride, pad)
    except ValueError:
        assume(False)                                      # a shape darkbp refuses
    return (draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w, draw(st.integers(1, 3)),
            size, stride, pad)


@settings(max_examples=40, deadline=None)
@given(local_shapes(), st.sampled_from(["NCHW", "CHWN"]), st.integers(0, 2**32 - 1))
def test_kernel_equals_the_loop_reference_on_random_shapes(case, layout, seed):
    check_against_naive(np.random.default_rng(seed), *case, layout)


def test_kernel_works_in_float32():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 5, 6))
    weights, biases = _params(rng, 2, 5, 6, 3, 3, 1, 1)
    y, cache = local_forward(*(a.astype(np.float32) for a in (x, weights, biases)), 1, 1)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, nl.local_forward(x, weights, biases, 3, 1, 1), rtol=1e-4,
                               atol=1e-5)
    dx, dweights, dbiases = local_backward(np.ones(y.shape, np.float32), cache,
                                           weights.astype(np.float32))
    assert dx.dtype == dweights.dtype == dbiases.dtype == np.float32


# --- torch: a locally connected layer built from unfold + einsum --------------------------

@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[4], CASES[5], CASES[10]], ids=_ids)
def test_kernel_matches_torch(case):
    torch = pytest.importorskip("torch")
    n, c, h, w, f, size, stride, pad = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, c, h, w))
    weights, biases = _params(rng, c, h, w, f, size, stride, pad)
    out_h, out_w = biases.shape[1:]

    def torch_local(tx, tw, tb):
        cols = torch.nn.functional.unfold(tx, size, padding=pad, stride=stride)  # (N, K, L)
        y = torch.einsum("lfk,nkl->nfl", tw.reshape(out_h * out_w, f, -1), cols)
        return y.reshape(n, f, out_h, out_w) + tb

    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, weights, biases)]
    ty = torch_local(*ts)
    dy = rng.standard_normal(tuple(ty.shape))
    tdx, tdw, tdb = torch.autograd.grad(ty, ts, torch.tensor(dy))
    y, cache = local_forward(x, weights, biases, stride, pad)
    dx, dweights, dbiases = local_backward(dy, cache, weights)
    for ours, theirs in ((y, ty), (dx, tdx), (dweights, tdw), (dbiases, tdb)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


# --- the shape rule -------------------------------------------------------------------------

def _net(text: str):
    return build_network(read_cfg_text(text, "net.cfg"), "net.cfg")


def _local_cfg(c, h, w, filters=2, size=3, stride=1, pad=0, extra=""):
    return (f"[net]\nwidth={w}\nheight={h}\nchannels={c}\n"
            f"[local]\nfilters={filters}\nsize={size}\nstride={stride}\npad={pad}\n{extra}")


def test_shape_rule_is_darknets_where_its_two_rules_agree():
    # tests/naive_layers.py's local_out_size is Darknet's local_out_height/width, refusing
    # the shapes where im2col's grid differs. darkbp accepts exactly those shapes, less
    # the ones whose kernel is larger than the padded input, which C's division toward 0
    # turns into one location (size 3, stride 2 on 2 pixels), an empty output for darkbp.
    overhanging = 0
    for h in range(1, 9):
        w = h + 1
        for size in range(1, 6):
            for stride in range(1, 4):
                for pad in range(4):
                    try:
                        expected = nl.local_out_size(h, w, size, stride, pad)
                    except ValueError:
                        expected = None
                    if expected and (h + 2 * pad < size or w + 2 * pad < size):
                        overhanging += 1
                        expected = None
                    text = _local_cfg(2, h, w, filters=3, size=size, stride=stride, pad=pad)
                    if expected is None:
                        with pytest.raises(DarkbpError):
                            _net(text)
                    else:
                        assert _net(text).layers[0].out_shape == (3, *expected), (h, size,
                                                                                  stride, pad)
    assert overhanging > 0


# --- the table line ---------------------------------------------------------------------

# /work/shared/darknet-golden/local/summary.txt, as Darknet printed it for local.cfg.
GOLDEN_TABLE = """\
layer     filters    size              input                output
    0 conv      4  3 x 3 / 2    28 x  28 x   1   ->    14 x  14 x   4  0.000 BFLOPs
    1 max          2 x 2 / 2    14 x  14 x   4   ->     7 x   7 x   4
    2 Local Layer: 7 x 7 x 4 image, 4 filters -> 7 x 7 x 4 image
    3 connected                             196  ->    10
    4 softmax                                          10
"""


def test_darknet_table_of_the_golden_cfg():
    assert darknet_text(parse_network(Golden("local").cfg)) == GOLDEN_TABLE


def test_table_line_prints_height_before_width():
    # Darknet's only printouts of [local] are square; the order is make_local_layer's
    # printf arguments: h, w, c, n, out_h, out_w, n.
    network = _net(_local_cfg(2, 5, 9, filters=3, size=3, stride=2, pad=1))
    assert network.layers[0].darknet_line() == ("Local Layer: 5 x 9 x 2 image, 3 filters -> "
                                                "3 x 5 x 3 image\n")


def test_summary_counts_parameters_and_flops():
    row = summary_data(parse_network(Golden("local").cfg))["layers"][2]
    # 7x7 locations, 4 filters of 4x3x3 each: 196 biases, 49·4·36 weights
    assert row["params"] == 196 + 7056
    assert row["bflops"] == pytest.approx(2 * 7056 / 1e9)
    assert (row["filters"], row["size"], row["stride"], row["pad"], row["activation"]) == \
        (4, 3, 1, 1, "leaky")


# --- bad input ------------------------------------------------------------------------------

BAD = [
    ("kernel larger than the input", _local_cfg(1, 7, 7, size=9), 5, "no pixels"),
    ("C division's overhanging window", _local_cfg(1, 2, 2, size=3, stride=2), 5, "no pixels"),
    ("pad that im2col disagrees with", _local_cfg(1, 7, 7, size=5, pad=1), 9,
     "counts 7 x 7 locations (reading pad as a flag: (in - 1)/stride + 1) but im2col pads the "
     "input by 1 pixel, which gives 5 x 5 windows"),
    ("pad 2 with a 3x3 kernel", _local_cfg(1, 6, 6, size=3, pad=2), 9, "pad=(size-1)/2"),
    ("after a flat layer", "[net]\nwidth=4\nheight=4\nchannels=1\n[connected]\noutput=8\n"
     "[local]\nfilters=1\n", 7, "needs an image input"),
]


@pytest.mark.parametrize("name, text, line, words", BAD, ids=[b[0] for b in BAD])
def test_bad_local_is_a_clear_error(tmp_path, name, text, line, words):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    assert_cfg_error(path, line, "local", words)


# --- Darknet's golden run ---------------------------------------------------------------
# The run (forward, losses, weights, .weights files) is tests/test_golden.py's; here the
# [local] layer's own output and, stricter than the weights, the update itself.

def test_golden_local_output_equals_darknets():
    fixture = Golden("local")
    local_output = fixture.network().run(fixture.input, keep=True)[2]
    assert relative(local_output.reshape(fixture.batch, -1),
                    fixture.layer_output("forward", 2)) < FORWARD_TOL


@pytest.fixture(scope="module")
def replayed():
    fixture = Golden("local")
    return fixture, fixture.replay()


@pytest.mark.parametrize("step", [1, 5])
def test_golden_local_updates_equal_darknets(replayed, step):
    # The updates are small next to the weights (1e-4 of them after one step), so compare
    # the steps themselves: to WEIGHTS_TOL of the largest step, plus the float32 rounding of
    # the stored weights (one ulp of their largest value).
    fixture, run = replayed
    start, theirs = arrays(fixture.network()), fixture.weights_after(step)
    for key in ("2.biases", "2.weights"):
        their_step = theirs[key].astype(np.float64) - start[key]
        our_step = run.step_weights[step][key].astype(np.float64) - start[key]
        ulp = float(np.spacing(np.abs(theirs[key]).max()))
        assert np.abs(our_step - their_step).max() <= (WEIGHTS_TOL * np.abs(their_step).max()
                                                       + ulp), key
        # Every location learns, also those Darknet initialised to 0.
        assert np.all(np.abs(their_step.reshape(7 * 7, -1)).max(axis=1) > 0), key


# --- initialisation -----------------------------------------------------------------------

def test_darknet_initialises_only_the_first_location():
    layer = Golden("local").network().layers[2]
    scale = math.sqrt(2.0 / (3 * 3 * 4))                 # make_local_layer: sqrt(2/(size²·c))
    per_location = layer.weights.reshape(7 * 7, -1)
    first = per_location[0].astype(np.float64)
    assert np.count_nonzero(first) == first.size and not per_location[1:].any()
    assert not layer.biases.any()
    # scale·U(−1, 1): within ±scale, std scale/√3 (144 draws: ±15% is over 4 standard errors)
    assert np.abs(first).max() <= scale
    assert first.std() == pytest.approx(scale / math.sqrt(3), rel=0.15)


def test_darkbp_initialises_every_location_with_darknets_distribution():
    network = _net(_local_cfg(8, 8, 8, filters=16, size=3, pad=1)).initialize(5, np.float64)
    layer = network.layers[0]
    scale = math.sqrt(2.0 / (3 * 3 * 8))
    weights = layer.weights.reshape(8 * 8, -1)         # 64 locations of 16·72 = 1152 weights
    assert not layer.biases.any()                      # Darknet's calloc
    assert np.abs(weights).max() <= scale
    assert np.abs(weights).max() > 0.999 * scale
    # U(−1, 1)·scale: mean 0, std scale/√3, half of the values within scale/2. Standard
    # errors over 73728 values: mean 0.004·σ, std 0.2%; per location (1152): std 1.3%.
    sigma = scale / math.sqrt(3)
    assert abs(weights.mean()) < 0.02 * sigma
    assert weights.std() == pytest.approx(sigma, rel=0.01)
    assert np.mean(np.abs(weights) < scale / 2) == pytest.approx(0.5, abs=0.01)
    np.testing.assert_allclose(weights.std(axis=1), sigma, rtol=0.08)
    assert np.all(np.abs(weights.mean(axis=1)) < 0.15 * sigma)


def test_initialisation_is_the_seeds():
    text = _local_cfg(2, 5, 5, filters=2, size=3, pad=1)
    first, again = (_net(text).initialize(11, np.float32).layers[0] for _ in range(2))
    np.testing.assert_array_equal(first.weights, again.weights)
    other = _net(text).initialize(12, np.float32).layers[0]
    assert not np.array_equal(first.weights, other.weights)


# --- the layer: activation after the kernel -----------------------------------------------

@pytest.mark.parametrize("activation", ["logistic", "leaky", "linear"])
def test_layer_forward_is_the_activation_of_the_reference(activation):
    extra = f"activation={activation}\n" if activation != "logistic" else ""
    network = _net(_local_cfg(3, 6, 5, filters=2, size=3, stride=2, pad=1, extra=extra))
    layer = network.initialize(2, np.float64).layers[0]
    assert layer.activation == activation              # logistic: Darknet's default
    rng = np.random.default_rng(1)
    layer.biases[...] = rng.standard_normal(layer.biases.shape)
    x = rng.standard_normal((4, 3, 6, 5))
    expected = ACTIVATIONS[activation].forward(
        nl.local_forward(x, layer.weights, layer.biases, 3, 2, 1))
    np.testing.assert_allclose(network.forward(x), expected.reshape(4, -1), rtol=1e-12,
                               atol=1e-14)
