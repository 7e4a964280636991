"""The detection heads' training maths against Darknet's own numbers
(../shared/darknet-golden/{yolo,region,detection}, DETECTION.md there), against finite
differences, and against a PyTorch float64 twin of each head's loss.

Darknet computes a head's delta in the training forward from the head's output and the
truth. The tests give the heads Darknet's own training outputs (train_forward_L*.f32), so
that the delta, the cost and the statistics line are the head's alone (darkbp's batch norm
in training differs from Darknet's by its epsilon, README "Where darkbp differs").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from darkbp.cli import main
from darkbp.gradcheck import gradcheck
from darkbp.layers.region import RegionLayer
from darkbp.network import parse_network
from darkbp.ops.detection import Truth
from darkbp.passes import EVAL, Noise, Pass
from darkbp.sgd import SGD
from darkbp.weights import load_weights
from tests.conftest import CFG_DIR, ROOT, make_mnist_det
from tests.golden import GOLDEN, Golden, arrays, relative
from tests.test_ops_batchnorm import DarknetBatchnorm

HEADS = {"yolo": (16, 23), "region": (11,), "detection": (9,)}


def golden_truth(fixture: Golden) -> Truth:
    """boxes.txt (units of 1/256; image x y w h class) as the (4, 90, 5) box list."""
    rows = np.array([[float(v) for v in line.split()]
                     for line in (fixture.folder / "boxes.txt").read_text().splitlines()
                     if line.strip() and not line.startswith("#")])
    boxes = np.zeros((4, 90, 5), np.float32)
    for image in range(4):
        mine = rows[rows[:, 0] == image]
        boxes[image, :len(mine), :4] = mine[:, 1:5] / 256
        boxes[image, :len(mine), 4] = mine[:, 5]
    return Truth(boxes, 64, 64, seen=4)          # step 1: seen = batch


def step1_lines(fixture: Golden) -> list[str]:
    text = (fixture.folder / "stats.txt").read_text().split("=== step 2 ===")[0]
    return [line for line in text.splitlines() if line and not line.startswith("===")]


def head_costs(fixture: Golden) -> dict[int, float]:
    rows = [line.split() for line in (fixture.folder / "head_costs.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    return {int(layer): float(cost) for step, layer, cost in rows if step == "1"}


def test_the_golden_truth_is_darknets_net_truth():
    for name, boxes_per_image in (("yolo", 90), ("region", 30)):
        fixture = Golden(name)
        stored = fixture.f32("truth.f32").reshape(4, boxes_per_image, 5)
        np.testing.assert_array_equal(golden_truth(fixture).boxes[:, :boxes_per_image], stored)
    detection = Golden("detection")
    head = detection.network().layers[9]
    np.testing.assert_array_equal(head.cell_truth(golden_truth(detection)),
                                  detection.f32("truth.f32").reshape(4, 9, -1))


@pytest.mark.parametrize("name", list(HEADS))
def test_delta_cost_and_statistics_equal_darknets_first_step(name):
    fixture = Golden(name)
    network = fixture.network()
    truth = golden_truth(fixture)
    lines = step1_lines(fixture)
    costs = head_costs(fixture)
    for index, line in zip(HEADS[name], lines, strict=True):
        head = network.layers[index]
        output = fixture.f32(f"train_forward_L{index}.f32").reshape(4, *head.out_shape)
        found = head.train_targets(output, truth)
        delta = fixture.f32(f"delta_L{index}.f32")
        np.testing.assert_allclose(found.delta.reshape(4, -1), delta, rtol=0,
                                   atol=1e-6 * np.abs(delta).max())
        assert np.array_equal(found.delta.reshape(4, -1) != 0, delta != 0)
        # Darknet's float32 sum of squares; the text is its printf of float32 means
        np.testing.assert_allclose(float((found.delta.astype(np.float64) ** 2).sum()),
                                   costs[index], rtol=1e-6)
        # float32 sums in Darknet's order: the same text, to the last printed digit
        assert head.stats_line(found.stats) == line


def test_the_ignore_rule_and_the_golden_cases_are_exercised():
    # DETECTION.md: 2 predictions ignored in L23, none in L16; 6 and 5 truths assigned.
    fixture = Golden("yolo")
    network, truth = fixture.network(), golden_truth(fixture)
    for index, ignored, count in ((16, 0, 6), (23, 2, 5)):
        head = network.layers[index]
        found = head.train_targets(
            fixture.f32(f"train_forward_L{index}.f32").reshape(4, *head.out_shape), truth)
        objectness_scale = found.scale.reshape(4, 3, 8, *head.out_shape[1:])[:, :, 4]
        assert int((objectness_scale == 0).sum()) == ignored
        assert found.stats["count"] == count


# --- the loss whose gradient is the delta ---------------------------------------------------
def random_case(name: str, seed: int):
    """A head in float64, a random input and random truths, and the targets made for them."""
    fixture = Golden(name)
    network = fixture.network("bn_eval.weights")
    index = HEADS[name][-1]
    head = network.layers[index]
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (3, *head.in_shape))
    boxes = np.zeros((3, 90, 5))
    for image in range(3):
        k = rng.integers(1, 5)
        boxes[image, :k, :2] = rng.uniform(0.1, 0.9, (k, 2))
        boxes[image, :k, 2:4] = rng.uniform(0.1, 0.6, (k, 2))
        boxes[image, :k, 4] = rng.integers(0, 3, k)
    truth = Truth(boxes.astype(np.float32), 64, 64, seen=4)
    head.forward(x, Pass.training())
    return head, x, truth, head.assign(truth)


@pytest.mark.parametrize("name", list(HEADS))
@pytest.mark.parametrize("seed", range(3))
def test_input_grad_is_the_gradient_of_the_loss(name, seed):
    head, x, truth, found = random_case(name, seed)
    grad = head.input_grad(truth)
    assert np.count_nonzero(grad) > 0
    eps = 1e-6
    rng = np.random.default_rng(seed)
    for flat in rng.choice(x.size, 60, replace=False).tolist() + list(
            np.flatnonzero(found.scale.reshape(x.shape) > 0.5)[:40]):
        e = np.zeros(x.size)
        e[flat] = eps
        e = e.reshape(x.shape)
        numeric = (head.loss(x + e, found).sum() - head.loss(x - e, found).sum()) / (2 * eps)
        assert abs(numeric - grad.reshape(-1)[flat]) <= 1e-6 * max(1, abs(numeric)), flat


@pytest.mark.parametrize("name", list(HEADS))
def test_torch_twin_of_the_loss_gives_the_same_gradient(name):
    torch = pytest.importorskip("torch")
    head, x, truth, found = random_case(name, 7)
    z = torch.tensor(x, requires_grad=True)
    s, t = (torch.tensor(np.asarray(a, np.float64)) for a in (found.scale, found.target))
    if name == "yolo":
        # BCE on x, y, objectness and classes, ½·s·(t − z)² on w and h
        zz = z.reshape(s.shape)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(zz, t, reduction="none")
        terms = s * bce
        terms[:, :, 2:4] = s[:, :, 2:4] * (t[:, :, 2:4] - zz[:, :, 2:4]) ** 2 / 2
    elif name == "region":
        # ½·s·(t − σ)² on x, y, objectness, ½·s·(t − z)² on w, h, s·CE of the class softmax
        zz = z.reshape(s.shape)
        sig = torch.sigmoid(zz)
        terms = s * (t - sig) ** 2 / 2
        terms[:, :, 2:4] = s[:, :, 2:4] * (t[:, :, 2:4] - zz[:, :, 2:4]) ** 2 / 2
        log_p = torch.log_softmax(zz[:, :, 5:], dim=2)
        terms[:, :, 5:] = 0
        terms[:, :, 5] = s[:, :, 5:].amax(dim=2) * -(t[:, :, 5:] * log_p).sum(dim=2)
    else:
        # everything linear: ½·s·(t − y)²
        terms = s * (t - z.reshape(s.shape)) ** 2 / 2
    terms.sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), head.input_grad(truth), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(terms.detach().numpy().reshape(3, -1).sum(axis=1),
                               head.loss(x, found), rtol=1e-9)


def test_inference_forward_keeps_no_training_state():
    fixture = Golden("yolo")
    network = fixture.network("bn_eval.weights")
    network.run(fixture.input, EVAL)
    assert all(head._found is None for head in network.heads)


# --- Darknet's training steps ---------------------------------------------------------------
def replay(name: str, steps: int, monkeypatch, cpu_region: bool = False,
           boxes: np.ndarray | None = None, shuffled: bool = False):
    """darkbp's SGD steps on the fixture's batch from init.weights, with Darknet's batch norm
    (tests/test_ops_batchnorm.py's transcription: darkbp's own differs on purpose, README
    "Where darkbp differs"); the heads' Darknet costs per step and the weights after 1 and 5.
    cpu_region: the [region] passes no gradient, as pjreddie's CPU backward_region_layer.
    boxes: another truth than the fixture's (N, T, 5). shuffled: the images of step s in the
    order `darkbp train --seed 0` takes them, its epoch s's permutation (darkbp.train)."""
    fixture = Golden(name)
    DarknetBatchnorm(fixture.batch).install(monkeypatch)
    if cpu_region:
        monkeypatch.setattr(RegionLayer, "input_grad",
                            lambda self, truth: np.zeros((len(self._x), *self.in_shape),
                                                         self._x.dtype))
    network = fixture.network()
    config = network.config
    sgd = SGD(network.layers, config.momentum, config.decay, config.batch)
    boxes = golden_truth(fixture).boxes if boxes is None else boxes
    costs, weights = [], {}
    for step in range(1, steps + 1):
        order = (np.random.default_rng([0, step]).permutation(config.batch) if shuffled
                 else np.arange(config.batch))
        truth = Truth(boxes[order], 64, 64, seen=config.batch * step)  # train_network_datum's
        network.run(fixture.input[order], Pass.training(Noise(0, step - 1)))
        costs.append(np.mean([head.darknet_cost(truth) for head in network.heads]))
        network.backward(truth)
        sgd.step(config.schedule.learning_rate)
        if step in (1, 5):
            weights[step] = arrays(network)
    return fixture, costs, weights


