"""Network.resize (Darknet's resize_network) and `random=1` multi-scale detector training.

A resized network must compute exactly what the same cfg written at that size computes with
the same parameters, keep its parameter arrays (SGD and EMA hold them), and refuse sizes its
cfg can not take without changing. Multi-scale training must feed each batch at its period's
size, end at the cfg's size, and resume bit for bit across a period boundary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from darkbp.cli import main
from darkbp.detection_train import DetectionTrainer, MultiScale, open_detection_data
from darkbp.errors import DarkbpError
from darkbp.network import parse_network
from darkbp.parallel import Runner
from darkbp.ops.detection import Truth
from darkbp.passes import Noise, Pass
from darkbp.train import TrainListener, TrainOptions
from tests.conftest import CFG_DIR, ROOT, cfg_with, make_mnist_det
from tests.golden import GOLDEN

DETECTORS = [GOLDEN / "cfg_det" / "yolo.cfg", GOLDEN / "cfg_det" / "region.cfg",
             CFG_DIR / "yolo-digits.cfg", ROOT / "tests" / "detector_cfgs" /
             "yolov3-tiny-160x96.cfg"]


def copy_params(source, target) -> None:
    for a, b in zip(source.layers, target.layers):
        for name in (*a.param_names, *a.state_names):
            np.copyto(getattr(b, name), getattr(a, name))


def train_pass(network, x, truth):
    network.zero_grads()
    network.run(x, Pass(train=True, noise=Noise(0, 0, 0)))
    network.backward(truth)
    return [np.array(g) for layer in network.layers for _, _, g in layer.parameters()]


@pytest.mark.parametrize("path", DETECTORS, ids=lambda p: p.stem)
def test_a_resized_network_computes_what_its_cfg_at_that_size_computes(path, tmp_path):
    network = parse_network(path).initialize(seed=1)
    _, height, width = network.input_shape
    arrays = [getattr(layer, name) for layer in network.layers
              for name in (*layer.param_names, *layer.state_names)]
    rng = np.random.default_rng(0)
    for w, h in [(width + 64, height + 32), (width - 32, height), (width, height)]:
        network.resize(w, h)
        written = parse_network(cfg_with(path, tmp_path, width=w, height=h)).initialize(seed=2)
        copy_params(network, written)
        assert [layer.out_shape for layer in network.layers] == \
               [layer.out_shape for layer in written.layers]
        x = rng.random((2, network.input_shape[0], h, w), dtype=np.float32)
        for a, b in zip(network.run(x, keep=True), written.run(x, keep=True)):
            np.testing.assert_array_equal(a, b)
        classes = network.heads[0].classes
        truth = Truth.random(rng, 2, classes, w, h)
        for a, b in zip(train_pass(network, x, truth), train_pass(written, x, truth)):
            np.testing.assert_array_equal(a, b)
    kept = [getattr(layer, name) for layer in network.layers
            for name in (*layer.param_names, *layer.state_names)]
    assert all(a is b for a, b in zip(arrays, kept))       # the same arrays, not copies


def test_worker_processes_follow_the_network_to_each_new_size():
    # Multi-scale training at --threads 2: the workers' copies resize with the caller's.
    path = ROOT / "tests" / "detector_cfgs" / "yolov3-tiny-160x96.cfg"
    whole, split = (parse_network(path).initialize(3, np.float64) for _ in range(2))
    one = Runner(whole, 1)
    rng = np.random.default_rng(0)
    with Runner(split, 2) as two:
        assert two.split
        for w, h in [(128, 64), (96, 96), (160, 96)]:
            whole.resize(w, h)
            split.resize(w, h)
            x = rng.random((4, 3, h, w))
            truth = Truth.random(rng, 4, whole.heads[0].classes, w, h)
            whole.zero_grads()
            split.zero_grads()
            noise = Noise(0, w)
            assert two.train_step(x, truth, noise) == pytest.approx(
                one.train_step(x, truth, noise), rel=1e-12)
            for a, b in zip(whole.layers, split.layers):
                for (name, _, ga), (_, _, gb) in zip(a.parameters(), b.parameters()):
                    np.testing.assert_allclose(gb, ga, rtol=1e-9, atol=1e-12, err_msg=name)


def test_a_size_the_cfg_can_not_take_is_refused_and_changes_nothing():
    network = parse_network(CFG_DIR / "yolo-digits.cfg").initialize(seed=1)
    x = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    before = network.forward(x)
    # 100 is no multiple of 32: the upsampled stride-32 map (4 x 4 -> 8) no longer meets
    # the stride-16 one (7 x 7) at the [route].
    with pytest.raises(DarkbpError) as error:
        network.resize(100, 100)
    assert "at 100 x 100 input" in str(error.value) and "yolo-digits.cfg:" in str(error.value)
    assert network.input_shape == (3, 128, 128)
    np.testing.assert_array_equal(network.forward(x), before)


def test_a_layer_whose_parameters_depend_on_the_input_size_is_refused():
    path = GOLDEN / "cfg_det" / "detection.cfg"      # yolov1's shape: [connected] layers
    network = parse_network(path)
    with pytest.raises(DarkbpError, match=r"\[connected\] has parameters whose shape depends "
                                          r"on the input size") as error:
        network.resize(96, 96)
    assert error.value.line is not None and error.value.file == str(path)


def test_multi_scale_sizes_span_the_range_in_multiples_of_32():
    scales = MultiScale(128, 96, 1.4)
    total = 10_000
    sizes = [scales.size(7, b, total) for b in range(total)]
    assert sizes[:10] == [(192, 128)] * 10                  # the first period: the largest
    assert set(sizes[-100:]) == {(192, 128)}                 # the last 100 batches too
    for period in range(total // 10):
        assert len(set(sizes[period * 10:(period + 1) * 10])) == 1
    # 128 and 96 times a scale from 1/1.4 to 1.4, rounded to multiples of 32, one scale for
    # both sides: 128 -> 96..192 (89.6, 179.2), 96 -> 64..128 (68.6, 134.4).
    found = set(sizes)
    assert found <= {(96, 64), (96, 96), (128, 64), (128, 96), (160, 96), (160, 128),
                     (192, 128)}
    widths = np.array([w for w, _ in sizes[10:-100:10]])
    assert set(widths) == {96, 128, 160, 192}
    # rand_scale: half the draws shrink the input, half enlarge it.
    assert 0.4 < np.mean(widths < 128) + np.mean(widths == 128) / 2 < 0.6
    assert [scales.size(7, b, total) for b in range(500)] == sizes[:500]    # from the seed
    assert [scales.size(8, b, total) for b in range(500)] != sizes[:500]


def test_multi_scale_comes_from_the_last_heads_random(tmp_path):
    digits = CFG_DIR / "yolo-digits.cfg"
    assert MultiScale.of_network(parse_network(digits)) is None      # random=0
    multi = tmp_path / "multi.cfg"
    multi.write_text(digits.read_text().replace("random=0", "random=1"))
    assert MultiScale.of_network(parse_network(multi)) == MultiScale(128, 128, 1.4)
    multi.write_text(digits.read_text().replace("random=0", "random=1.2"))
    assert MultiScale.of_network(parse_network(multi)).largest == (160, 160)


class SizeListener(TrainListener):
    """The network's input size at each update (after the update's passes)."""

    def start(self, trainer):
        self.trainer, self.sizes = trainer, []

    def batch(self, report):
        self.sizes.append(self.trainer.network.input_shape[1:])


def small_digits(tmp_path: Path, monkeypatch) -> Path:
    """yolo-digits at 64 x 64 with random=1 (sizes 32 to 96), batch 4, on mnist-det of 48
    training images."""
    make_mnist_det(tmp_path, monkeypatch, 48, 4)
    cfg = cfg_with(CFG_DIR / "yolo-digits.cfg", tmp_path, width=64, height=64, batch=4,
                   burn_in=0)
    cfg.write_text(cfg.read_text().replace("random=0", "random=1"))
    return cfg


def test_multi_scale_training_feeds_each_period_at_its_size(tmp_path, monkeypatch):
    cfg = small_digits(tmp_path, monkeypatch)
    listener = SizeListener()
    trainer = DetectionTrainer(parse_network(cfg), open_detection_data("mnist-det"),
                               TrainOptions(out=tmp_path / "out", max_batches=140),
                               listener)
    trainer.run()
    # The first 10 and the last 100 updates at the largest (96), the others at their
    # period's draw, one size a period; the network ends at the cfg's 64 x 64.
    sizes = listener.sizes
    assert sizes[:10] == [(96, 96)] * 10 and sizes[40:] == [(96, 96)] * 100
    assert {sizes[b] for b in range(10, 40)} <= {(32, 32), (64, 64), (96, 96)}
    for period in range(14):
        assert len(set(sizes[period * 10:(period + 1) * 10])) == 1
    assert [size for size in sizes[10:40:10]] == [
        (s[1], s[0]) for s in (trainer.scales.size(0, b, 140) for b in range(10, 40, 10))]
    assert trainer.network.input_shape == (3, 64, 64)


class StopAt(TrainListener):
    """Asks the trainer to stop after update `batch_num` (as Ctrl-C does)."""

    def __init__(self, batch_num: int):
        self.batch_num = batch_num

    def start(self, trainer):
        self.trainer = trainer

    def batch(self, report):
        if report.batch_num == self.batch_num:
            self.trainer.request_stop()


def test_a_multi_scale_run_resumed_mid_period_ends_with_the_same_weights(tmp_path,
                                                                         monkeypatch):
    cfg = small_digits(tmp_path, monkeypatch)
    # A seed whose second period differs from the first's size, so that the stop (after
    # update 15) and the resume fall in a period at another size than the run started at.
    seed = next(s for s in range(20) if MultiScale(64, 64, 1.4).size(s, 10, 130) != (96, 96))

    def train(out, *more):
        result = CliRunner().invoke(main, ["train", str(cfg), "--data", "mnist-det",
                                           "--max-batches", "130", "--seed", str(seed),
                                           "--out", str(tmp_path / out), "--threads", "1",
                                           *more])
        assert result.exit_code == 0, result.output
        return result

    whole = train("whole")
    assert "multi-scale (random): every 10 batches the input becomes 32 x 32 to 96 x 96" \
        in whole.stderr
    stopped = DetectionTrainer(parse_network(cfg), open_detection_data("mnist-det"),
                               TrainOptions(out=tmp_path / "parts", max_batches=130,
                                            seed=seed), StopAt(15))
    stopped.run()
    assert stopped.stopped and stopped.batch_num == 15
    train("parts", "--resume")
    name = cfg.stem + "_final.weights"
    assert (tmp_path / "parts" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
