"""[cost]: sse, masked, smooth and L1 costs, times scale, as the network's last layer.

darkbp reports the cost whose exact gradient is what Darknet applies (for sse ½Σ(t − p)²,
half of Darknet's reported Σ(t − p)²). Against the loop reference (tests/naive_layers.py),
torch's mse_loss / l1_loss / smooth_l1_loss, Darknet's printed table lines and Darknet's
numbers: darknet-golden/cost_sse_nosoftmax (Darknet's update is darkbp's; its reported loss
is exactly twice darkbp's) and darknet-golden/cost_sse ([softmax] then [cost]: Darknet
trains with exactly 2× the cross-entropy gradient, darkbp with softmax + MSE). Gradcheck,
split passes and .weights round trips run on tests/layer_cfgs/cost*.cfg.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from darkbp.cfg import read_cfg_text
from darkbp.cli import main
from darkbp.layers.cost import CostLayer
from darkbp.network import build_network, parse_network
from darkbp.passes import EVAL, Pass
from darkbp.weights import load_weights
from tests import naive_layers as nl
from tests.conftest import assert_cfg_error
from tests.golden import LEARNING_RATE, Golden, arrays, relative
from tests.test_golden import FORWARD_TOL, LOSS_TOL, WEIGHTS_TOL

KINDS = ("sse", "masked", "smooth", "L1")


def chwn(x):
    """The same (N, C, H, W) values stored CHWN (a pixel's N values adjacent), as a view."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def cost_layer(shape, kind, scale):
    _, c, h, w = shape
    return CostLayer((c, h, w), kind, scale, flat=(h, w) == (1, 1))


def predictions_and_truth(shape, seed):
    """p (N, C, H, W) and truth (N, C·H·W) with |t − p| on both sides of 1 (smooth's two
    pieces), a few t == p exactly (L1's tie) and, for masked, a few SECRET_NUM truths."""
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 1.5, shape)
    truth = rng.uniform(-1, 2, (shape[0], int(np.prod(shape[1:]))))
    flat = p.reshape(shape[0], -1)
    truth[:, ::5] = flat[:, ::5]
    truth[:, 1::7] = nl.SECRET_NUM
    return p, truth


# --- the loop reference ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("shape, stored", [((4, 10, 1, 1), "NCHW"), ((3, 2, 3, 4), "NCHW"),
                                           ((5, 3, 2, 2), "CHWN"), ((1, 14, 1, 1), "CHWN")])
def test_cost_and_gradient_equal_the_loop_reference(kind, scale, shape, stored):
    p, truth = predictions_and_truth(shape, seed=len(kind) + int(scale * 10) + sum(shape))
    if kind != "masked":                      # the others have no "no truth" marker
        truth[truth == nl.SECRET_NUM] = 0.25
    p_in = chwn(p) if stored == "CHWN" else p.copy()
    p_in.setflags(write=False)      # Darknet's masked writes into its input; darkbp must not
    layer = cost_layer(shape, kind, scale)
    assert layer.forward(p_in, Pass.training()) is p_in         # the output is the input
    t = truth.reshape(shape)                          # the references take p's shape
    np.testing.assert_allclose(layer.cost(truth), nl.cost_forward(p, t, kind, scale),
                               rtol=1e-13, atol=0)
    grad = layer.input_grad(truth)
    assert grad.shape == shape
    np.testing.assert_allclose(grad, nl.cost_gradient(p, t, kind, scale), rtol=1e-14, atol=0)


@pytest.mark.parametrize("kind, factor", [("sse", 0.5), ("masked", 0.5), ("smooth", 0.5),
                                          ("L1", 1.0)])
def test_reported_cost_against_darknets(kind, factor):
    # Darknet reports the sum of its error array: d² (sse, masked), 2|d| − 1 beyond |d| = 1
    # (smooth), |d| (L1), and no scale. darkbp's is the cost of the gradient both apply.
    p, truth = predictions_and_truth((3, 12, 1, 1), seed=4)
    if kind != "masked":
        truth[truth == nl.SECRET_NUM] = 0.25
    layer = cost_layer(p.shape, kind, 1.0)
    layer.forward(p, EVAL)
    np.testing.assert_allclose(layer.cost(truth),
                               factor * nl.darknet_reported_cost(p, truth.reshape(p.shape), kind),
                               rtol=1e-13)


