"""[dropout]: inverted dropout in training, identity in inference.

Against the loop reference (tests/naive_layers.py), torch's own dropout (its mask injected),
Darknet's printed table lines, and Darknet's numbers with its recorded uniform draws injected:
darknet-golden/dropout (relu before the dropout: Darknet is right, darkbp must agree; the
whole run is in tests/test_golden.py, the dropout layer's own outputs here) and
darknet-golden/dropout_logistic (Darknet drops in place, so the logistic layer before gets the
derivative of its activation at the dropped, rescaled output: the forward agrees, the update
does not, by exactly what Darknet's rule predicts). Masks are the same for any --threads.
The gradcheck, split-pass and .weights checks run on tests/layer_cfgs/dropout.cfg.
"""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.layers.dropout import DropoutLayer
from darkbp.network import parse_network
from darkbp.parallel import Runner
from darkbp.passes import EVAL, Noise, Pass
from darkbp.summary import darknet_text
from tests import naive_layers as nl
from tests.conftest import SHARED, assert_cfg_error
from tests.golden import LEARNING_RATE, DropoutDraws, Golden, arrays, relative
from tests.test_golden import FORWARD_TOL, LOSS_TOL, WEIGHTS_TOL


def chwn(x):
    """The same (N, C, H, W) values stored CHWN (a pixel's N values adjacent), as a view."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def dropout(shape, probability, index=3):
    """A [dropout] for (N, C, H, W) inputs of `shape`, as layer `index` of a network."""
    _, c, h, w = shape
    layer = DropoutLayer((c, h, w), probability, flat=(h, w) == (1, 1))
    layer.index = index
    return layer


# --- the loop reference ------------------------------------------------------------------------

CASES = [((6, 4, 1, 1), 0.5), ((3, 2, 5, 4), 0.3), ((2, 1, 7, 7), 0.9), ((4, 3, 2, 6), 0.1),
         ((1, 8, 1, 1), 0.0), ((5, 2, 3, 3), 0.75)]


@pytest.mark.parametrize("shape, probability", CASES)
@pytest.mark.parametrize("stored", ["NCHW", "CHWN"])
def test_training_forward_and_backward_equal_the_loop_reference(shape, probability, stored):
    rng = np.random.default_rng(int(100 * probability) + sum(shape))
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    noise = Noise(seed=11, batch_num=4, subdivision=1)
    layer = dropout(shape, probability)
    # The draws the pass holds for this layer (darkbp/passes.py), whole batch, (N, C, H, W).
    draws = noise.uniform(layer.index, shape)
    x_in = chwn(x) if stored == "CHWN" else x.copy()
    x_in.setflags(write=False)                  # never written: the layer before keeps its output
    y = layer.forward(x_in, Pass.training(noise))
    np.testing.assert_allclose(y, nl.dropout_forward(x, draws, probability), rtol=1e-14,
                               atol=0)
    np.testing.assert_allclose(layer.backward(dy.copy()),
                               nl.dropout_backward(draws, dy, probability), rtol=1e-14, atol=0)


def test_drops_about_probability_of_the_elements_and_scales_the_rest():
    x = np.ones((64, 50, 1, 1))
    y = dropout(x.shape, 0.3).forward(x, Pass.training(Noise(seed=2)))
    assert set(np.unique(y)) == {0.0, 1 / 0.7}
    assert (y == 0).mean() == pytest.approx(0.3, abs=0.02)     # 3200 draws: σ ≈ 0.008


@pytest.mark.parametrize("shape", [(3, 4, 1, 1), (2, 3, 4, 5)])
def test_inference_is_the_input_itself(shape):
    x = np.random.default_rng(0).standard_normal(shape)
    x.setflags(write=False)
    y = dropout(shape, 0.5).forward(x, EVAL)
    assert np.shares_memory(y, x)
    np.testing.assert_array_equal(y, x)


def test_float32_stays_float32():
    x = np.ones((2, 3, 1, 1), np.float32)
    layer = dropout(x.shape, 0.5)
    assert layer.forward(x, Pass.training()).dtype == np.float32
    assert layer.backward(np.ones_like(x)).dtype == np.float32


def test_shards_take_their_rows_of_the_whole_pass():
    # A pass split in two: each shard's mask is its rows of the mask of the whole batch.
    x = np.ones((6, 10, 1, 1))
    noise = Noise(seed=3, batch_num=1)
    whole = dropout(x.shape, 0.5).forward(x, Pass.training(noise))
    first = dropout(x.shape, 0.5).forward(x[:2], Pass.training(noise).shard(0, 6, None))
    rest = dropout(x.shape, 0.5).forward(x[2:], Pass.training(noise).shard(2, 6, None))
    np.testing.assert_array_equal(np.concatenate([first, rest]), whole)


MASK_CFG = """\
[net]
batch=8
inputs=12

