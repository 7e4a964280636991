"""Training end to end on the MNIST sample shipped in data/: determinism, resume, failures."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from darkbp.cli import main
from darkbp.errors import DarkbpError, RunFailed
from darkbp.network import parse_network
from darkbp.train import Trainer, TrainOptions
from tests.conftest import SAMPLE


SMALL_CFG = """
[net]
batch=32
subdivisions=2
width=28
height=28
channels=1
learning_rate=0.05
momentum=0.9
decay=0.0005
policy=steps
steps=100,150
scales=.5,.5

[convolutional]
filters=4
size=5
stride=2
activation=leaky

[maxpool]
size=2
stride=2

[connected]
output=10
activation=linear

[softmax]
"""


def _train(tmp_path, cfg_text, dataset, **options):
    path = tmp_path / "small.cfg"
    path.write_text(cfg_text)
    trainer = Trainer(parse_network(path), dataset, TrainOptions(**options))
    trainer.run()
    return trainer


def test_learns_and_writes_checkpoints(tmp_path, sample):
    out = tmp_path / "out"
    trainer = _train(tmp_path, SMALL_CFG, sample, out=out, epochs=2, ema=0.99)
    assert trainer.batches_per_epoch == 4000 // 32
    assert trainer.batch_num == 2 * 125
    names = sorted(p.name for p in out.iterdir())
    assert names == ["small_chart.png", "small_ema.weights", "small_final.weights",
                     "small_last.state.npz", "small_last.weights", "small_metrics.jsonl"]
    records = [json.loads(line) for line in (out / "small_metrics.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "start" and records[0]["data_source"] == str(SAMPLE)
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert epochs[-1]["accuracy"] > 0.85          # a tiny net on 4,000 digits, two epochs
    assert epochs[-1]["ema_accuracy"] > 0.85
    batches = [r for r in records if r["event"] == "batch"]
    assert [r["batch_num"] for r in batches] == [50, 100, 150, 200, 250]
    # The update that makes batch_num 150 ran with batch_num 149: only the step at 100 applies.
    assert batches[2]["lr"] == pytest.approx(0.05 * 0.5)
    assert batches[3]["lr"] == pytest.approx(0.05 * 0.5 * 0.5)
    assert {"loss", "images_per_s", "wall_time", "epoch"} <= set(batches[0])
    # seen in the header = updates x batch
    header = np.frombuffer((out / "small_final.weights").read_bytes()[:20], "<i4")
    assert header[:3].tolist() == [0, 2, 0]
    assert int(np.frombuffer((out / "small_final.weights").read_bytes()[12:20], "<u8")[0]) == 250 * 32


def test_same_seed_same_weights_bit_for_bit(tmp_path, sample):
    a = _train(tmp_path, SMALL_CFG, sample, out=tmp_path / "a", max_batches=30, seed=5)
    b = _train(tmp_path, SMALL_CFG, sample, out=tmp_path / "b", max_batches=30, seed=5)
    c = _train(tmp_path, SMALL_CFG, sample, out=tmp_path / "c", max_batches=30, seed=6)
    assert a.path("final").read_bytes() == b.path("final").read_bytes()
    assert a.path("final").read_bytes() != c.path("final").read_bytes()


def test_resume_in_process_equals_uninterrupted(tmp_path, sample):
    whole = _train(tmp_path, SMALL_CFG, sample, out=tmp_path / "whole", epochs=3, ema=0.9)
    _train(tmp_path, SMALL_CFG, sample, out=tmp_path / "part", epochs=1, ema=0.9)
    resumed = _train(tmp_path, SMALL_CFG, sample, out=tmp_path / "part", epochs=3, ema=0.9,
                     resume=True)
    for kind in ("final", "ema"):
        assert resumed.path(kind).read_bytes() == whole.path(kind).read_bytes()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, sample, monkeypatch):
    path = tmp_path / "small.cfg"
    path.write_text(SMALL_CFG)
    out = tmp_path / "out"
    network = parse_network(path)
    trainer = Trainer(network, sample, TrainOptions(out=out, epochs=3))
    original_cost = network.cost
    calls = {"n": 0}

    def poisoned(truth):
        calls["n"] += 1
        losses = original_cost(truth)
        return losses * np.nan if calls["n"] > 2 * 125 + 20 else losses    # mid epoch 2
    monkeypatch.setattr(network, "cost", poisoned)
    with pytest.raises(RunFailed, match=r"the loss became nan at batch 136 \(epoch 2\)") as caught:
        trainer.run()
    assert "small_last.state.npz (batch 125), is kept" in str(caught.value)
    seen = np.frombuffer(trainer.path("last").read_bytes()[12:20], "<u8")[0]
    assert seen == 125 * 32                          # the checkpoint of epoch 1, untouched
    assert not trainer.path("final").exists()


def test_diverging_run_exits_1_with_a_clear_message(tmp_path):
    cfg = tmp_path / "hot.cfg"
    cfg.write_text(SMALL_CFG.replace("learning_rate=0.05", "learning_rate=1e30"))
    result = CliRunner().invoke(main, ["train", str(cfg), "--data", str(SAMPLE), "--epochs", "1",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "the loss became" in result.stderr
    assert "no checkpoint had been written yet" in result.stderr
    assert "Traceback" not in result.output


def test_unwritable_output_folder_fails_before_training(tmp_path, sample):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = tmp_path / "small.cfg"
    cfg.write_text(SMALL_CFG)
    result = CliRunner().invoke(main, ["train", str(cfg), "--data", str(SAMPLE), "--epochs", "1",
                                       "--out", str(blocker / "out")])
    assert result.exit_code == 2
    assert str(blocker / "out") in result.stderr
    assert "epoch" not in result.stderr


def test_resume_without_a_state_is_an_error(tmp_path, sample):
    path = tmp_path / "small.cfg"
    path.write_text(SMALL_CFG)
    with pytest.raises(DarkbpError, match="nothing to resume"):
        Trainer(parse_network(path), sample, TrainOptions(out=tmp_path, epochs=1, resume=True))


def test_no_length_is_an_error(tmp_path, sample):
    path = tmp_path / "small.cfg"
    path.write_text(SMALL_CFG)
    with pytest.raises(DarkbpError, match="give --epochs or --max-batches"):
        Trainer(parse_network(path), sample, TrainOptions(out=tmp_path))


def test_weights_option_starts_from_a_file(tmp_path, sample):
    first = _train(tmp_path, SMALL_CFG, sample, out=tmp_path / "a", max_batches=20)
    path = tmp_path / "small.cfg"
    network = parse_network(path)
    trainer = Trainer(network, sample, TrainOptions(out=tmp_path / "b", max_batches=1,
                                                    weights=first.path("final")))
    assert trainer.test_accuracy() == first.test_accuracy()


def test_cli_falls_back_to_the_sample_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("DARKBP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = tmp_path / "small.cfg"
    cfg.write_text(SMALL_CFG)
    result = CliRunner().invoke(main, ["train", str(cfg), "--data", "mnist", "--max-batches",
                                       "3", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "sample shipped with darkbp" in result.stderr
    assert "darkbp data fetch mnist" in result.stderr
    record = json.loads((tmp_path / "out" / "small_metrics.jsonl").read_text().splitlines()[0])
    assert record["sample"] is True


def test_resume_after_a_run_that_ended_mid_epoch(tmp_path, sample):
    # 125 batches per epoch: the first run stops 100 batches into epoch 1, the resumed one
    # goes on to 150 — the same batches, in the same order, as one run of 150.
    whole = _train(tmp_path, SMALL_CFG, sample, out=tmp_path / "whole", max_batches=150)
    _train(tmp_path, SMALL_CFG, sample, out=tmp_path / "part", max_batches=100)
    resumed = _train(tmp_path, SMALL_CFG, sample, out=tmp_path / "part", max_batches=150,
                     resume=True)
    assert resumed.batch_num == 150
    assert resumed.path("final").read_bytes() == whole.path("final").read_bytes()


# A detector's heads as BatchReport.heads holds them: the widest names and figures of each
# kind (pjreddie's [yolo], AlexeyAB's, [region], [detection]).
YOLO = {"Avg IOU": 0.7123, "Class": 0.9981, "Obj": 0.8745, "No Obj": 0.0042, ".5R": 1.0,
        ".75R": 0.5312, "count": 1234.5}
HEADS = (("[yolo] 106", YOLO), ("[yolo] 94", YOLO),
         ("[yolo] 130", {"Avg IOU": 0.7123, "count": 1234.5, "class_loss": 123.4567,
                         "iou_loss": 1234.5678, "total_loss": 1358.0245}),
         ("[region] 31", {"Avg IOU": 0.7, "Class": 0.9, "Obj": 0.8, "No Obj": 0.0042,
                          "Avg Recall": 0.95, "count": 1234.5}),
         ("[detection] 27", {"Avg IOU": 0.7, "Pos Cat": 0.9, "All Cat": 0.1, "Pos Obj": 0.8,
                             "Any Obj": 0.0042, "count": 1234.5}))


@pytest.mark.parametrize("darknet_cost, heads", [(None, None), (12345.67, HEADS)])
def test_the_progress_lines_fit_an_80_column_terminal(darknet_cost, heads):
    """The training progress display, a detector's (with Darknet's cost and its heads'
    running statistics) and a classifier's, at the widest figures a long run shows: on an
    80-column terminal nothing is cut to '…', so the batch count, the times and every
    number stay readable."""
    from rich.console import Console, Group

    from darkbp.cli.train import _ProgressListener
    from darkbp.train import BatchReport
    console = Console(width=80, force_terminal=True, color_system=None, record=True,
                      file=io.StringIO())
    listener = _ProgressListener(console)
    progress = listener.progress
    listener.task = progress.add_task("train", total=500200, completed=0, epoch=1, stats="")
    listener.smoothed = None
    listener.batch(BatchReport(batch_num=123456, total_batches=500200, epoch=12,
                               loss=180.7329, lr=0.00125, images_per_s=17914.0,
                               darknet_cost=darknet_cost, heads=heads))
    console.print(Group(*progress.get_renderables()))
    bar, numbers, *table = console.export_text().rstrip("\n").split("\n")
    for line in (bar, numbers, *table):
        assert "…" not in line and len(line) <= 80, line
    assert bar.startswith("epoch 12 ") and "123456/500200" in bar
    assert numbers == ("loss 180.7329" + ("" if darknet_cost is None else
                                          " (Darknet's cost 12345.67)")
                       + "  lr 0.00125  17914 img/s")
    if heads is None:
        assert table == []
        return
    # A row of names above each kind of head, then a row a head: its figures under them.
    assert len(table) == 4 + len(HEADS)
    assert table[0].split() == ["Avg", "IOU", "Class", "Obj", "No", "Obj", ".5R", ".75R",
                                "count"]
    assert table[1].split() == ["[yolo]", "106", "0.7123", "0.9981", "0.8745", "0.0042",
                                "1.0000", "0.5312", "1234.5"]
    assert table[2].split()[:2] == ["[yolo]", "94"]
    assert table[4].split() == ["[yolo]", "130", "0.7123", "1234.5", "123.4567",
                                "1234.5678", "1358.0245"]
    assert [row.split()[0] for row in table[5:]] == ["Avg", "[region]", "Avg", "[detection]"]
    for names, row in ((0, 1), (0, 2), (3, 4), (5, 6), (7, 8)):    # figures under names
        assert len(table[row]) == len(table[names])
