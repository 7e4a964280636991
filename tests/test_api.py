"""The Python API (darkbp/api.py): the README's example as written, predict against the
library's own forward and against Darknet's numbers, trained weights against `darkbp eval`,
.weights round trips, and bad input.

What the expected values rest on: Darknet's own outputs and files (../shared/darknet-golden),
the CLI's report, LeNet's parameter count by hand, and Network.forward on the same images
(the pass `darkbp eval` runs), which predict must reproduce exactly.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import darkbp
from darkbp import errors
from darkbp.cli import main
from darkbp.evaluate import predict as evaluate_predict
from darkbp.network import parse_network
from darkbp.train import Trainer, TrainOptions
from darkbp.weights import load_weights, read_header
from tests.conftest import CFG_DIR, ROOT
from tests.golden import Golden, relative

MNIST_CFG = str(CFG_DIR / "mnist.cfg")
SAMPLE = str(ROOT / "data" / "mnist-sample")
# LeNet's parameters, counted by hand: conv 20*1*5*5+20, conv 50*20*5*5+50,
# connected 800*500+500, connected 500*10+10.
LENET_FLOATS = 520 + 25_050 + 400_500 + 5_010
WEIGHTS_HEADER = 20           # int32 major, minor, revision, uint64 seen
FORWARD_TOL = 1e-6            # tests/test_golden.py's: float32 rounding of Darknet's sums


def images(n: int, seed: int = 0) -> np.ndarray:
    """(n, 1, 28, 28) float32 in [0, 1)."""
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def lenet():
    return darkbp.load(MNIST_CFG)


# --- the README's example -------------------------------------------------------------------

def readme_example() -> str:
    """The one ```python block of the README's "## Python API" section."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Python API\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Python API' section followed by another section"
    blocks = re.findall(r"^```python\n(.*?)^```$", section[1], re.S | re.M)
    assert len(blocks) == 1, blocks
    return blocks[0]


def test_readme_example_runs_as_written(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(ROOT)                                # its paths are the repository's
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # its temporary folder: ours
    before = sorted(path.name for path in ROOT.iterdir())
    namespace = {"__name__": "__main__"}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"{LENET_FLOATS:,} parameters"
    assert re.fullmatch(r"\[\d( \d){7}\]", printed[1]), printed
    assert printed[1] == str(namespace["p"].argmax(axis=1))
    assert len(printed) == 2
    [written] = tmp_path.glob("*/*.weights")
    assert written.stat().st_size == WEIGHTS_HEADER + 4 * LENET_FLOATS
    assert sorted(path.name for path in ROOT.iterdir()) == before     # wrote nothing here


# --- the public names -----------------------------------------------------------------------

def test_public_names():
    assert sorted(darkbp.__all__) == ["DarkbpError", "Net", "__version__", "load"]
    namespace = {}
    exec("from darkbp import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(darkbp.__all__)
    assert darkbp.DarkbpError is errors.DarkbpError
    assert isinstance(darkbp.load(MNIST_CFG), darkbp.Net)
    with pytest.raises(AttributeError, match="no attribute 'predict'"):
        darkbp.predict


def test_import_darkbp_imports_no_numpy_rich_or_click():
    heavy = ("numpy", "rich", "click")
    code = ("import sys, darkbp; print(sorted({m.split('.')[0] for m in sys.modules} & "
            f"{set(heavy)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert out == "[]\n"


# --- predict ----------------------------------------------------------------------------------

def test_predict_equals_network_forward_exactly():
    x = images(10)
    p = darkbp.load(MNIST_CFG).predict(x)
    # Darknet's initialisation with seed 0, as `darkbp train` starts, run as `darkbp eval` does.
    reference = parse_network(MNIST_CFG).initialize(0, np.float32).forward(x)
    assert p.dtype == np.float32 and p.shape == (10, 10)
    np.testing.assert_array_equal(p, reference)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)       # softmax probabilities


def test_seed_chooses_the_initialisation():
    x = images(4)
    p = darkbp.load(MNIST_CFG, seed=3).predict(x)
    np.testing.assert_array_equal(p, parse_network(MNIST_CFG).initialize(3, np.float32).forward(x))
    assert not np.array_equal(p, darkbp.load(MNIST_CFG).predict(x))


def test_chunks_are_the_forward_passes_of_their_images(lenet):
    x = images(10)
    network = lenet.network
    p = lenet.predict(x, batch=3)
    # Exactly the passes over images 0-2, 3-5, 6-8 and 9, in order.
    np.testing.assert_array_equal(p, np.concatenate([network.forward(x[s:s + 3])
                                                     for s in range(0, 10, 3)]))
    # One pass over the ten: the same up to float32 rounding (OpenBLAS orders a connected
    # layer's sums by the matrix size; the convolutions here agree bit for bit).
    np.testing.assert_allclose(p, lenet.predict(x), rtol=0, atol=FORWARD_TOL)
    np.testing.assert_array_equal(lenet.predict(x, batch=1),
                                  np.concatenate([network.forward(x[i:i + 1]) for i in range(10)]))
    np.testing.assert_array_equal(lenet.predict(x, batch=10), lenet.predict(x, batch=1000))


def test_flat_input(lenet, write_cfg):
    x = images(10)
    np.testing.assert_array_equal(lenet.predict(x.reshape(10, 784)), lenet.predict(x))
    flat = darkbp.load(write_cfg("[net]\ninputs=6\n[connected]\noutput=3\n[softmax]\n"))
    v = np.random.default_rng(1).random((5, 6))
    np.testing.assert_array_equal(flat.predict(v), flat.predict(v.reshape(5, 6, 1, 1)))
    np.testing.assert_array_equal(flat.predict(v), flat.network.forward(v.astype(np.float32)))


def test_uint8_pixels_are_divided_by_255(lenet):
    pixels = np.random.default_rng(2).integers(0, 256, (6, 1, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(lenet.predict(pixels),
                                  lenet.predict(pixels.astype(np.float32) / 255))


def test_zero_images(lenet):
    p = lenet.predict(np.zeros((0, 1, 28, 28), np.float32))
    assert p.shape == (0, 10) and p.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_x_is_never_written(lenet, dtype):
    x = (images(7) * 255).astype(dtype)
    copy = x.copy()
    x.setflags(write=False)                 # any write into x would raise
    lenet.predict(x, batch=3)
    lenet.predict(x[::2])                       # views, not C-contiguous: also read-only
    lenet.predict(x.transpose(0, 1, 3, 2))
    np.testing.assert_array_equal(x, copy)


def test_output_is_a_new_array_even_where_the_network_passes_x_through(write_cfg):
    passthrough = darkbp.load(write_cfg("[net]\ninputs=4\n[cost]\n"))   # [cost] outputs x
    x = np.random.default_rng(3).random((3, 4)).astype(np.float32)
    p = passthrough.predict(x)
    np.testing.assert_array_equal(p, x)
    p[...] = 7
    assert not (x == 7).any()


def test_evaluation_mode_uses_rolling_statistics_not_the_batch(tmp_path):
    # Darknet's batch-norm cfg with its own rolling statistics (bn_eval.weights): predict is
    # Darknet's inference, up to darkbp's variance epsilon (sqrt(var + 1e-5) for Darknet's
    # sqrt(var) + 1e-6: 6.2e-5 relative, tests/test_ops_batchnorm.py); the training
    # forward normalises by the batch instead and is far off.
    fixture = Golden("bn_leaky")
    net = darkbp.load(fixture.cfg, fixture.folder / "bn_eval.weights")
    theirs = fixture.f32("forward_bn_eval.f32")
    assert relative(net.predict(fixture.input), theirs) < 1e-4
    from darkbp.passes import Pass
    assert relative(net.network.forward(fixture.input, Pass.training()), theirs) > 1e-2


# --- against Darknet's own numbers ------------------------------------------------------------

# tests/test_golden.py's fixtures where darkbp computes what Darknet does (dropout and crop
# included: their inference is the identity and the centre window).
EXACT = ["lenet", "grouped", "activations", "avgpool", "route", "local", "dropout", "crop"]


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("weights, forward, seen", [("init.weights", "forward.f32", 0),
                                                    ("step5.weights", "forward_step5.f32", 40)])
def test_predict_and_save_weights_reproduce_darknets(tmp_path, name, weights, forward, seen):
    fixture = Golden(name)
    net = darkbp.load(fixture.cfg, fixture.folder / weights)
    p = net.predict(fixture.input)
    assert p.shape == (8, net.network.outputs)
    assert relative(p, fixture.f32(forward)) < FORWARD_TOL
    net.save_weights(tmp_path / "copy.weights")
    assert read_header(tmp_path / "copy.weights").seen == seen
    assert (tmp_path / "copy.weights").read_bytes() == (fixture.folder / weights).read_bytes()


# --- trained weights: the same predictions as `darkbp eval` -----------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample):
    """LeNet after 3 SGD steps on the shipped sample: (cfg, its _final.weights)."""
    out = tmp_path_factory.mktemp("trained")
    Trainer(parse_network(MNIST_CFG), sample, TrainOptions(out=out, max_batches=3)).run()
    return MNIST_CFG, out / "mnist_final.weights"


def test_trained_weights_predict_what_darkbp_eval_reports(trained, sample):
    cfg, weights = trained
    net = darkbp.load(cfg, weights)
    test_images = sample.test_images[:, None]               # (1000, 1, 28, 28) uint8

    # `darkbp eval`'s library path: the network with the file's weights, 500 images a pass.
    network = parse_network(cfg).initialize(0, np.float32)
    load_weights(weights, network.layers)
    classes = evaluate_predict(network, sample.test_images)
    p = net.predict(test_images, batch=500)
    np.testing.assert_array_equal(p.argmax(axis=1), classes)
    np.testing.assert_array_equal(p[:500], network.forward(test_images[:500].astype(np.float32) / 255))
    # The same classes with predict's own chunks of 256 (a class flips only at a near-tie
    # within float32 rounding, see test_chunks_are_the_forward_passes_of_their_images).
    np.testing.assert_array_equal(net.predict(test_images).argmax(axis=1), classes)

    result = CliRunner().invoke(main, ["eval", cfg, str(weights), "--data", SAMPLE,
                                       "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert f"with {weights} (trained on 192 images)" in result.stdout      # 3 batches of 64
    correct = int(np.sum(classes == sample.test_labels))
    assert f"({correct:,} of 1,000 images)" in result.stdout

    # The file's weights are what predict used: untrained LeNet gives other outputs.
    assert not np.allclose(p, darkbp.load(cfg).predict(test_images, batch=500), atol=1e-3)


def test_save_weights_keeps_seen_and_round_trips_byte_for_byte(trained, tmp_path):
    cfg, weights = trained
    net = darkbp.load(cfg, weights)
    net.save_weights(tmp_path / "copy.weights")
    assert read_header(tmp_path / "copy.weights").seen == 192
    assert (tmp_path / "copy.weights").read_bytes() == weights.read_bytes()
    again = darkbp.load(cfg, tmp_path / "copy.weights")
    x = images(5)
    np.testing.assert_array_equal(again.predict(x), net.predict(x))


def test_untrained_round_trip(tmp_path):
    darkbp.load(MNIST_CFG, seed=1).save_weights(tmp_path / "a.weights")
    darkbp.load(MNIST_CFG, tmp_path / "a.weights", seed=5).save_weights(tmp_path / "b.weights")
    a, b = (tmp_path / "a.weights").read_bytes(), (tmp_path / "b.weights").read_bytes()
    assert a == b and len(a) == WEIGHTS_HEADER + 4 * LENET_FLOATS
    assert read_header(tmp_path / "a.weights").seen == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.weights", "b.weights"]  # no temp


def test_save_weights_into_a_missing_folder_is_a_darkbp_error(lenet, tmp_path):
    with pytest.raises(darkbp.DarkbpError, match="cannot write"):
        lenet.save_weights(tmp_path / "missing" / "x.weights")
    assert list(tmp_path.iterdir()) == []


# --- summary, table, warnings -----------------------------------------------------------------

def test_summary_and_darknet_table_are_the_clis(lenet):
    import json
    for args, batch in (([], None), (["--batch", "256"], 256)):
        result = CliRunner().invoke(main, ["summary", MNIST_CFG, "--format", "json", *args])
        assert result.exit_code == 0
        assert lenet.summary(batch) == json.loads(result.stdout)
    assert lenet.summary()["totals"]["params"] == LENET_FLOATS
    # Darknet's table of the same LeNet (../shared/darknet-golden/lenet/summary.txt).
    assert lenet.darknet_table() == (Golden("lenet").folder / "summary.txt").read_text()
    with pytest.raises(ValueError, match="batch must be at least 1"):
        lenet.summary(0)


def test_warnings_are_kept_not_printed(write_cfg, capfd):
    path = write_cfg("[net]\ninputs=4\nclip=.1\n[connected]\noutput=2\noutptu=3\n[softmax]\n")
    net = darkbp.load(path)
    assert capfd.readouterr() == ("", "")
    cli = CliRunner().invoke(main, ["summary", str(path), "--format", "darknet"])
    assert [f"darkbp: {warning}" for warning in net.warnings] == cli.stderr.splitlines()
    assert [(w.file, w.line) for w in net.warnings] == [(str(path), 3), (str(path), 6)]
    assert "did you mean 'output'?" in net.warnings[1].message


def test_repr(lenet):
    assert repr(lenet) == f"<darkbp.Net {MNIST_CFG}: 7 layers, 28 x 28 x 1 -> 10>"


# --- bad input --------------------------------------------------------------------------------

def test_bad_cfg_is_the_clis_error(write_cfg):
    path = write_cfg("[net]\ninputs=4\n\n[connected]\noutput=2\n[convolutionl]\n")
    with pytest.raises(darkbp.DarkbpError) as caught:
        darkbp.load(path)
    assert (caught.value.file, caught.value.line) == (str(path), 6)
    assert "did you mean [convolutional]?" in caught.value.message
    result = CliRunner().invoke(main, ["summary", str(path)])
    assert result.exit_code == 2 and result.stderr == f"darkbp: error: {caught.value}\n"


def test_missing_cfg_is_the_clis_error(tmp_path):
    path = tmp_path / "nothing.cfg"
    with pytest.raises(darkbp.DarkbpError) as caught:
        darkbp.load(path)
    assert caught.value.file == str(path)
    result = CliRunner().invoke(main, ["summary", str(path)])
    assert result.exit_code == 2 and result.stderr == f"darkbp: error: {caught.value}\n"


def test_wrong_size_weights_is_the_clis_error(tmp_path):
    darkbp.load(MNIST_CFG).save_weights(tmp_path / "lenet.weights")
    short = tmp_path / "short.weights"
    short.write_bytes((tmp_path / "lenet.weights").read_bytes()[:-8])
    with pytest.raises(darkbp.DarkbpError) as caught:
        darkbp.load(MNIST_CFG, short)
    assert caught.value.file == str(short)
    assert caught.value.message == (f"expected {LENET_FLOATS} floats after the header, "
                                    f"found {LENET_FLOATS - 2}")
    result = CliRunner().invoke(main, ["eval", MNIST_CFG, str(short), "--data", SAMPLE,
                                       "--threads", "1"])
    assert result.exit_code == 2 and result.stderr.endswith(f"darkbp: error: {caught.value}\n")


@pytest.mark.parametrize("content, words", [(None, "cannot read weights: No such file"),
                                            (b"\0" * 7, "too short for a .weights header")])
def test_unreadable_weights(tmp_path, content, words):
    path = tmp_path / "bad.weights"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(darkbp.DarkbpError, match=words) as caught:
        darkbp.load(MNIST_CFG, path)
    assert caught.value.file == str(path)


def test_table_only_cfg_loads_and_tabulates_but_predict_refuses(tmp_path):
    cfg = ROOT / "tests" / "layer_cfgs" / "rnn.cfg"
    net = darkbp.load(cfg)
    assert [row["type"] for row in net.summary()["layers"]].count("rnn") == 2
    assert net.darknet_table() == CliRunner().invoke(
        main, ["summary", str(cfg), "--format", "darknet"]).stdout
    net.save_weights(tmp_path / "rnn.weights")
    with pytest.raises(darkbp.DarkbpError) as caught:
        net.predict(np.zeros((1, 5), np.float32))
    assert "can only be tabulated" in caught.value.message
    assert (caught.value.file, caught.value.line) == (str(cfg), net.network.layers[0].line)
    result = CliRunner().invoke(main, ["eval", str(cfg), str(tmp_path / "rnn.weights"),
                                       "--data", SAMPLE])
    assert result.exit_code == 2
    assert result.stderr.endswith(f"\ndarkbp: error: {caught.value}\n")     # after a warning


def test_detector_predicts_its_last_output_but_eval_and_classify_point_to_detect(tmp_path):
    cfg = ROOT / "tests" / "layer_cfgs" / "yolo.cfg"
    net = darkbp.load(cfg)
    assert [row["type"] for row in net.summary()["layers"]].count("yolo") == 2
    x = np.random.default_rng(0).random((2, 3, 8, 8), np.float32)
    # The last [yolo]'s output: 8 x 8 cells x 14 channels, each x, y, objectness and class
    # a logistic (in (0, 1)), each w, h raw.
    out = net.predict(x).reshape(2, 2, 7, 8, 8)
    logistic = np.concatenate([out[:, :, 0:2], out[:, :, 4:]], axis=2)
    assert ((logistic > 0) & (logistic < 1)).all() and (out[:, :, 2:4] < 0).any()
    net.save_weights(tmp_path / "yolo.weights")            # its convolutions
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    with pytest.raises(darkbp.DarkbpError) as caught:
        net.classify(image)
    assert "use darkbp detect" in caught.value.message
    assert (caught.value.file, caught.value.line) == (str(cfg), net.network.layers[2].line)
    result = CliRunner().invoke(main, ["eval", str(cfg), str(tmp_path / "yolo.weights"),
                                       "--data", SAMPLE])
    assert result.exit_code == 2 and result.stderr == (
        f"darkbp: error: {caught.value}".replace("predict", "eval") + "\n")


@pytest.mark.parametrize("shape", [(5, 28, 28), (5, 3, 28, 28), (5, 1, 28, 27), (5, 783),
                                   (784,), ()])
def test_wrong_shape_is_a_value_error_naming_the_shape_expected(lenet, shape):
    with pytest.raises(ValueError) as caught:
        lenet.predict(np.zeros(shape, np.float32))
    assert str(caught.value) == (f"x must have the shape (N, 1, 28, 28) or (N, 784) for "
                                 f"{MNIST_CFG}, got {shape}")


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint16, bool, np.complex64])
def test_other_dtypes_are_a_type_error(lenet, dtype):
    with pytest.raises(TypeError, match="floats in \\[0, 1\\] or uint8 pixels 0..255"):
        lenet.predict(np.zeros((2, 1, 28, 28), dtype))


def test_batch_below_one(lenet):
    with pytest.raises(ValueError, match="batch must be at least 1, got 0"):
        lenet.predict(images(2), batch=0)


def test_net_needs_an_initialised_network():
    with pytest.raises(ValueError, match="no parameters"):
        darkbp.Net(parse_network(MNIST_CFG))
