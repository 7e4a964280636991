"""The training chart: series read from hand-written metrics logs (fresh, resumed, old
format), the PNG, `darkbp plot`, the chart training writes each epoch, and life without
matplotlib."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from darkbp import chart
from darkbp.chart import EpochPoint, read_series
from darkbp.cli import main
from darkbp.errors import DarkbpError
from darkbp.network import parse_network
from darkbp.train import Trainer, TrainListener, TrainOptions
from tests.conftest import ROOT, SAMPLE
from tests.test_train import SMALL_CFG

START = {"event": "start", "cfg": "cfg/mnist.cfg", "data": "mnist", "data_source": "/d",
         "sample": False, "batch": 64, "subdivisions": 1, "ema": 0.9, "seed": 0}


def write_log(path, *records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


# A run of 10 batches killed after batch 5: a batch record, the end of epoch 1 at batch 3
# (it carries the batch after the batch record), a batch record whose learning rate fell.
FRESH = [
    {"time": 1000.0, **START, "total_batches": 10, "batch_num": 0},
    {"time": 1010.0, "event": "batch", "batch_num": 2, "epoch": 1, "loss": 1.5, "lr": 0.1,
     "losses": [2.0, 1.0], "images_per_s": 12.8, "wall_time": 9.0},
    {"time": 1016.0, "event": "epoch", "epoch": 1, "batch_num": 3, "accuracy": 0.5,
     "ema_accuracy": 0.25, "loss": 1.1667, "wall_time": 12.0, "top": 2, "top_accuracy": 0.75,
     "ema_top_accuracy": 0.625, "lr": 0.05, "losses": [0.5], "images_per_s": 16.0},
    {"time": 1020.0, "event": "batch", "batch_num": 5, "epoch": 2, "loss": 0.375, "lr": 0.025,
     "losses": [0.25, 0.5], "lrs": [0.05, 0.025], "images_per_s": 40.0, "wall_time": 15.5},
]


def test_series_of_a_fresh_log(tmp_path):
    series = read_series(write_log(tmp_path / "mnist_metrics.jsonl", *FRESH))
    assert (series.cfg, series.data, series.total_batches, series.batch_num) == \
        ("cfg/mnist.cfg", "mnist", 10, 5)
    assert series.per_batch
    assert series.batches == [1, 2, 3, 4, 5]
    assert series.loss == [2.0, 1.0, 0.5, 0.25, 0.5]
    # Darknet's avg_loss: 2, .9·2 + .1·1, .9·1.9 + .1·.5, .9·1.76 + .1·.25, .9·1.609 + .1·.5
    assert series.average == pytest.approx([2.0, 1.9, 1.76, 1.609, 1.4981])
    assert series.lr == [0.1, 0.1, 0.05, 0.05, 0.025]
    assert series.epochs == [EpochPoint(1, 3, 0.5, 0.25, 2, 0.75, 0.625)]
    assert series.training_seconds == 15.5
    assert series.seconds_left == pytest.approx(20.0)    # 20 s for 5 batches, 5 to go


# Killed after batch 5 with its checkpoint at batch 3, then resumed from batch 3: the
# killed run's batches 4 and 5 are trained again and logged again, differently here.
RESUMED = [
    {"time": 1000.0, **START, "total_batches": 6, "batch_num": 0},
    {"time": 1010.0, "event": "batch", "batch_num": 2, "epoch": 1, "loss": 1.5, "lr": 0.1,
     "losses": [2.0, 1.0], "images_per_s": 12.8, "wall_time": 9.0},
    {"time": 1015.0, "event": "epoch", "epoch": 1, "batch_num": 3, "accuracy": 0.5,
     "ema_accuracy": None, "loss": 1.1667, "wall_time": 12.0, "top": None,
     "top_accuracy": None, "ema_top_accuracy": None, "lr": 0.1, "losses": [0.5],
     "images_per_s": 16.0},
    {"time": 1020.0, "event": "batch", "batch_num": 5, "epoch": 2, "loss": 0.35, "lr": 0.1,
     "losses": [0.4, 0.3], "images_per_s": 40.0, "wall_time": 15.0},
    {"time": 2000.0, **START, "total_batches": 6, "batch_num": 3},
    {"time": 2004.0, "event": "batch", "batch_num": 5, "epoch": 2, "loss": 0.1875, "lr": 0.1,
     "losses": [0.25, 0.125], "images_per_s": 40.0, "wall_time": 15.0},
    {"time": 2006.0, "event": "epoch", "epoch": 2, "batch_num": 6, "accuracy": 0.75,
     "ema_accuracy": None, "loss": 0.1458, "wall_time": 16.5, "top": None,
     "top_accuracy": None, "ema_top_accuracy": None, "lr": 0.1, "losses": [0.0625],
     "images_per_s": 32.0},
]


def test_series_of_a_resumed_log(tmp_path):
    series = read_series(write_log(tmp_path / "m.jsonl", *RESUMED))
    assert series.batches == [1, 2, 3, 4, 5, 6]
    assert series.loss == [2.0, 1.0, 0.5, 0.25, 0.125, 0.0625]
    assert series.lr == [0.1] * 6
    assert series.epochs == [EpochPoint(1, 3, 0.5, None, None, None, None),
                             EpochPoint(2, 6, 0.75, None, None, None, None)]
    assert (series.batch_num, series.training_seconds, series.seconds_left) == (6, 16.5, 0.0)

    # Before the resumed run's last record: its speed, not the killed run's, gives the time.
    series = read_series(write_log(tmp_path / "m.jsonl", *RESUMED[:-1]))
    assert series.loss == [2.0, 1.0, 0.5, 0.25, 0.125]
    assert series.seconds_left == pytest.approx(2.0)   # 4 s for batches 4-5, 1 to go
    # Just resumed: what the checkpoint holds, and no speed yet.
    series = read_series(write_log(tmp_path / "m.jsonl", *RESUMED[:-2]))
    assert (series.batches, series.batch_num, series.seconds_left) == ([1, 2, 3], 3, None)


def test_a_new_run_in_the_same_folder_starts_the_chart_again(tmp_path):
    again = [{**RESUMED[0], "time": 3000.0},
             {"time": 3004.0, "event": "batch", "batch_num": 1, "epoch": 1, "loss": 3.0,
              "lr": 0.2, "losses": [3.0], "images_per_s": 16.0, "wall_time": 4.0}]
    series = read_series(write_log(tmp_path / "m.jsonl", *RESUMED, *again))
    assert (series.batches, series.loss, series.lr, series.epochs) == ([1], [3.0], [0.2], [])
    assert series.seconds_left == pytest.approx(20.0)


# Written before the log kept every batch's loss (and before top-k): a batch record's mean
# loss over its window, an epoch record without losses or top-k.
OLD = [
    {"time": 1000.0, **START, "total_batches": 250, "batch_num": 0},
    {"time": 1010.0, "event": "batch", "batch_num": 50, "epoch": 1, "loss": 1.25, "lr": 0.1,
     "images_per_s": 320.0, "wall_time": 10.0},
    {"time": 1020.0, "event": "batch", "batch_num": 100, "epoch": 1, "loss": 0.5, "lr": 0.1,
     "images_per_s": 320.0, "wall_time": 20.0},
    {"time": 1030.0, "event": "epoch", "epoch": 1, "batch_num": 125, "accuracy": 0.875,
     "ema_accuracy": 0.9, "loss": 0.8, "wall_time": 25.0, "lr": 0.1, "images_per_s": 320.0},
    {"time": 1040.0, "event": "batch", "batch_num": 150, "epoch": 2, "loss": 0.25,
     "lr": 0.05, "images_per_s": 320.0, "wall_time": 32.0},
]


def test_series_of_an_old_log_are_its_window_means(tmp_path):
    series = read_series(write_log(tmp_path / "m.jsonl", *OLD))
    assert not series.per_batch
    assert series.batches == [50, 100, 150]
    assert series.loss == []
    assert series.average == [1.25, 0.5, 0.25]
    assert series.lr == [0.1, 0.1, 0.05]
    assert series.epochs == [EpochPoint(1, 125, 0.875, 0.9, None, None, None)]
    assert series.seconds_left == pytest.approx(40 / 150 * 100)


@pytest.mark.parametrize("records", [FRESH, RESUMED, OLD, FRESH[:2]],
                         ids=["fresh", "resumed", "old", "no-epoch-yet"])
def test_the_chart_is_a_png_of_1200_by_800(tmp_path, records):
    log = write_log(tmp_path / "mnist_metrics.jsonl", *records)
    path = chart.write_chart(read_series(log), tmp_path / "c.png")
    with Image.open(path) as image:
        assert (image.format, image.size) == ("PNG", (1200, 800))
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20      # a drawing, not a blank


# ---------------------------------------------------------------------- darkbp plot

def test_plot_a_run_folder_or_a_log(tmp_path):
    log = write_log(tmp_path / "mnist_metrics.jsonl", *FRESH)
    result = CliRunner().invoke(main, ["plot", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'mnist_chart.png'}\n"
    result = CliRunner().invoke(main, ["plot", str(log), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'x.png'}\n"
    with Image.open(tmp_path / "mnist_chart.png") as a, Image.open(tmp_path / "x.png") as b:
        assert a.size == (1200, 800) and np.array_equal(np.asarray(a), np.asarray(b))


def assert_plot_error(args, stderr):
    result = CliRunner().invoke(main, ["plot", *map(str, args)])
    assert result.exit_code == 2
    assert result.stderr == f"darkbp: error: {stderr}\n"
    assert result.stdout == ""


def test_plot_errors(tmp_path):
    assert_plot_error([tmp_path / "gone"], f"{tmp_path / 'gone'} does not exist")
    assert_plot_error([tmp_path], f"{tmp_path} holds no NAME_metrics.jsonl (the metrics log "
                                  "that darkbp train writes in --out)")
    write_log(tmp_path / "a_metrics.jsonl", *FRESH)
    write_log(tmp_path / "b_metrics.jsonl", *FRESH)
    assert_plot_error([tmp_path], f"{tmp_path} holds 2 metrics logs (a_metrics.jsonl, "
                                  "b_metrics.jsonl): give one of them")
    log = tmp_path / "a_metrics.jsonl"
    log.write_text(json.dumps(FRESH[0]) + '\n{"time": 1010.0, "event": "batch", "batch_num"\n')
    assert_plot_error([log], f"{log}:2: not a JSON record: Expecting ':' delimiter")
    write_log(log, FRESH[0], {k: v for k, v in FRESH[1].items() if k != "batch_num"})
    assert_plot_error([log], f"{log}:2: the batch record has no 'batch_num'")
    write_log(log, *FRESH[1:])
    assert_plot_error([log], f"{log}: not a darkbp metrics log: it has no start record")
    write_log(log, FRESH[0])
    assert_plot_error([log], f"{log}: no batch or epoch record yet: nothing to draw")
    write_log(log, *FRESH)
    assert_plot_error([log, "--out", tmp_path / "no" / "c.png"],
                      f"cannot write {tmp_path / 'no' / 'c.png'}: No such file or directory")


# ---------------------------------------------------------------------- training

class _Watcher(TrainListener):
    """Every batch's loss and learning rate, and the chart's bytes at the end of each epoch."""

    def __init__(self, chart_path):
        self.chart_path, self.losses, self.lrs, self.charts = chart_path, [], [], []

    def batch(self, report):
        self.losses.append(report.loss)
        self.lrs.append(report.lr)

    def epoch(self, report):
        self.charts.append(self.chart_path.read_bytes())


def _train(tmp_path, dataset, listener=None, **options):
    path = tmp_path / "small.cfg"
    path.write_text(SMALL_CFG)
    trainer = Trainer(parse_network(path), dataset, TrainOptions(**options), listener)
    trainer.run()
    return trainer


def test_training_draws_the_chart_each_epoch_and_plot_redraws_it(tmp_path, sample):
    out = tmp_path / "out"
    watcher = _Watcher(out / "small_chart.png")
    trainer = _train(tmp_path, sample, out=out, epochs=2, ema=0.99,
                     listener=watcher)
    assert len(watcher.charts) == 2 and watcher.charts[0] != watcher.charts[1]
    # 125 batches an epoch: batch lines at 50, 100, 150, ...; the epoch line carries the rest.
    series = read_series(trainer.path("metrics"))
    assert series.per_batch and series.batches == list(range(1, 251))
    assert series.loss == pytest.approx(watcher.losses, rel=1e-5)
    assert series.lr == pytest.approx(watcher.lrs, rel=1e-5)
    assert [(e.epoch, e.batch_num) for e in series.epochs] == [(1, 125), (2, 250)]
    assert series.epochs[-1].ema_accuracy > 0.85
    assert series.seconds_left == 0.0

    result = CliRunner().invoke(main, ["plot", str(out), "--out", str(tmp_path / "again.png")])
    assert result.exit_code == 0, result.output
    assert (out / "small_chart.png").read_bytes() == watcher.charts[-1]
    with Image.open(out / "small_chart.png") as trained, \
            Image.open(tmp_path / "again.png") as again:
        assert trained.size == (1200, 800)
        assert np.array_equal(np.asarray(trained), np.asarray(again))


def test_a_resumed_run_charts_the_batches_of_an_uninterrupted_one(tmp_path, sample):
    whole = _train(tmp_path, sample, out=tmp_path / "whole", max_batches=150)
    _train(tmp_path, sample, out=tmp_path / "part", max_batches=100)
    resumed = _train(tmp_path, sample, out=tmp_path / "part", max_batches=150,
                     resume=True)
    a, b = read_series(whole.path("metrics")), read_series(resumed.path("metrics"))
    assert b.batches == a.batches == list(range(1, 151))
    assert (b.loss, b.average, b.lr) == (a.loss, a.average, a.lr)
    # The first run ended at batch 100 with a test of its own, in the resumed run's chart.
    assert [e.batch_num for e in b.epochs] == [100, 125, 150]
    assert b.epochs[1:] == a.epochs


def test_starting_darkbp_or_training_does_not_import_matplotlib(tmp_path):
    code = f"""
