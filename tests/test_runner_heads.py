"""A detector's evaluation forward split across a Runner's workers (`Runner.head_outputs`)
gives each head's output of the unsplit pass (darkbp.detector.head_outputs), and `darkbp
detect`, `darkbp map` and a detector's training at --threads 2 run their passes through it."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from darkbp.cli import main
from darkbp.detector import head_outputs
from darkbp.network import parse_network
from darkbp.parallel import PROCESSES_AVAILABLE, Runner
from darkbp.weights import save_weights
from tests.conftest import CFG_DIR, ROOT, make_mnist_det

CFG = ROOT / "tests" / "detector_cfgs" / "yolov3-tiny-160x96.cfg"    # two [yolo], batch norm
needs_processes = pytest.mark.skipif(not PROCESSES_AVAILABLE,
                                     reason="worker processes need memfd_create (Linux)")


def detector(cfg: Path, seed: int = 0):
    """The cfg's network, randomly initialised, with rolling statistics other than 0 and 1
    (where darkbp's and pjreddie's batch norm inference give the same)."""
    network = parse_network(cfg).initialize(seed, np.float32)
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if layer.state_names:
            layer.rolling_mean[...] = rng.normal(0, 0.1, layer.rolling_mean.shape)
            layer.rolling_variance[...] = rng.uniform(0.5, 1.5, layer.rolling_variance.shape)
    return network


def images(network, n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n,) + network.input_shape, np.float32)


def asked(worker, monkeypatch) -> list[int]:
    """The batch sizes `worker` is asked for heads' outputs (recorded as they come)."""
    sizes = []
    own = worker.head_outputs

    def recorded(x, pjreddie_batchnorm):
        sizes.append(len(x))
        return own(x, pjreddie_batchnorm)
    monkeypatch.setattr(worker, "head_outputs", recorded)
    return sizes


def assert_same_outputs(ours, theirs) -> None:
    assert len(ours) == len(theirs) == 2
    for y, expected in zip(ours, theirs):
        assert y.shape == expected.shape and y.dtype == np.float32
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


@needs_processes
@pytest.mark.parametrize("pjreddie_batchnorm", [False, True])
def test_split_heads_equal_the_unsplit_pass(pjreddie_batchnorm, monkeypatch):
    network = detector(CFG)
    x = images(network, 6)
    expected = head_outputs(network, x, pjreddie_batchnorm)
    with Runner(network, 2) as runner:
        assert runner.split
        sizes = asked(runner.workers[0], monkeypatch)
        ours = runner.head_outputs(x, pjreddie_batchnorm)
    assert sizes == [3]
    assert_same_outputs(ours, expected)
    # The two batch norms differ here, so the mode reached the worker's shard too.
    other = head_outputs(network, x, not pjreddie_batchnorm)
    assert not np.allclose(other[0][3:], expected[0][3:], rtol=1e-3)


def test_thread_workers_split_a_detector_without_batch_norm(tmp_path, monkeypatch):
    cfg = tmp_path / "no-bn.cfg"
    cfg.write_text(CFG.read_text().replace("batch_normalize=1", "batch_normalize=0"))
    network = detector(cfg)
    x = images(network, 7)
    with Runner(network, 2, processes=False) as runner:
        assert runner.split
        sizes = asked(runner.workers[0], monkeypatch)
        ours = runner.head_outputs(x)
    assert sizes == [3]                                       # 4 here, 3 there
    assert_same_outputs(ours, head_outputs(network, x))


@needs_processes
@pytest.mark.parametrize("n", [1, 3])
def test_fewer_than_two_images_per_thread_run_in_the_caller(n, monkeypatch):
    network = detector(CFG)
    x = images(network, n)
    with Runner(network, 2) as runner:
        sizes = asked(runner.workers[0], monkeypatch)
        ours = runner.head_outputs(x, True)
    assert sizes == []
    assert_same_outputs(ours, head_outputs(network, x, True))


@needs_processes
def test_a_worker_takes_the_callers_input_size(monkeypatch):
    # Multi-scale training resizes the caller's network; a worker's copy follows the input.
    network = detector(CFG)
    with Runner(network, 2) as runner:
        sizes = asked(runner.workers[0], monkeypatch)
        for width, height in [(128, 128), (160, 96)]:
            network.resize(width, height)
            x = images(network, 4)
            assert_same_outputs(runner.head_outputs(x), head_outputs(network, x))
    assert sizes == [2, 2]


# ---------------------------------------------------------------- the commands

@pytest.fixture
def photos(tmp_path) -> list[str]:
    """Five noise photos of different sizes, each with a label file of one box."""
    rng = np.random.default_rng(2)
    paths = []
    for k in range(5):
        path = tmp_path / f"p{k}.png"
        Image.fromarray(rng.integers(0, 256, (60 + 10 * k, 90, 3), np.uint8)).save(path)
        path.with_suffix(".txt").write_text(f"{k % 4} 0.5 0.5 0.3 0.4\n")
        paths.append(str(path))
    return paths


@pytest.fixture
def weights(tmp_path) -> str:
    path = str(tmp_path / "tiny.weights")
    save_weights(path, detector(CFG).layers, 0)
    return path