# Darknet's float32 sums of a bias gradient run over 4 x 64 x 64 values in its order; its
# cost is a float32 sum of up to 2,560 squares.
STEP_TOL = 1e-5
COST_TOL = 5e-6


@pytest.mark.parametrize("name", ["yolo", "detection"])
def test_one_and_five_steps_equal_darknets(name, monkeypatch):
    fixture, costs, weights = replay(name, 5, monkeypatch)
    np.testing.assert_allclose(costs, [cost for cost, _ in fixture.losses], rtol=COST_TOL)
    for step in (1, 5):
        theirs = fixture.weights_after(step)
        assert theirs.keys() == weights[step].keys()
        for key, value in theirs.items():
            assert relative(weights[step][key], value) < STEP_TOL, (step, key)


def test_darknets_cpu_region_head_trains_nothing_and_darkbps_does(monkeypatch):
    fixture, costs, weights = replay("region", 5, monkeypatch, cpu_region=True)
    np.testing.assert_allclose(costs, [cost for cost, _ in fixture.losses], rtol=COST_TOL)
    for step in (1, 5):
        for key, value in fixture.weights_after(step).items():
            assert relative(weights[step][key], value) < STEP_TOL, (step, key)
    monkeypatch.undo()
    _, costs, _ = replay("region", 5, monkeypatch)     # the GPU backward's gradient
    assert costs[-1] < 0.7 * costs[0]                  # 230.7 -> 131.5


