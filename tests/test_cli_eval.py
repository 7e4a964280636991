"""`darkbp eval` end to end: the shape of its report on real test sets, and bad input.

An untrained network's accuracy is not something to compare digits with, so
these tests check what is known without our code: the test sets' sizes and
class counts, that the tables agree with each other, and chance-level accuracy.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from darkbp import catalogue, fetch, threads
from darkbp.cli import main
from darkbp.idx import read_idx
from darkbp.network import parse_network
from darkbp.weights import save_weights
from tests.conftest import CFG_DIR, ROOT, data_root

MNIST_CFG = str(CFG_DIR / "mnist.cfg")
SAMPLE = str(ROOT / "data" / "mnist-sample")
# LeNet's parameters, counted by hand: conv 20*1*5*5+20, conv 50*20*5*5+50,
# connected 800*500+500, connected 500*10+10.
LENET_FLOATS = 520 + 25_050 + 400_500 + 5_010
# The MNIST test set's images per digit (LeCun's t10k labels); Fashion-MNIST has 1,000 each.
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

DATA = data_root()     # read once: some tests unset DARKBP_DATA
needs_data = pytest.mark.skipif(DATA is None, reason="DARKBP_DATA is not set")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    """Untrained LeNet weights (Darknet's initialisation, seed 1)."""
    path = tmp_path_factory.mktemp("weights") / "lenet.weights"
    network = parse_network(MNIST_CFG).initialize(1, np.float32)
    save_weights(path, network.layers, seen=0)
    return str(path)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[str, str]:
    """(cfg, weights) of a one-layer linear classifier: cheap to run on 10,000 images."""
    folder = tmp_path_factory.mktemp("small")
    cfg = folder / "linear.cfg"
    cfg.write_text("[net]\nwidth=28\nheight=28\nchannels=1\n"
                   "[connected]\noutput=10\nactivation=linear\n[softmax]\n")
    network = parse_network(cfg).initialize(0, np.float32)
    save_weights(folder / "linear.weights", network.layers, seen=0)
    return str(cfg), str(folder / "linear.weights")


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """Nothing found anywhere but the shipped sample: empty cache, no DARKBP_DATA."""
    monkeypatch.delenv("DARKBP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(catalogue, "SYSTEM_DIRS", {})


def run(*args: str):
    return CliRunner().invoke(main, ["eval", *args])


def parse_report(stdout: str):
    """(accuracy %, correct, count, per-class rows, confusion matrix) from the plain-text report."""
    match = re.search(r"accuracy (\d+\.\d\d)% \(([\d,]+) of ([\d,]+) images\)", stdout)
    assert match, stdout
    accuracy, correct, count = float(match[1]), int(match[2].replace(",", "")), \
        int(match[3].replace(",", ""))
    per_class_text, confusion_text = stdout.split("confusion matrix")
    per_class = [_cells(line) for line in per_class_text.splitlines() if line.startswith("│")]
    confusion = [_cells(line) for line in confusion_text.splitlines() if line.startswith("│")]
    return accuracy, correct, count, per_class, confusion


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("│").split("│")]


def check_report(stdout: str, class_names: list[str], class_counts: list[int]):
    """The report's tables agree with each other and with the known test-set composition."""
    accuracy, correct, count, per_class, confusion = parse_report(stdout)
    total = sum(class_counts)
    assert count == total
    assert [row[0] for row in per_class] == class_names
    assert [row[0] for row in confusion] == class_names
    matrix = np.array([[int(v) for v in row[1:]] for row in confusion])
    assert matrix.shape == (10, 10)
    assert matrix.sum() == total
    assert matrix.sum(axis=1).tolist() == class_counts                 # rows: true class
    images = [int(row[1].replace(",", "")) for row in per_class]
    hits = [int(row[2].replace(",", "")) for row in per_class]
    assert images == class_counts
    assert hits == np.diagonal(matrix).tolist()
    for row, c, n_c in zip(per_class, hits, class_counts):
        assert row[3] == f"{100 * c / n_c:.2f}%"
    assert correct == sum(hits)
    assert accuracy == pytest.approx(100 * correct / total, abs=0.005)
    assert 2 <= accuracy <= 30            # an untrained 10-way classifier is near chance
    return matrix


@needs_data
def test_full_mnist_test_set(monkeypatch, weights):
    monkeypatch.setenv("DARKBP_DATA", str(DATA))
    result = run(MNIST_CFG, weights, "--data", "mnist")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""                    # the full set: no fallback notice
    assert "\x1b[" not in result.stdout
    assert "(trained on 0 images)" in result.stdout
    check_report(result.stdout, [str(d) for d in range(10)], MNIST_TEST_COUNTS)


@needs_data
def test_download_fetches_into_the_cache_then_evaluates(monkeypatch, tmp_path, small, no_data):
    # The "mirror" is the shared copy of MNIST: the same bytes as the official files, so
    # the published md5s are checked for real.
    monkeypatch.setitem(fetch.MIRRORS, "mnist", (f"file://{DATA / 'mnist'}/",))
    result = run(*small, "--data", "mnist", "--download", "--batch", "2000")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""                    # fetched, so no fallback to the sample
    cache = tmp_path / "cache" / "darkbp" / "mnist"
    assert f"({cache})" in result.stdout
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        f"{name}.gz" for name in catalogue.FILES.values())
    check_report(result.stdout, [str(d) for d in range(10)], MNIST_TEST_COUNTS)