def spy_runner(monkeypatch, check=False) -> list[int]:
    """The batch sizes Runner.head_outputs is asked for; `check`: each answer compared with
    the unsplit pass of the runner's network, and the runner must have trained."""
    sizes = []
    own = Runner.head_outputs

    def recorded(self, x, pjreddie_batchnorm=False):
        sizes.append(len(x))
        assert self.head_numbers or not check          # a training pass's numbers
        ours = own(self, x, pjreddie_batchnorm)
        if check:
            assert_same_outputs(ours, head_outputs(self.network, x, pjreddie_batchnorm))
        return ours
    monkeypatch.setattr(Runner, "head_outputs", recorded)
    return sizes


def run(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


@needs_processes
@pytest.mark.parametrize("batchnorm", ["darkbp", "pjreddie"])
def test_detect_at_2_threads_finds_what_1_thread_finds(tmp_path, photos, weights, batchnorm,
                                                      monkeypatch):
    def detect(threads):
        out = tmp_path / f"out{threads}"
        out.mkdir()
        return json.loads(run("detect", CFG, weights, *photos, "--format", "json", "--thresh",
                              "0.005", "--batchnorm", batchnorm, "--out", out,
                              "--threads", threads))
    sizes = spy_runner(monkeypatch)
    one = detect(1)
    assert sizes == []
    two = detect(2)
    assert sizes == [5]
    assert sum(len(image["detections"]) for image in one["images"]) > 20
    assert_same_detections(two["images"], one["images"])


def assert_same_detections(ours: list[dict], theirs: list[dict]) -> None:
    """The same images, boxes and classes; the numbers to float32 rounding (a shard's pass
    rounds some sums in another order than the whole batch's)."""
    def numbers(image):
        return np.array([[d["confidence"], d["objectness"], *d["box"]]
                         for d in image["detections"]]).reshape(-1, 6)

    def rest(image):
        return [{key: value for key, value in image.items() if key != "detections"},
                [(d["class"], d["name"], d["pixels"]) for d in image["detections"]]]
    assert [rest(image) for image in ours] == [rest(image) for image in theirs]
    for image, other in zip(ours, theirs):
        np.testing.assert_allclose(numbers(image), numbers(other), rtol=1e-5, atol=1e-7)


@needs_processes
def test_map_at_2_threads_scores_what_1_thread_scores(tmp_path, photos, weights, monkeypatch):
    (tmp_path / "valid.txt").write_text("".join(f"{path}\n" for path in photos))
    (tmp_path / "obj.names").write_text("".join(f"c{k}\n" for k in range(4)))
    (tmp_path / "obj.data").write_text(f"classes=4\nvalid={tmp_path / 'valid.txt'}\n"
                                       f"names={tmp_path / 'obj.names'}\n")
    sizes = spy_runner(monkeypatch)
    one = run("map", CFG, weights, "--data", tmp_path / "obj.data", "--threads", 1)
    two = run("map", CFG, weights, "--data", tmp_path / "obj.data", "--threads", 2)
    assert sizes == [5]
    assert "detections_count = 0" not in one
    assert two == one


@needs_processes
def test_a_detectors_valid_map_runs_on_the_training_workers(tmp_path, monkeypatch):
    make_mnist_det(tmp_path, monkeypatch, 64, 6)
    sizes = spy_runner(monkeypatch, check=True)
    result = CliRunner().invoke(main, ["train", str(CFG_DIR / "yolo-digits.cfg"), "--data",
                                       "mnist-det", "--max-batches", "1", "--out",
                                       str(tmp_path / "out"), "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert "test mAP@0.5" in result.stderr and "EMA weights" in result.stderr
    assert sizes == [6, 6]                            # the raw weights' pass, the EMA's


@needs_processes
def test_a_worker_killed_in_the_valid_pass_is_replaced_and_the_pass_run_again(tmp_path,
                                                                             monkeypatch):
    """A worker that stops during a detector's valid pass (here: SIGKILL as the raw weights'
    pass starts) is replaced and the pass run again, as a training batch is: the run ends
    normally, says so once, and its passes give the heads' outputs of an undisturbed run."""
    make_mnist_det(tmp_path, monkeypatch, 64, 6)
    args = ["train", str(CFG_DIR / "yolo-digits.cfg"), "--data", "mnist-det",
            "--max-batches", "1", "--threads", "2"]
    own = Runner.head_outputs
    passes = {"calm": [], "hit": []}
    killed = []

    def recorded(run, kill):
        def head_outputs(self, x, pjreddie_batchnorm=False):
            if kill and not killed:
                pid = self.pids[-1]
                os.kill(pid, signal.SIGKILL)
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)   # dead before it is asked
                killed.append(pid)
            passes[run].append(own(self, x, pjreddie_batchnorm))
            return passes[run][-1]
        return head_outputs
    results = {}
    for run in passes:
        monkeypatch.setattr(Runner, "head_outputs", recorded(run, kill=run == "hit"))
        results[run] = CliRunner().invoke(main, args + ["--out", str(tmp_path / run)])
        assert results[run].exit_code == 0, results[run].output
    assert len(killed) == 1
    assert results["hit"].stderr.count(
        "a worker process stopped in epoch 1's evaluation (exit code -9, SIGKILL); a new one "
        "took its place and epoch 1's evaluation was run again") == 1
    assert len(passes["calm"]) == len(passes["hit"]) == 2        # raw weights, then EMA
    for calm, hit in zip(passes["calm"], passes["hit"]):
        for y, expected in zip(hit, calm):
            np.testing.assert_array_equal(y, expected)