# --- gradcheck ------------------------------------------------------------------------------
DETECTION_CFGS = sorted(GOLDEN.glob("cfg_det/*.cfg")) + sorted(
    (Path(__file__).parent / "layer_cfgs").glob("*.cfg"))


def _runnable_detector(path) -> bool:
    network = parse_network(path)        # contrastive.cfg has a [yolo] and a table-only layer
    return bool(network.heads) and all(layer.runnable for layer in network.layers)


@pytest.mark.parametrize("path", [p for p in DETECTION_CFGS if _runnable_detector(p)],
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_gradcheck_passes_on_every_detection_cfg(path):
    # Random truth boxes, their assignment held fixed (Truth.fixed): darkbp's loss.
    report = gradcheck(parse_network(path), batch=2, seed=0, max_elements=16)
    assert report.passed, [(r.layer, r.tensor, r.max_rel) for r in report.rows if not r.passed]
    # the loss is ~100: the rounding floor grows with it (darkbp/gradcheck.py)
    assert report.floor == pytest.approx(1e-8 * max(1, report.loss / 10))


def test_cli_gradcheck_of_a_detector(tmp_path):
    result = CliRunner().invoke(main, ["gradcheck", str(GOLDEN / "cfg_det" / "yolo.cfg"),
                                       "--max-elements", "8"])
    assert result.exit_code == 0, result.output
    assert "all gradients pass" in result.stdout


# --- the same steps through `darkbp train` ----------------------------------------------------
def write_fixture_data(fixture: Golden, folder: Path) -> tuple[Path, Path]:
    """The fixture's batch as a Darknet data set: its 4 inputs as PNG files (every value is
    k/255), its boxes as label files (k/256, written exactly), train and valid lists of the
    4, and its cfg with flip=0 (pjreddie always flips; with jitter=0 and the default colours
    nothing else changes the images or boxes). Returns (cfg, .data file)."""
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    truth = golden_truth(fixture)
    paths = []
    for image, (pixels, boxes) in enumerate(zip(fixture.input, truth.boxes)):
        path = folder / "images" / f"{image}.png"
        Image.fromarray(np.round(pixels.transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)
        lines = [f"{int(b[4])} {b[0]:.8f} {b[1]:.8f} {b[2]:.8f} {b[3]:.8f}"
                 for b in boxes[truth.valid[image]]]
        (folder / "labels" / f"{image}.txt").write_text("\n".join(lines) + "\n")
        paths.append(str(path))
    (folder / "list.txt").write_text("\n".join(paths) + "\n")
    (folder / "abc.names").write_text("a\nb\nc\n")
    data = folder / "fixture.data"
    data.write_text(f"classes=3\ntrain={folder / 'list.txt'}\nvalid={folder / 'list.txt'}\n"
                    f"names={folder / 'abc.names'}\n")
    cfg = folder / fixture.cfg.name
    cfg.write_text(fixture.cfg.read_text().replace("[net]\n", "[net]\nflip=0\n", 1))
    return cfg, data


def clipped(truth: Truth) -> np.ndarray:
    """The boxes as Darknet's data path (correct_boxes) leaves them at jitter 0 and no flip:
    edges clipped to [0, 1], centre and size made again from them, in float32."""
    boxes = truth.boxes.copy()
    x, y, w, h = (boxes[:, :, k] for k in range(4))
    half = np.float32(2)
    left, right = np.clip(x - w / half, 0, 1), np.clip(x + w / half, 0, 1)
    top, bottom = np.clip(y - h / half, 0, 1), np.clip(y + h / half, 0, 1)
    boxes[:, :, 0], boxes[:, :, 1] = (left + right) / half, (top + bottom) / half
    boxes[:, :, 2], boxes[:, :, 3] = right - left, bottom - top
    return np.where(truth.valid[:, :, None], boxes, 0)


@pytest.mark.parametrize("name", ["yolo", "detection"])
@pytest.mark.parametrize("steps", [1, 5])
def test_darkbp_train_replays_darknets_steps(name, steps, tmp_path, monkeypatch):
    # Through files: PNGs, label files, the detection data path, the Trainer. Darknet's data
    # path clips a box to the image, and one of the fixture's boxes (image 3, the third)
    # reaches above it: the driver put it in net->truth as it is. So the run is compared
    # with the library's replay of the clipped truth (test_one_and_five_steps_equal_darknets
    # compares that replay with Darknet's own steps); the clip moves the weights by ~13 %.
    fixture = Golden(name)
    assert fixture.input.shape == (4, 3, 64, 64)          # images of the network's size
    np.testing.assert_array_equal(np.round(fixture.input * 255) / 255, fixture.input)
    cfg, data = write_fixture_data(fixture, tmp_path)
    DarknetBatchnorm(fixture.batch).install(monkeypatch)
    result = CliRunner().invoke(main, ["train", str(cfg), "--data", str(data), "--weights",
                                       str(fixture.folder / "init.weights"), "--max-batches",
                                       str(steps), "--out", str(tmp_path / "out"),
                                       "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "test mAP@0.5" in result.stderr
    network = parse_network(cfg).initialize(0, np.float32)
    load_weights(tmp_path / "out" / f"{name}_final.weights", network.layers)
    truth = golden_truth(fixture)
    assert not np.array_equal(clipped(truth), truth.boxes)     # the box above the image
    monkeypatch.undo()
    _, costs, weights = replay(name, steps, monkeypatch, boxes=clipped(truth), shuffled=True)
    ours = arrays(network)
    for key, value in weights[steps].items():
        assert relative(ours[key], value) < STEP_TOL, key
    # The metrics log: Darknet's cost per image (what Darknet prints as the batch's loss)
    # and each head's statistics line, per epoch here (one batch each).
    records = [json.loads(line) for line in
               (tmp_path / "out" / f"{name}_metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [r["metric"] for r in epochs] == ["mAP@0.5"] * steps
    np.testing.assert_allclose([r["darknet_cost"] for r in epochs], np.array(costs) / 4,
                               rtol=COST_TOL)
    prefix = {"yolo": ["Region 16 Avg IOU: ", "Region 23 Avg IOU: "],
              "detection": ["Detection Avg IOU: "]}[name]
    assert all([line[:len(p)] for line, p in zip(r["heads"], prefix)] == prefix
               for r in epochs)


@pytest.mark.parametrize("name, heads", [
    ("yolo-digits", ["Region 12 Avg IOU: ", "Region 19 Avg IOU: "]),
    ("yolov2-digits", ["Region Avg IOU: "]),
])
def test_the_digits_detectors_train_on_mnist_det_through_the_cli(name, heads, tmp_path,
                                                                 monkeypatch):
    # The README's detection job, small: mnist-det of 64 + 8 images, two updates.
    make_mnist_det(tmp_path, monkeypatch, 64, 8)
    result = CliRunner().invoke(main, ["train", str(CFG_DIR / f"{name}.cfg"), "--data",
                                       "mnist-det", "--max-batches", "2", "--out",
                                       str(tmp_path / "out"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "on mnist-det (64 images)" in result.stderr
    assert "test mAP@0.5" in result.stderr and "EMA weights" in result.stderr
    records = [json.loads(line) for line in
               (tmp_path / "out" / f"{name}_metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == 2                                   # one batch per epoch
    assert all(0 < r["loss"] < float("inf") for r in epochs)
    epoch = epochs[-1]
    assert epoch["metric"] == "mAP@0.5" and 0 <= epoch["accuracy"] <= 1
    assert [line[:len(p)] for line, p in zip(epoch["heads"], heads)] == heads
    assert len(epoch["heads"]) == len(heads) and epoch["darknet_cost"] > 0
    assert (tmp_path / "out" / f"{name}_final.weights").is_file()


def test_a_resumed_detector_run_ends_with_the_same_weights(tmp_path, monkeypatch):
    # Darknet's detection data with jitter and colour draws from (seed, 4, batch): a run
    # stopped after batch 1 and resumed equals one that never stopped, byte for byte.
    make_mnist_det(tmp_path, monkeypatch, 128, 4)

    def train(out, batches, *more):
        result = CliRunner().invoke(main, ["train", str(CFG_DIR / "yolo-digits.cfg"), "--data",
                                           "mnist-det", "--max-batches", str(batches),
                                           "--out", str(tmp_path / out), "--threads", "1",
                                           *more])
        assert result.exit_code == 0, result.output

    train("whole", 3)
    train("parts", 1)
    train("parts", 3, "--resume")
    whole = (tmp_path / "whole" / "yolo-digits_final.weights").read_bytes()
    assert (tmp_path / "parts" / "yolo-digits_final.weights").read_bytes() == whole


def test_a_detector_stopped_by_sigterm_at_2_threads_resumes_to_the_same_weights(
        tmp_path, monkeypatch):
    # At --threads 2 a detector's batch is split between two processes. A SIGTERM after the
    # checkpoint of batch 1 (the update under way finishes, then a checkpoint, exit 143),
    # then --resume, ends with the weights of a 2-thread run that never stopped.
    make_mnist_det(tmp_path, monkeypatch, 128, 4)
    args = [sys.executable, "-m", "darkbp", "train", str(CFG_DIR / "yolo-digits.cfg"),
            "--data", "mnist-det", "--max-batches", "4"]

    def train(out, threads, *more):
        return subprocess.Popen([*args, "--out", str(tmp_path / out), "--threads",
                                 str(threads), *more], cwd=ROOT, env=os.environ.copy(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(run, code=0):
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == code and "Traceback" not in stderr, stderr
        return stderr

    finish(train("whole", 2))
    state = tmp_path / "parts" / "yolo-digits_last.state.npz"
    run = train("parts", 2, "--checkpoint-every", "0.0001")
    deadline = time.monotonic() + 120
    while not state.is_file():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.002)
    os.kill(run.pid, signal.SIGTERM)
    assert "darkbp: stopped by SIGTERM after batch" in finish(run, 143)
    with np.load(state) as saved:
        assert int(saved["batch_num"]) < 4
    finish(train("parts", 2, "--resume"))
    name = "yolo-digits_final.weights"
    assert (tmp_path / "parts" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_the_progress_shows_each_heads_running_statistics(tmp_path, monkeypatch):
    """BatchReport.heads, which the progress display prints: per head, stats_means of its
    statistics summed over the passes of the last RECENT batches (two passes a batch here:
    subdivisions=2), "count" per batch; made here from the runner's numbers pass by pass."""
    from darkbp.cli.train import _ProgressListener
    from darkbp.detection_train import RECENT
    from darkbp.parallel import Runner
    fixture = Golden("yolo")
    cfg, data = write_fixture_data(fixture, tmp_path)
    cfg.write_text(cfg.read_text().replace("subdivisions=1", "subdivisions=2", 1))
    passes, reports = [], []
    train_step = Runner.train_step

    def recorded_step(self, *args, **kwargs):
        cost = train_step(self, *args, **kwargs)
        passes.append([dict(stats) for _, stats in self.head_numbers])
        return cost
    monkeypatch.setattr(Runner, "train_step", recorded_step)
    shown = _ProgressListener.batch
    monkeypatch.setattr(_ProgressListener, "batch",
                        lambda self, report: (reports.append(report), shown(self, report)))
    steps = RECENT + 3
    result = CliRunner().invoke(main, ["train", str(cfg), "--data", str(data), "--max-batches",
                                       str(steps), "--out", str(tmp_path / "out"),
                                       "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert len(passes) == 2 * steps and len(reports) == steps
    network = parse_network(cfg)
    heads = network.heads
    for b, report in enumerate(reports, start=1):
        batches = range(max(0, b - RECENT), b)
        assert [label for label, _ in report.heads] == [f"[yolo] {h.index}" for h in heads]
        for k, (head, (_, means)) in enumerate(zip(heads, report.heads)):
            sums = {key: sum(passes[2 * i + j][k][key] for i in batches for j in (0, 1))
                    for key in passes[0][k]}
            expected = head.stats_means(sums)
            expected["count"] = sums["count"] / len(batches)
            assert list(means) == list(expected)
            np.testing.assert_array_equal(list(means.values()), list(expected.values()))
    assert "Avg IOU" in result.stderr and f"[yolo] {heads[0].index}" in result.stderr