import sys
from click.testing import CliRunner
from darkbp.cli import main
from darkbp.datasets import load_dataset
from darkbp.network import parse_network
from darkbp.train import Trainer, TrainListener, TrainOptions

assert CliRunner().invoke(main, ["--help"]).exit_code == 0
assert CliRunner().invoke(main, ["train", "--help"]).exit_code == 0
print("help", "matplotlib" in sys.modules)

class Listener(TrainListener):
    def start(self, trainer):
        print("start", "matplotlib" in sys.modules)

open({str(tmp_path / "small.cfg")!r}, "w").write({SMALL_CFG!r})
options = TrainOptions(out={str(tmp_path / "out")!r}, max_batches=2)
Trainer(parse_network({str(tmp_path / "small.cfg")!r}), load_dataset({str(SAMPLE)!r}),
        options, Listener()).run()
print("end", "matplotlib" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["help False", "start False", "end True"]


def hide_matplotlib(monkeypatch):
    """Imports of matplotlib and of its modules already loaded fail, as if not installed."""
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_without_matplotlib_training_says_so_once_and_plot_exits_2(tmp_path, monkeypatch):
    chart.write_chart(read_series(write_log(tmp_path / "m.jsonl", *FRESH)), tmp_path / "c.png")
    hide_matplotlib(monkeypatch)
    assert not chart.available()
    with pytest.raises(DarkbpError, match=r"^charts need matplotlib: pip install "
                                          r"'darkbp\[plot\]'$"):
        chart.write_chart(read_series(tmp_path / "m.jsonl"), tmp_path / "c.png")

    cfg, out = tmp_path / "small.cfg", tmp_path / "out"
    cfg.write_text(SMALL_CFG)
    result = CliRunner().invoke(main, ["train", str(cfg), "--data", str(SAMPLE), "--epochs", "2",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "darkbp[plot]" in line]
    assert notes == ["darkbp: charts need matplotlib: pip install 'darkbp[plot]' (training goes "
                     "on without small_chart.png)"]
    assert sorted(p.name for p in out.iterdir()) == [
        "small_final.weights", "small_last.state.npz", "small_last.weights",
        "small_metrics.jsonl"]
    assert_plot_error([out], "charts need matplotlib: pip install 'darkbp[plot]'")
    assert not (out / "small_chart.png").exists()