def test_float32_stays_float32():
    p = np.random.default_rng(0).random((2, 5, 1, 1), dtype=np.float32)
    truth = np.eye(5)[[1, 3]]                          # float64 truth: taken in p's dtype
    for kind in KINDS:
        layer = cost_layer(p.shape, kind, 2.0)
        layer.forward(p, EVAL)
        assert layer.cost(truth).dtype == np.float32
        assert layer.input_grad(truth).dtype == np.float32


# --- torch -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sse", "smooth", "L1"])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_cost_and_gradient_equal_torch(kind, scale):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    rng = np.random.default_rng(3)
    p = rng.normal(0, 1.5, (4, 3, 2, 2))
    truth = rng.uniform(-1, 2, (4, 12))               # no t == p: torch's L1 has 0 there
    pt = torch.tensor(p.reshape(4, 12), requires_grad=True)
    tt = torch.tensor(truth)
    per_element = {"sse": lambda: 0.5 * functional.mse_loss(pt, tt, reduction="none"),
                   "L1": lambda: functional.l1_loss(pt, tt, reduction="none"),
                   "smooth": lambda: functional.smooth_l1_loss(pt, tt, reduction="none",
                                                               beta=1.0)}[kind]()
    per_image = scale * per_element.sum(dim=1)
    per_image.sum().backward()
    layer = cost_layer(p.shape, kind, scale)
    layer.forward(p, EVAL)
    np.testing.assert_allclose(layer.cost(truth), per_image.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(layer.input_grad(truth).reshape(4, 12), pt.grad.numpy(),
                               rtol=1e-13, atol=1e-15)


# --- Darknet's table and the builder -----------------------------------------------------------

@pytest.mark.parametrize("literal, net, before", [
    # ../shared/darknet-golden/cost_sse/summary.txt, layer 3 (after a [softmax] of 10)
    ("    3 cost                                             10\n", "inputs=10", "[softmax]"),
    # ../shared/darknet-summary/resnet101.txt, layer 137
    ("  137 cost                                           1000\n", "inputs=1000", "[softmax]"),
    # ../shared/darknet-summary/darknet9000.txt, layer 26
    ("   26 cost                                           9418\n",
     "width=1\nheight=1\nchannels=9418", ""),
])
def test_table_line_equals_darknets(write_cfg, literal, net, before):
    network = parse_network(write_cfg(f"[net]\n{net}\n{before}\n[cost]\ntype=sse\n"))
    assert network.layers[-1].darknet_line() == literal[6:]


def test_defaults_and_shape(write_cfg):
    network = parse_network(write_cfg("[net]\nwidth=3\nheight=2\nchannels=4\n"
                                      "[convolutional]\nfilters=5\n[cost]\n"))
    layer = network.layers[-1]
    assert (layer.kind, layer.scale) == ("sse", 1.0)
    assert (layer.in_shape, layer.out_shape, layer.flat) == ((5, 2, 3), (5, 2, 3), False)
    assert network.cost_layer() is layer and network.warnings == []
    flat = parse_network(write_cfg("[net]\ninputs=3\n[connected]\noutput=2\n[cost]\n"
                                   "type=L1\nscale=.5\n", "flat.cfg")).layers[-1]
    assert (flat.kind, flat.scale, flat.flat, flat.out_shape) == ("L1", 0.5, True, (2, 1, 1))


@pytest.mark.parametrize("scale, factor", [("", "2"), ("scale=2\n", "3")])
def test_cost_after_softmax_warns_once(write_cfg, scale, factor):
    path = write_cfg(f"[net]\ninputs=4\n[softmax]\n\n[cost]\ntype=sse\n{scale}")
    warnings = [str(w) for w in parse_network(path).warnings]
    assert warnings == [
        f"{path}:5: warning: [cost] reads a [softmax]: Darknet trains such a cfg with exactly "
        f"{factor}× the cross-entropy gradient and reports (cross-entropy + SSE)/2, while "
        "darkbp applies the SSE through the softmax's Jacobian (softmax + MSE, as the course "
        "notes derive it)"]
    result = CliRunner().invoke(main, ["summary", str(path), "--format", "darknet"])
    assert result.exit_code == 0
    assert result.stderr.count("reads a [softmax]") == 1


def test_other_costs_after_softmax_warn_too(write_cfg):
    path = write_cfg("[net]\ninputs=4\n[soft]\n[cost]\ntype=L1\n")
    (warning,) = parse_network(path).warnings
    assert "reads a [softmax]: Darknet trains such a cfg with the cross-entropy gradient " \
           "plus the L1 cost's" in warning.message


@pytest.mark.parametrize("value", ["l1", "SSE", "seg", "mse"])
def test_unknown_cost_type_is_an_error_at_its_line(write_cfg, value):
    # Darknet compares with strcmp and falls back to sse for anything else, silently training
    # another cost than the cfg asked for.
    path = write_cfg(f"[net]\ninputs=4\n[cost]\nscale=1\ntype={value}\n")
    words = f"unknown cost type '{value}' (one of: sse, masked, smooth, L1; Darknet's names"
    assert_cfg_error(path, 5, "cost", words, match="starts")


def test_bad_scale_is_an_error_at_its_line(write_cfg):
    path = write_cfg("[net]\ninputs=4\n[cost]\nscale=big\n")
    assert_cfg_error(path, 4, "cost", "'scale' must be a number, got 'big'", match="starts")


def test_cost_not_last_is_an_error_at_its_line(write_cfg):
    path = write_cfg("[net]\ninputs=4\n[cost]\n[connected]\noutput=2\n")
    assert_cfg_error(path, 3, "cost", "[cost] must be the last section", match="equals")


# --- Darknet's numbers: [cost] sse straight on logistic outputs (Darknet is right) ------------

@pytest.fixture(scope="module")
def nosoftmax():
    fixture = Golden("cost_sse_nosoftmax")
    return fixture, fixture.replay()


def test_golden_nosoftmax_forward(nosoftmax):
    fixture, run = nosoftmax
    assert relative(run.forward, fixture.forward) < FORWARD_TOL
    assert relative(run.train_forward, fixture.f32("train_forward.f32")) < FORWARD_TOL
    assert relative(run.forward_step5, fixture.f32("forward_step5.f32")) < FORWARD_TOL
    from_step1 = fixture.network("step1.weights").forward(fixture.input)
    assert relative(from_step1, fixture.f32("forward_step1.f32")) < FORWARD_TOL


@pytest.mark.parametrize("step", [1, 5])
def test_golden_nosoftmax_update_equals_darknets(nosoftmax, step):
    fixture, run = nosoftmax
    theirs = fixture.weights_after(step)
    assert theirs.keys() == run.step_weights[step].keys()
    for key, value in theirs.items():
        assert relative(run.step_weights[step][key], value) < WEIGHTS_TOL, key


def test_golden_nosoftmax_darknets_reported_loss_is_twice_darkbps(nosoftmax):
    fixture, run = nosoftmax
    for step, (ours, theirs) in enumerate(zip(run.losses, fixture.losses, strict=True), 1):
        assert theirs[0] == pytest.approx(2 * ours[0], rel=LOSS_TOL), step
        assert theirs[1] == pytest.approx(2 * ours[1], rel=LOSS_TOL), step
    p = fixture.f32("train_forward.f32").astype(np.float64)
    assert run.losses[0][0] == pytest.approx(0.5 * ((p - fixture.truth) ** 2).sum(),
                                             rel=LOSS_TOL)


# --- Darknet's numbers: [softmax] then [cost] sse (Darknet: 2× cross-entropy) ------------------

@pytest.fixture(scope="module")
def with_softmax():
    fixture = Golden("cost_sse")
    return fixture, fixture.replay()


def test_golden_softmax_forward_agrees(with_softmax):
    fixture, run = with_softmax
    assert relative(run.forward, fixture.forward) < FORWARD_TOL
    assert relative(run.train_forward, fixture.f32("train_forward.f32")) < FORWARD_TOL
    from_step1 = fixture.network("step1.weights").forward(fixture.input)
    assert relative(from_step1, fixture.f32("forward_step1.f32")) < FORWARD_TOL


def test_golden_softmax_losses(with_softmax):
    # darkbp: ½Σ(p − t)² of the softmax output; Darknet: the mean over its two cost layers,
    # (cross-entropy + Σ(t − p)²)/2 — both computed here from Darknet's own softmax output.
    fixture, run = with_softmax
    p = fixture.f32("train_forward.f32").astype(np.float64)
    t = fixture.truth.astype(np.float64)
    sse = ((t - p) ** 2).sum()
    cross_entropy = -(t * np.log(p)).sum()
    assert run.losses[0][0] == pytest.approx(0.5 * sse, rel=LOSS_TOL)
    assert fixture.losses[0][0] == pytest.approx((cross_entropy + sse) / 2, rel=LOSS_TOL)
    # Darknet's [cost] output holds its error array, (t − p)²; its network output is the
    # softmax's (the cost layer is skipped), as darkbp's [cost] passes its input on.
    assert relative(fixture.layer_output("train1", 3), (t - p) ** 2) < FORWARD_TOL


def transcribed_step1(fixture, delta_rule):
    """Step 1 of SGD on cost_sse.cfg (connected 32 logistic, connected 10 logistic, softmax),
    in float64 from Darknet's arrays, with delta_rule(p, t) the gradient at the softmax's
    input. Returns every weight and bias after the update."""
    init = {key: value.astype(np.float64) for key, value in arrays(fixture.network()).items()}
    network = fixture.network()
    batch, decay = network.config.batch, network.config.decay
    x = fixture.input.reshape(batch, -1).astype(np.float64)
    y0 = fixture.layer_output("forward", 0).astype(np.float64)
    y1 = fixture.layer_output("forward", 1).astype(np.float64)
    p = fixture.layer_output("forward", 2).astype(np.float64)
    dz1 = delta_rule(p, fixture.truth.astype(np.float64)) * y1 * (1 - y1)
    dz0 = (dz1 @ init["1.weights"]) * y0 * (1 - y0)
    grads = {"0.biases": dz0.sum(0), "0.weights": dz0.T @ x,
             "1.biases": dz1.sum(0), "1.weights": dz1.T @ y0}
    step = LEARNING_RATE / batch
    return {key: init[key] - step * (grad + (decay * batch * init[key]
                                             if key.endswith("weights") else 0))
            for key, grad in grads.items()}


def softmax_mse(p, t):
    """d(½Σ(p − t)²)/dz through the softmax's Jacobian: p ⊙ (e − Σ p·e), e = p − t."""
    e = p - t
    return p * (e - (p * e).sum(axis=1, keepdims=True))


def test_golden_softmax_darknet_trains_with_twice_the_cross_entropy_gradient(with_softmax):
    fixture, _ = with_softmax
    theirs = fixture.weights_after(1)
    darknet = transcribed_step1(fixture, lambda p, t: 2 * (p - t))
    for key, value in theirs.items():
        assert relative(darknet[key], value) < WEIGHTS_TOL, key


def test_golden_softmax_darkbp_trains_softmax_mse(with_softmax):
    fixture, run = with_softmax
    ours = run.step_weights[1]
    exact = transcribed_step1(fixture, softmax_mse)
    theirs = fixture.weights_after(1)
    for key, value in exact.items():
        assert relative(ours[key], value) < WEIGHTS_TOL, key
        assert relative(ours[key], theirs[key]) > 1e-3, key          # not Darknet's update


def test_golden_softmax_twice_darkbps_own_cross_entropy_is_darknets_step(with_softmax):
    # The same net without the [cost]: darkbp's softmax is then the cost (cross-entropy, its
    # gradient p − t, checked against Darknet in test_golden.py). Darknet's step with the
    # [cost] is the step of twice that gradient.
    fixture, _ = with_softmax
    text = fixture.cfg.read_text()
    cut = text.rindex("[cost]")                      # the section (the comment names it too)
    network = build_network(read_cfg_text(text[:cut], "no_cost.cfg"), "no_cost.cfg")
    network.initialize(0, np.float32)
    load_weights(fixture.folder / "init.weights", network.layers)
    init = {key: value.astype(np.float64) for key, value in arrays(network).items()}
    network.zero_grads()
    network.forward(fixture.input, Pass.training())
    network.backward(fixture.truth)
    batch, decay = network.config.batch, network.config.decay
    step = LEARNING_RATE / batch
    for key, value in fixture.weights_after(1).items():
        index, name = key.split(".")
        layer = network.layers[int(index)]
        grad = 2 * getattr(layer, {"weights": "weight_grads", "biases": "bias_grads"}[name])
        decayed = decay * batch * init[key] if name == "weights" else 0
        assert relative(init[key] - step * (grad + decayed), value) < WEIGHTS_TOL, key