[dropout]
probability=.5

[connected]
output=1
activation=linear

[cost]
"""


def masks_through_runner(path, threads, processes, noise):
    """The dropout mask (8, 12) a training pass of `threads` workers used, read back from the
    gradient: with zero weights the connected layer's output is 0, the truth of image n is
    2^n, so its weight gradient is −Σ_n 2^n·y_n with y_n = 2·keep_n: each kept unit of image n
    sets bit n, exactly, in float64."""
    network = parse_network(path).initialize(0, np.float64)
    network.layers[1].weights.fill(0)
    x = np.ones((8, 12))
    truth = 2.0 ** np.arange(8)[:, None]
    with Runner(network, threads, processes=processes) as runner:
        assert runner.split == (threads > 1)
        runner.train_step(x, truth, noise)
    bits = (-network.layers[1].weight_grads[0] / 2).astype(np.int64)     # (12,)
    return (bits[None, :] >> np.arange(8)[:, None]) & 1


def test_threads_1_and_2_draw_the_same_masks(write_cfg):
    path = write_cfg(MASK_CFG)
    noise = Noise(seed=9, batch_num=5, subdivision=0)
    expected = noise.uniform(0, (8, 12, 1, 1)).reshape(8, 12) >= 0.5   # the pass's draws
    assert 0 < expected.sum() < expected.size
    for threads, processes in [(1, None), (2, None), (2, False)]:
        np.testing.assert_array_equal(masks_through_runner(path, threads, processes, noise),
                                      expected, err_msg=f"threads={threads} {processes}")
    other = Noise(seed=9, batch_num=6, subdivision=0)      # the next batch: another mask
    assert not np.array_equal(masks_through_runner(path, 2, None, other), expected)


# --- torch -------------------------------------------------------------------------------------

@pytest.mark.parametrize("probability", [0.2, 0.5, 0.8])
def test_equals_torch_dropout_given_its_mask(probability):
    torch = pytest.importorskip("torch")
    shape = (4, 3, 5, 2)
    rng = np.random.default_rng(5)
    x = rng.uniform(0.5, 1.5, shape)                  # no zeros: torch's zeros are its drops
    dy = rng.standard_normal(shape)
    torch.manual_seed(int(10 * probability))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.dropout(xt, probability, training=True)
    (yt * torch.tensor(dy)).sum().backward()
    keep = yt.detach().numpy() != 0
    assert 0 < keep.sum() < keep.size
    # darkbp keeps an element whose draw is >= p: draw 0 drops it, draw 0.99 keeps it.
    noise = DropoutDraws(draws=np.where(keep, 0.99, 0.0), layer=3)
    layer = dropout(shape, probability)
    np.testing.assert_allclose(layer.forward(x, Pass.training(noise)), yt.detach().numpy(),
                               rtol=1e-15, atol=0)
    np.testing.assert_allclose(layer.backward(dy.copy()), xt.grad.numpy(), rtol=1e-15, atol=0)


# --- Darknet's table ---------------------------------------------------------------------------

@pytest.mark.parametrize("literal, net", [
    # ../shared/darknet-summary/vgg-16.txt, layer 20: after a 4096-output [connected]
    ("   20 dropout       p = 0.50               4096  ->  4096\n", "inputs=4096"),
    # ../shared/darknet-summary/cifar.txt, layer 4: on a 14 x 14 x 128 image
    ("    4 dropout       p = 0.50               25088  ->  25088\n",
     "width=14\nheight=14\nchannels=128"),
    # ../shared/darknet-golden/dropout/summary.txt, layer 3
    ("    3 dropout       p = 0.50                 64  ->    64\n", "inputs=64"),
])
def test_table_line_equals_darknets(write_cfg, literal, net):
    layer = parse_network(write_cfg(f"[net]\n{net}\n[dropout]\nprobability=.5\n")).layers[0]
    assert layer.darknet_line() == literal[6:]


def test_default_probability_is_one_half_and_the_shape_is_kept(write_cfg):
    image = parse_network(write_cfg("[net]\nwidth=5\nheight=4\nchannels=3\n[dropout]\n"
                                    "[convolutional]\nfilters=2\n"))
    layer = image.layers[0]
    assert layer.probability == 0.5
    assert (layer.out_shape, layer.flat) == ((3, 4, 5), False)   # a convolution may follow
    flat = parse_network(write_cfg("[net]\ninputs=7\n[dropout]\n", "flat.cfg")).layers[0]
    assert (flat.out_shape, flat.flat) == ((7, 1, 1), True)


def test_whole_table_with_dropout_on_images_equals_darknets():
    # ../shared/darknet-summary/cifar.txt: three [dropout] between convolutions
    expected = (SHARED / "darknet-summary" / "cifar.txt").read_text()
    assert darknet_text(parse_network(SHARED / "darknet-cfg" / "cifar.cfg")) == expected


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, words", [
    ("1", "'probability' must be at least 0 and below 1, got 1"),
    ("1.5", "'probability' must be at least 0 and below 1, got 1.5"),
    ("-.1", "'probability' must be at least 0 and below 1, got -.1"),
    ("half", "'probability' must be a number, got 'half'"),
])
def test_bad_probability_is_an_error_at_its_line(write_cfg, value, words):
    path = write_cfg(f"[net]\ninputs=4\n\n[dropout]\n# drop\nprobability={value}\n")
    assert_cfg_error(path, 6, "dropout", words, match="equals")


def test_probability_zero_keeps_everything(write_cfg):
    layer = parse_network(write_cfg("[net]\ninputs=4\n[dropout]\nprobability=0\n")).layers[0]
    x = np.arange(8.0).reshape(2, 4, 1, 1)
    np.testing.assert_array_equal(layer.forward(x, Pass.training()), x)


# --- Darknet's numbers, its recorded draws injected --------------------------------------------
# darknet-golden/dropout's run (forward, losses, weights, .weights files) is in
# tests/test_golden.py, with the same draws (DropoutDraws.recorded); here the [dropout]
# layer's own outputs.

def test_golden_relu_dropout_outputs_equal_darknets():
    fixture = Golden("dropout")
    network = fixture.network()
    # Inference: the dropout's output is its input; training: Darknet's dropped copy.
    assert relative(network.run(fixture.input, EVAL, keep=True)[3].reshape(8, -1),
                    fixture.layer_output("forward", 3)) < FORWARD_TOL
    ctx = Pass.training(DropoutDraws.recorded(fixture)(1))
    assert relative(network.run(fixture.input, ctx, keep=True)[3].reshape(8, -1),
                    fixture.layer_output("train1", 3)) < FORWARD_TOL


@pytest.fixture(scope="module")
def logistic_run():
    fixture = Golden("dropout_logistic")
    return fixture, fixture.replay(noise=DropoutDraws.recorded(fixture))


def test_golden_logistic_forward_and_first_loss_agree(logistic_run):
    fixture, run = logistic_run
    assert relative(run.forward, fixture.forward) < FORWARD_TOL
    assert relative(run.train_forward, fixture.f32("train_forward.f32")) < FORWARD_TOL
    assert run.losses[0][0] == pytest.approx(fixture.losses[0][0], rel=LOSS_TOL)
    from_step1 = fixture.network("step1.weights").forward(fixture.input)
    assert relative(from_step1, fixture.f32("forward_step1.f32")) < FORWARD_TOL


def test_golden_logistic_darknet_drops_in_place():
    # Darknet's layer 2 (logistic) output after the training pass IS the dropout's output:
    # the dropped and rescaled copy, which its backward then differentiates.
    fixture = Golden("dropout_logistic")
    np.testing.assert_array_equal(fixture.layer_output("train1", 2),
                                  fixture.layer_output("train1", 3))


def test_golden_logistic_update_differs_only_before_the_dropout(logistic_run):
    fixture, run = logistic_run
    theirs = fixture.weights_after(1)
    for key in ("4.weights", "4.biases"):     # after the dropout: the same gradient
        assert relative(run.step_weights[1][key], theirs[key]) < WEIGHTS_TOL, key
    for key in ("0.weights", "0.biases", "2.weights", "2.biases"):
        assert relative(run.step_weights[1][key], theirs[key]) > 1e-4, key


def darknet_in_place_forward(self, x, ctx):
    """Darknet's forward_dropout_layer: drops and rescales in place, in the previous layer's
    output (which a [connected] layer's backward reads for its activation's derivative)."""
    if ctx.train:
        self._draws = ctx.uniform(self.index, x.shape[0], self.in_shape)
        x[...] = np.where(self._draws < self.probability, 0, x * x.dtype.type(self.scale))
    return x


def darknet_backward(self, dy, need_dx=True):
    """Darknet's backward_dropout_layer."""
    return np.where(self._draws < self.probability, 0, dy * dy.dtype.type(self.scale))


