"""Splitting a batch across workers (processes or threads) computes the whole batch's
gradient and output, and workers fail, stop and go away cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from darkbp.layers.base import grad_name
from darkbp.layers.softmax import SoftmaxLayer
from darkbp.network import parse_network
from darkbp.parallel import PROCESSES_AVAILABLE, Runner, WorkerDied, replica
from darkbp.passes import Pass
from darkbp.threads import default_threads, get_threads
from tests.conftest import CFG_DIR, ROOT

needs_processes = pytest.mark.skipif(not PROCESSES_AVAILABLE,
                                     reason="worker processes need memfd_create (Linux)")
KINDS = [pytest.param(True, id="processes", marks=needs_processes),
         pytest.param(False, id="threads")]


def _batch(network, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + network.input_shape).astype(network.dtype)
    truth = np.eye(network.outputs, dtype=network.dtype)[rng.integers(network.outputs, size=n)]
    return x, truth


def _grads(network):
    return {(i, name): getattr(layer, grad_name(name)).copy()
            for i, layer in enumerate(network.layers) for name in layer.param_names}


def test_replica_shares_parameters_not_gradients_or_caches():
    network = parse_network(CFG_DIR / "mnist.cfg").initialize(0, np.float64)
    x, _ = _batch(network, 2)
    network.forward(x, Pass.training())
    layer = network.layers[0]
    twin = replica(layer)
    assert twin.weights is layer.weights and twin.biases is layer.biases
    assert twin.weight_grads is not layer.weight_grads
    assert not [name for name in vars(twin) if name.startswith("_")]


@pytest.mark.parametrize("processes", KINDS)
@pytest.mark.parametrize("cfg", ["mnist.cfg", "grouped.cfg", "notes.cfg"])
@pytest.mark.parametrize("images", [2, 7, 64])
def test_split_gradients_equal_the_whole_batch(cfg, images, processes):
    network = parse_network(CFG_DIR / cfg).initialize(1, np.float64)
    x, truth = _batch(network, images)
    whole = Runner(network, 1)
    cost = whole.train_step(x, truth)
    expected = _grads(network)
    output = whole.forward(x)
    network.zero_grads()
    with Runner(network, 3, processes=processes) as split:   # 2 images: one worker idle
        assert split.split and len(split.workers) == 2
        assert len(split.pids) == (2 if processes else 0)
        assert split.train_step(x, truth) == pytest.approx(cost, rel=1e-12)
        for key, grad in _grads(network).items():
            np.testing.assert_allclose(grad, expected[key], rtol=1e-10, atol=1e-13,
                                       err_msg=str(key))
        # A second pass adds its gradient, as subdivisions do: the workers start each
        # pass from zero, the network's own gradients accumulate.
        split.train_step(x, truth)
        for key, grad in _grads(network).items():
            np.testing.assert_allclose(grad, 2 * expected[key], rtol=1e-10, atol=1e-13,
                                       err_msg=str(key))
        np.testing.assert_allclose(split.forward(x), output, rtol=1e-12)


@needs_processes
def test_processes_and_threads_give_identical_bits():
    results = []
    for processes in (True, False):
        network = parse_network(CFG_DIR / "grouped.cfg").initialize(2, np.float32)
        x, truth = _batch(network, 64)
        with Runner(network, 2, processes=processes) as runner:
            assert len(runner.pids) == processes
            cost = runner.train_step(x, truth)
            results.append((cost, _grads(network), runner.forward(x)))
    (cost_p, grads_p, out_p), (cost_t, grads_t, out_t) = results
    assert cost_p == cost_t
    for key in grads_p:
        np.testing.assert_array_equal(grads_p[key], grads_t[key], err_msg=str(key))
    np.testing.assert_array_equal(out_p, out_t)


@pytest.mark.parametrize("processes", KINDS)
def test_updates_reach_every_worker(processes):
    network = parse_network(CFG_DIR / "mnist.cfg").initialize(1, np.float64)
    with Runner(network, 2, processes=processes) as runner:
        x, _ = _batch(network, 8)
        before = runner.forward(x)
        network.layers[5].biases[3] += 5.0          # in place, as SGD, EMA and loading do
        after = runner.forward(x)                   # both shards see the raised logit
        assert (after[:, 3] > before[:, 3]).all()


def _state(network):
    return {(i, name): getattr(layer, name).copy()
            for i, layer in enumerate(network.layers) for name in layer.state_names}


@needs_processes
@pytest.mark.parametrize("images", [6, 7, 64])
def test_batch_norm_over_processes_uses_the_whole_pass_statistics(images):
    """Every shard normalises with the mean and variance of the whole pass, the backward
    with its whole-pass sums, and the rolling statistics are updated once."""
    whole = parse_network(CFG_DIR / "batchnorm.cfg").initialize(1, np.float64)
    x, truth = _batch(whole, images)
    cost = Runner(whole, 1).train_step(x, truth)
    network = parse_network(CFG_DIR / "batchnorm.cfg").initialize(1, np.float64)
    with Runner(network, 3) as split:
        assert split.split and len(split.pids) == 2 and get_threads() == 1
        assert split.train_step(x, truth) == pytest.approx(cost, rel=1e-12)
        for key, grad in _grads(whole).items():
            np.testing.assert_allclose(_grads(network)[key], grad, rtol=1e-10, atol=1e-12,
                                       err_msg=str(key))
        for key, state in _state(whole).items():
            np.testing.assert_allclose(_state(network)[key], state, rtol=1e-12, atol=1e-15,
                                       err_msg=str(key))
        # Evaluation splits too, with the rolling statistics the workers share.
        np.testing.assert_allclose(split.forward(x), whole.forward(x), rtol=1e-10, atol=1e-14)


@needs_processes
def test_batch_norm_over_processes_keeps_float32_and_small_passes_whole():
    network = parse_network(CFG_DIR / "batchnorm.cfg").initialize(0, np.float32)
    with Runner(network, 3) as runner:
        for images in (64, 5):                      # 5 < 2 per shard: one pass, in the caller
            x, truth = _batch(network, images)
            network.zero_grads()
            runner.train_step(x, truth)
            assert all(grad.dtype == np.float32 for grad in _grads(network).values())
            assert runner.forward(x).dtype == np.float32


def test_batch_norm_networks_on_threads_are_not_split_but_use_blas_threads():
    network = parse_network(CFG_DIR / "batchnorm.cfg").initialize(0, np.float32)
    runner = Runner(network, 2, processes=False)
    assert not runner.split and not runner.workers
    assert get_threads() == 2
    runner.close()
    runner = Runner(parse_network(CFG_DIR / "mnist.cfg").initialize(0, np.float32), 2,
                    processes=False)
    assert runner.split
    assert get_threads() == 1
    runner.close()


@needs_processes
def test_a_failed_batch_norm_pass_stops_every_shard_and_the_next_pass_is_right():
    whole = parse_network(CFG_DIR / "batchnorm.cfg").initialize(1, np.float64)
    x, truth = _batch(whole, 12)
    Runner(whole, 1).train_step(x, truth)
    network = parse_network(CFG_DIR / "batchnorm.cfg").initialize(1, np.float64)
    bad = x.copy()
    bad[-1] = np.inf                                # the last worker's shard: every mean is inf
    with Runner(network, 3) as runner:
        rolling = _state(network)
        with np.errstate(invalid="raise"), pytest.raises(FloatingPointError):
            runner.train_step(bad, truth)           # x̂ = (x − inf)·0 fails in every shard
        assert all(worker.process.poll() is None for worker in runner.workers)
        for (i, name), state in rolling.items():    # start again from where it was
            getattr(network.layers[i], name)[...] = state
        network.zero_grads()
        runner.train_step(x, truth)
        for key, grad in _grads(whole).items():
            np.testing.assert_allclose(_grads(network)[key], grad, rtol=1e-10, atol=1e-12,
                                       err_msg=str(key))


@pytest.mark.parametrize("processes", KINDS)
def test_an_error_in_a_worker_is_raised_by_the_caller_and_the_runner_goes_on(processes):
    network = parse_network(CFG_DIR / "mnist.cfg").initialize(0, np.float32)
    x, truth = _batch(network, 8)
    bad = x.copy()
    bad[-1] = np.inf                                # only the worker's shard: inf - inf in the pool
    with Runner(network, 2, processes=processes) as runner:
        with np.errstate(invalid="raise"):          # the caller's error state reaches the worker
            with pytest.raises(FloatingPointError):
                runner.forward(bad)
        with np.errstate(invalid="ignore"):
            assert np.isnan(runner.forward(bad)[-1]).all()
        np.testing.assert_array_equal(runner.forward(x)[-4:], network.forward(x[-4:]))
        network.zero_grads()
        assert np.isfinite(runner.train_step(x, truth))


class _CostFailsInWorkers(SoftmaxLayer):
    """A softmax whose cost fails in a worker process: a stand-in for any worker error."""

    def cost(self, truth):
        if os.getpid() != self.parent:
            raise ArithmeticError("the worker's cost failed")
        return super().cost(truth)


@needs_processes
def test_a_worker_error_while_the_caller_waits_for_its_sums_is_raised():
    """The worker fails between its forward and backward; the caller, waiting for its
    batch-norm sums in backward, gets the error instead, and the runner goes on."""
    network = parse_network(CFG_DIR / "batchnorm.cfg").initialize(1, np.float64)
    network.layers[-1].__class__ = _CostFailsInWorkers
    network.layers[-1].parent = os.getpid()
    x, truth = _batch(network, 12)
    with Runner(network, 3) as runner:
        with pytest.raises(ArithmeticError, match="the worker's cost failed"):
            runner.train_step(x, truth)
        assert all(worker.process.poll() is None for worker in runner.workers)
        np.testing.assert_allclose(runner.forward(x), network.forward(x), rtol=1e-10, atol=1e-14)


@needs_processes
@pytest.mark.parametrize("cfg", ["mnist.cfg", "batchnorm.cfg"])
def test_a_worker_that_dies_is_reported_not_waited_for_then_replaced(cfg):
    network = parse_network(CFG_DIR / cfg).initialize(0, np.float32)
    x, truth = _batch(network, 8)
    with Runner(network, 2) as runner:
        cost = runner.train_step(x, truth)
        expected = _grads(network)
        network.zero_grads()
        process = runner.workers[0].process
        process.kill()
        process.wait()
        with pytest.raises(WorkerDied, match=r"worker process stopped \(exit code -9, SIGKILL\)"):
            runner.train_step(x, truth)
        assert runner.restart_stopped_workers() == [-9]
        assert runner.workers[0].process.pid != process.pid
        assert runner.restart_stopped_workers() == []
        # The new worker computes its shard as the old one did, from the shared parameters.
        network.zero_grads()
        assert runner.train_step(x, truth) == cost
        for key, grad in _grads(network).items():
            np.testing.assert_array_equal(grad, expected[key], err_msg=str(key))


@needs_processes
def test_close_stops_the_worker_processes():
    network = parse_network(CFG_DIR / "mnist.cfg").initialize(0, np.float32)
    runner = Runner(network, 3)
    processes = [worker.process for worker in runner.workers]
    runner.forward(_batch(network, 8)[0])
    runner.close()
    assert [p.poll() for p in processes] == [0, 0]
    x, truth = _batch(network, 8)                   # then it runs in the caller, the whole batch
    assert not runner.split
    np.testing.assert_array_equal(runner.forward(x), network.forward(x))
    network.zero_grads()
    cost = runner.train_step(x, truth)
    assert cost == pytest.approx(float(network.cost(truth).sum()))
    assert all(layer.weight_grads.any() for layer in network.layers if layer.param_names)


@needs_processes
def test_workers_exit_when_their_parent_is_killed():
    script = textwrap.dedent(f"""
        import time
        from darkbp.network import parse_network
        from darkbp.parallel import Runner
        runner = Runner(parse_network({str(CFG_DIR / "mnist.cfg")!r}).initialize(0), 2)
        print(*runner.pids, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    worker = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, which its init parent has yet to reap, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


@needs_processes
def test_without_an_interpreter_to_start_the_workers_are_threads(monkeypatch):
    network = parse_network(CFG_DIR / "grouped.cfg").initialize(1, np.float64)
    x, truth = _batch(network, 8)
    expected = network.forward(x)
    monkeypatch.setattr(sys, "executable", str(ROOT / "no-such-python"))
    with Runner(network, 3) as runner:
        assert len(runner.workers) == 2 and not runner.pids
        np.testing.assert_allclose(runner.forward(x), expected, rtol=1e-12)


@needs_processes
def test_waits_poll_only_when_every_process_has_a_core():
    cores = default_threads()
    network = parse_network(CFG_DIR / "mnist.cfg").initialize(0, np.float32)
    for threads, polls in ((min(cores, 2), True), (cores + 1, False)):
        with Runner(network, threads) as runner:
            assert [worker.spin > 0 for worker in runner.workers] == [polls] * (threads - 1)
            x, truth = _batch(network, 8)
            np.testing.assert_allclose(runner.forward(x), network.forward(x), rtol=1e-6)
