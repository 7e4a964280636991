"""Training runs that are stopped, killed, lose a worker process or fill the disk, then go
on: real `darkbp train` processes and real signals, and the final weights always equal
those of a run that was never interrupted, byte for byte.

A run is caught at a random batch (fixed seeds) by watching its checkpoints, written
every 60 ms (--checkpoint-every 0.001: not after every update, as each is fsynced), then
frozen with SIGSTOP while the signal is sent, so that it cannot finish first.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from darkbp.cli.train import _Stop, _stop_on_signals
from darkbp.network import parse_network
from darkbp.parallel import PROCESSES_AVAILABLE
from darkbp.train import Trainer, TrainListener, TrainOptions
from tests.conftest import ROOT, SAMPLE
from tests.test_train import SMALL_CFG
from tests.test_train_graph import GRAPH_CFG as GRAPH

# test_train.py's LeNet with its steps within these runs, and test_train_graph.py's graph cfg
# (batch norm, whose rolling statistics change in every pass, a shortcut, a route, dropout)
# at half the width.
LENET_CFG = SMALL_CFG.replace("steps=100,150", "steps=60,130")
GRAPH_CFG = GRAPH.replace("filters=8", "filters=4")
assert LENET_CFG != SMALL_CFG and GRAPH_CFG != GRAPH

CFGS = {"lenet": LENET_CFG, "graph": GRAPH_CFG}
BATCHES = 160               # 125 to an epoch of the sample: the runs cross an epoch's end
OPTIONS = dict(max_batches=BATCHES, ema=0.9, seed=7)
ARGS = ["--data", str(SAMPLE), "--max-batches", str(BATCHES), "--ema", "0.9", "--seed", "7"]
OFTEN = ["--checkpoint-every", "0.001"]
needs_processes = pytest.mark.skipif(not PROCESSES_AVAILABLE,
                                     reason="worker processes need memfd_create (Linux)")


@pytest.fixture(scope="module")
def cfgs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cfgs")
    for name, text in CFGS.items():
        (folder / f"{name}.cfg").write_text(text)
    return folder


@pytest.fixture(scope="module")
def uninterrupted(cfgs, sample, tmp_path_factory):
    """uninterrupted(name, threads) -> {file name: bytes} of a run never stopped."""
    runs = {}

    def run(name: str, threads: int) -> dict[str, bytes]:
        if (name, threads) not in runs:
            out = tmp_path_factory.mktemp(f"whole-{name}-{threads}")
            Trainer(parse_network(cfgs / f"{name}.cfg"), sample,
                    TrainOptions(out=out, threads=threads, **OPTIONS)).run()
            runs[name, threads] = _results(out, name)
        return runs[name, threads]
    return run


def _results(out, name) -> dict[str, bytes]:
    return {kind: (out / f"{name}_{kind}.weights").read_bytes() for kind in ("final", "ema")}


def _train(cfg, out, threads, *extra, **popen):
    return subprocess.Popen([sys.executable, "-m", "darkbp", "train", str(cfg), *ARGS,
                             "--out", str(out), "--threads", str(threads), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def _checkpointed(state) -> int:
    """The batch number of the checkpoint in `state`, -1 before the first."""
    try:
        with np.load(state) as npz:
            return int(npz["batch_num"])
    except FileNotFoundError:
        return -1


def _freeze_at(run, state, batch: int) -> int:
    """Wait until `run` has a checkpoint of `batch` or later, then SIGSTOP it; the batch of
    the checkpoint it has then."""
    deadline = time.monotonic() + 120
    while _checkpointed(state) < batch:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no checkpoint of that batch within 2 minutes"
        time.sleep(0.002)
    os.kill(run.pid, signal.SIGSTOP)
    done = _checkpointed(state)
    assert done < BATCHES, "the run ended before it could be stopped"
    return done


def _finish(run, code: int = 0) -> str:
    """Wait for `run`, check its exit code; its stderr."""
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == code, stderr
    assert "Traceback" not in stderr
    return stderr


@pytest.mark.parametrize("how, name, threads", [
    pytest.param(signal.SIGINT, "lenet", 1, id="SIGINT-lenet-1"),
    pytest.param(signal.SIGTERM, "graph", 2, id="SIGTERM-graph-2", marks=needs_processes),
    pytest.param(signal.SIGKILL, "lenet", 1, id="SIGKILL-lenet-1"),
])
def test_a_signal_at_a_random_batch_then_resume_gives_the_same_weights(
        tmp_path, cfgs, uninterrupted, how, name, threads):
    batch = int(np.random.default_rng([19, how, threads]).integers(10, 100))
    cfg, state = cfgs / f"{name}.cfg", tmp_path / f"{name}_last.state.npz"
    run = _train(cfg, tmp_path, threads, *OFTEN)
    done = _freeze_at(run, state, batch)
    os.kill(run.pid, how)
    os.kill(run.pid, signal.SIGCONT)
    if how == signal.SIGKILL:
        run.communicate(timeout=60)
    else:
        stderr = _finish(run, 128 + how)
        lines = [line for line in stderr.splitlines() if line.startswith("darkbp: stopped")]
        stopped = _checkpointed(state)          # the update under way finished, then this
        assert done <= stopped < BATCHES
        label = "Ctrl-C (SIGINT)" if how == signal.SIGINT else "SIGTERM"
        assert len(lines) == 1 and lines[0].startswith(
            f"darkbp: stopped by {label} after batch {stopped} of {BATCHES}; the checkpoint "
            f"of batch {stopped} is in {state}. To go on: darkbp train {cfg} ")
        assert lines[0].endswith(" --resume")
    assert not (tmp_path / f"{name}_final.weights").exists()

    _finish(_train(cfg, tmp_path, threads, "--resume"))
    assert _results(tmp_path, name) == uninterrupted(name, threads)


@needs_processes
def test_a_worker_killed_at_a_random_batch_changes_no_bit(tmp_path, cfgs, uninterrupted):
    batch = int(np.random.default_rng(21).integers(10, 100))
    run = _train(cfgs / "graph.cfg", tmp_path, 2, *OFTEN)
    _freeze_at(run, tmp_path / "graph_last.state.npz", batch)
    with open(f"/proc/{run.pid}/task/{run.pid}/children") as children:
        worker = int(children.read().split()[0])
    os.kill(worker, signal.SIGKILL)
    os.kill(run.pid, signal.SIGCONT)
    stderr = _finish(run)
    notices = [line for line in stderr.splitlines() if "worker process stopped" in line]
    assert len(notices) == 1
    assert "(exit code -9, SIGKILL); a new one took its place and" in notices[0]
    assert _results(tmp_path, "graph") == uninterrupted("graph", 2)


@needs_processes
def test_a_worker_killed_between_subdivisions_changes_no_bit(tmp_path, cfgs, sample,
                                                             uninterrupted):
    # Subdivision 0 of batch 40 has added its gradients and moved the batch-norm rolling
    # statistics when the worker dies: the batch is run again from before both.
    notices = []
    listener = TrainListener()
    listener.notice = notices.append
    trainer = Trainer(parse_network(cfgs / "graph.cfg"), sample,
                      TrainOptions(out=tmp_path, threads=2, **OPTIONS), listener)
    step = trainer.runner.train_step

    def killing(x, truth, noise):
        if (noise.batch_num, noise.subdivision) == (39, 1) and not notices:
            worker = trainer.runner.workers[0].process
            worker.kill()
            worker.wait()
        return step(x, truth, noise)
    trainer.runner.train_step = killing
    trainer.run()
    assert notices == ["a worker process stopped in batch 40 (exit code -9, SIGKILL); a new "
                       "one took its place and batch 40 was run again"]
    assert _results(tmp_path, "graph") == uninterrupted("graph", 2)


def _file_size_limit(size: int):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


def test_a_full_disk_keeps_the_last_checkpoint_and_exits_1(tmp_path, cfgs, uninterrupted):
    cfg, state = cfgs / "lenet.cfg", tmp_path / "lenet_last.state.npz"
    _finish(_train(cfg, tmp_path, 1, "--max-batches", "30"))      # the last --max-batches wins
    before = state.read_bytes()
    # Every file may grow to just below the state's size: the .weights and the log are
    # written, the next state is not.
    run = _train(cfg, tmp_path, 1, "--resume", "--checkpoint-every", "0",
                 preexec_fn=_file_size_limit(len(before) - 1))
    stderr = _finish(run, 1)
    assert stderr.splitlines()[-1] == (
        f"darkbp: error: cannot write {state}: File too large; the last good checkpoint, "
        f"{state} (batch 30), is kept: go on with --resume once {tmp_path} takes files again")
    assert state.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))

    _finish(_train(cfg, tmp_path, 1, "--resume"))
    assert _results(tmp_path, "lenet") == uninterrupted("lenet", 1)


class _StopAt(TrainListener):
    """Asks for a stop after update `batch`: `request_stop`, or a real signal to this process."""

    def __init__(self, batch: int, request=None):
        self.at, self.request = batch, request
        self.saved_batches = []

    def start(self, trainer):
        self.trainer = trainer

    def batch(self, report):
        if report.batch_num == self.at:
            self.request(self.trainer)

    def saved(self, paths):
        self.saved_batches.append(self.trainer.batch_num)


@pytest.mark.parametrize("threads", [1, pytest.param(2, marks=needs_processes)])
@pytest.mark.parametrize("name", ["lenet", "graph"])
def test_resume_from_a_mid_epoch_stop_is_bit_for_bit(tmp_path, cfgs, sample, uninterrupted,
                                                     name, threads):
    at, saves = {"lenet": (37, [37]), "graph": (131, [125, 131])}[name]    # epoch 1, epoch 2
    listener = _StopAt(at, Trainer.request_stop)
    stopped = Trainer(parse_network(cfgs / f"{name}.cfg"), sample,
                      TrainOptions(out=tmp_path, threads=threads, **OPTIONS), listener)
    stopped.run()
    assert stopped.stopped and stopped.batch_num == at
    assert listener.saved_batches == saves
    resumed = Trainer(parse_network(cfgs / f"{name}.cfg"), sample,
                      TrainOptions(out=tmp_path, threads=threads, resume=True, **OPTIONS))
    resumed.run()
    assert _results(tmp_path, name) == uninterrupted(name, threads)


def test_checkpoints_every_so_often_and_at_each_epoch_end(tmp_path, cfgs, sample):
    def saves(every: float) -> list[int]:
        listener = _StopAt(0)
        Trainer(parse_network(cfgs / "lenet.cfg"), sample,
                TrainOptions(out=tmp_path / str(every), max_batches=130,
                             checkpoint_every=every), listener).run()
        return listener.saved_batches
    assert saves(300) == [125, 130]             # epoch 1's end, the run's end
    assert saves(0) == list(range(1, 131))


def test_a_second_signal_stops_at_once_and_keeps_the_checkpoint_before(tmp_path, cfgs, sample):
    def two_signals(trainer):
        os.kill(os.getpid(), signal.SIGINT)     # the handler runs before kill returns
        os.kill(os.getpid(), signal.SIGINT)
    options = TrainOptions(out=tmp_path, checkpoint_every=0, **OPTIONS)
    trainer = Trainer(parse_network(cfgs / "lenet.cfg"), sample, options, _StopAt(50, two_signals))
    stop, before = _Stop(), signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), _stop_on_signals(trainer, stop):
        trainer.run()
    assert stop.signal == signal.SIGINT
    assert trainer.saved_batch == _checkpointed(tmp_path / "lenet_last.state.npz") == 49
    assert signal.getsignal(signal.SIGINT) is before