def test_golden_logistic_darknets_in_place_rule_reproduces_all_its_numbers(monkeypatch):
    fixture = Golden("dropout_logistic")
    monkeypatch.setattr(DropoutLayer, "forward", darknet_in_place_forward)
    monkeypatch.setattr(DropoutLayer, "backward", darknet_backward)
    run = fixture.replay(noise=DropoutDraws.recorded(fixture))
    for step, (ours, theirs) in enumerate(zip(run.losses, fixture.losses, strict=True), 1):
        assert ours[0] == pytest.approx(theirs[0], rel=LOSS_TOL), step
    for step in (1, 5):
        for key, value in fixture.weights_after(step).items():
            assert relative(run.step_weights[step][key], value) < WEIGHTS_TOL, (step, key)
    assert relative(run.forward_step5, fixture.f32("forward_step5.f32")) < FORWARD_TOL


def test_golden_logistic_step1_difference_is_what_darknets_rule_predicts(logistic_run):
    """Layer 2's step-1 update transcribed in float64 from Darknet's own arrays, with the
    logistic's derivative y(1 − y) taken at its output y (darkbp) and at the dropped,
    rescaled output y' (Darknet): the first gives darkbp's weights, the second Darknet's,
    and darkbp − Darknet is (lr/B)·(g_Darknet − g_exact)."""
    fixture, run = logistic_run
    init = {key: value.astype(np.float64) for key, value in arrays(fixture.network()).items()}
    network = fixture.network()
    batch, decay = network.config.batch, network.config.decay
    x2 = fixture.layer_output("forward", 1).astype(np.float64)      # the maxpool's output
    w2, b2, w4 = init["2.weights"], init["2.biases"], init["4.weights"]
    y2 = 1 / (1 + np.exp(-(x2 @ w2.T + b2)))                        # (8, 64)
    keep = fixture.f32("dropout_rand_step1_layer3.f32") >= 0.5
    dropped = np.where(keep, 2 * y2, 0)                                 # y' = Darknet's l.output
    assert relative(dropped, fixture.layer_output("train1", 3)) < FORWARD_TOL
    p = fixture.f32("train_forward.f32").astype(np.float64)            # softmax output
    # The cross-entropy's p − t, back through [connected] 4 (linear) and the [dropout]:
    dy2 = np.where(keep, 2 * ((p - fixture.truth) @ w4), 0)

    def updated(dz):
        g_weights, g_biases = dz.T @ x2, dz.sum(axis=0)
        step = LEARNING_RATE / batch
        return {"2.weights": w2 - step * (g_weights + decay * batch * w2),
                "2.biases": b2 - step * g_biases}

    exact = updated(dy2 * y2 * (1 - y2))
    darknet = updated(dy2 * dropped * (1 - dropped))
    theirs = fixture.weights_after(1)
    for key in ("2.weights", "2.biases"):
        assert relative(darknet[key], theirs[key]) < WEIGHTS_TOL, key
        assert relative(exact[key], run.step_weights[1][key]) < WEIGHTS_TOL, key
        predicted = exact[key] - darknet[key]
        actual = run.step_weights[1][key].astype(np.float64) - theirs[key]
        scale = np.abs(theirs[key]).max()
        assert np.abs(actual - predicted).max() < WEIGHTS_TOL * scale, key
        assert np.abs(predicted).max() > 1e4 * WEIGHTS_TOL * scale, key   # a real difference