@needs_data
def test_data_dir_and_fashion_class_names(small, no_data):
    assert run(*small, "--data", "fashion-mnist").exit_code == 2    # not found without it
    result = run(*small, "--data", "fashion-mnist", "--data-dir", str(DATA))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    names = ["0 T-shirt/top", "1 Trouser", "2 Pullover", "3 Dress", "4 Coat", "5 Sandal",
             "6 Shirt", "7 Sneaker", "8 Bag", "9 Ankle boot"]
    check_report(result.stdout, names, [1000] * 10)


def test_falls_back_to_the_shipped_sample_and_says_so(weights, no_data):
    result = run(MNIST_CFG, weights, "--data", "mnist")
    assert result.exit_code == 0, result.output
    notice = re.fullmatch(r"darkbp: full MNIST not found .*sample.*\(([\d,]+) test images\).*\n",
                          result.stderr)
    assert notice, result.stderr
    assert "shipped sample" in result.stdout
    _, _, count, per_class, _ = parse_report(result.stdout)
    assert count == int(notice[1].replace(",", "")) > 0
    assert len(per_class) == 10


def test_a_folder_path_as_data(weights):
    result = run(MNIST_CFG, weights, "--data", SAMPLE)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert f"{SAMPLE} test split: accuracy" in result.stdout
    _, _, count, per_class, _ = parse_report(result.stdout)
    assert count == len(read_idx(ROOT / "data" / "mnist-sample" / "t10k-labels-idx1-ubyte.gz"))
    assert len(per_class) == 10


def test_threads_option_sets_blas_threads(weights):
    before = threads.get_threads()
    try:
        threads.set_threads(2)
        result = run(MNIST_CFG, weights, "--data", SAMPLE, "--threads", "1")
        assert result.exit_code == 0, result.output
        assert threads.get_threads() == 1
    finally:
        threads.set_threads(before)


def test_help_has_an_example():
    result = CliRunner().invoke(main, ["eval", "--help"])
    assert result.exit_code == 0
    assert "darkbp eval cfg/mnist.cfg" in result.output
    for option in ("--data", "--data-dir", "--download", "--batch", "--threads"):
        assert option in result.output


def assert_usage_error(result, *fragments: str):
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)      # handled: no traceback
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output


def test_missing_weights_file(tmp_path):
    missing = str(tmp_path / "nope.weights")
    assert_usage_error(run(MNIST_CFG, missing, "--data", SAMPLE), "nope.weights",
                       "does not exist")


def test_truncated_weights(tmp_path, weights):
    short = tmp_path / "short.weights"
    short.write_bytes(open(weights, "rb").read()[:100])    # 20-byte header, then 20 floats
    assert_usage_error(run(MNIST_CFG, str(short), "--data", SAMPLE),
                       str(short), f"expected {LENET_FLOATS} floats", "found 20")


def test_weights_of_another_network(tmp_path, write_cfg):
    # LeNet with 400 hidden units: 520 + 25,050 + (800*400+400) + (400*10+10) floats.
    smaller = (CFG_DIR / "mnist.cfg").read_text().replace("output=500", "output=400")
    network = parse_network(write_cfg(smaller, "lenet400.cfg")).initialize(0, np.float32)
    path = tmp_path / "lenet400.weights"
    save_weights(path, network.layers, seen=0)
    assert_usage_error(run(MNIST_CFG, str(path), "--data", SAMPLE),
                       f"expected {LENET_FLOATS} floats", f"found {520 + 25_050 + 320_400 + 4_010}")


def test_input_that_is_not_28x28x1(write_cfg, weights):
    cfg = write_cfg("""
        [net]
        width=32
        height=32
        channels=3
        [convolutional]
        filters=4
        size=3
        [connected]
        output=10
        [softmax]
    """)
    assert_usage_error(run(str(cfg), weights, "--data", SAMPLE),
                       str(cfg), "32 x 32 x 3", "28 x 28 x 1")


def test_last_layer_without_ten_outputs(write_cfg, weights):
    cfg = write_cfg("[net]\ninputs=784\n[connected]\noutput=9\n[softmax]\n")
    assert_usage_error(run(str(cfg), weights, "--data", SAMPLE), str(cfg), "9 outputs",
                       "10 classes")


def test_unknown_dataset(weights):
    assert_usage_error(run(MNIST_CFG, weights, "--data", "cifar"), "cifar")
