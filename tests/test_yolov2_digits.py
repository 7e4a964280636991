"""cfg/yolov2-digits.cfg, the [region] (YOLOv2) detector for mnist-det: its gradients pass
`darkbp gradcheck` at a reduced size, and it trains through the CLI on a tiny mnist-det.

At its own 128 x 128 the leaky kinks of a batch of 2 rule out any input draw (as for
yolo-digits.cfg, tests/test_gradcheck.py), so tests/test_gradcheck.py's loop over cfg/ leaves
it out and it is checked here at 32 x 32: the region at stride 16 has 2 x 2 cells and the
passthrough's [reorg] takes 4 x 4 x 32 to 2 x 2 x 128."""

from __future__ import annotations

import json

from click.testing import CliRunner

from darkbp.cli import main
from darkbp.network import parse_network
from tests.conftest import CFG_DIR

CFG = CFG_DIR / "yolov2-digits.cfg"


def _at_32x32(tmp_path):
    small = tmp_path / "yolov2-digits-32.cfg"
    text = CFG.read_text()
    assert "width=128" in text and "height=128" in text
    small.write_text(text.replace("width=128", "width=32").replace("height=128", "height=32"))
    return small


def test_the_cfg_is_a_region_detector_at_stride_16():
    network = parse_network(CFG)
    (head,) = network.heads
    # 5 anchors x (4 coords + objectness + 10 classes) on 8 x 8 cells of 16 px
    assert head.out_shape == (75, 8, 8)
    assert (head.coords, head.classes, head.num) == (4, 10, 5)
    assert head.training_refusal() is None
    assert head.settings["softmax"] == 1 and head.settings["bias_match"] == 1


def test_gradcheck_passes_at_32x32(tmp_path):
    small = _at_32x32(tmp_path)
    assert [layer.out_shape for layer in parse_network(small).heads] == [(75, 2, 2)]
    for seed in ("0", "1"):
        result = CliRunner().invoke(main, ["gradcheck", str(small), "--batch", "2", "--seed",
                                           seed, "--max-elements", "16"])
        assert result.exit_code == 0, result.output


def test_trains_on_mnist_det_through_the_cli(tmp_path, monkeypatch):
    # mnist-det of 64 + 8 images, two updates of one batch each (one batch per epoch).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = CliRunner().invoke(main, ["data", "make", "mnist-det", "--train", "64",
                                     "--valid", "8"])
    assert made.exit_code == 0, made.output
    result = CliRunner().invoke(main, ["train", str(CFG), "--data", "mnist-det",
                                       "--max-batches", "2", "--out", str(tmp_path / "out"),
                                       "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "on mnist-det (64 images)" in result.stderr
    assert "test mAP@0.5" in result.stderr and "EMA weights" in result.stderr
    records = [json.loads(line) for line in
               (tmp_path / "out" / "yolov2-digits_metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == 2                                   # one batch per epoch
    assert all(0 < r["loss"] < float("inf") for r in epochs)
    epoch = epochs[-1]
    assert epoch["metric"] == "mAP@0.5" and 0 <= epoch["accuracy"] <= 1
    assert len(epoch["heads"]) == 1 and epoch["heads"][0].startswith("Region Avg IOU: ")
    assert epoch["darknet_cost"] > 0
    assert (tmp_path / "out" / "yolov2-digits_final.weights").is_file()
