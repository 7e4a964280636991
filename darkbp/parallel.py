"""Running a network on several CPU cores: the batch is split, not the matrix products.

NumPy runs element-wise work (im2col, pooling, activations) on one core, and
at batch 64 the matrix products are too small for BLAS threads to pay off.
So with `threads` > 1 a `Runner` splits each batch into `threads` equal
shards: the calling thread runs the first through the network itself, and
`threads` − 1 workers run the others at the same time, each through its own
copy of the layers that shares the network's parameters but has its own
gradients and caches, on a single-threaded BLAS. The workers' gradients are
then added into the network's own, so the update sees the gradient of the
whole batch, as Darknet's does.

A worker is a process where the system allows (Linux: parameters and the
workers' gradients live in one block of memory shared with them, created with
memfd_create; shards and results travel over a socket), else a thread. Threads
share the interpreter's lock, which each holds between NumPy's calls, and a
small network's pass is hundreds of short calls: two threads ran grouped.cfg's
training ~1.15x as fast as one thread, two processes run it ~1.9x as fast.

A detector's shards are split the same way, each with its images' boxes (a Truth's
slice): its heads' deltas are per image. What Darknet prints beside the loss, each head's
cost and statistics line, is made of sums over the images, which the workers send back
with their cost (`Runner.head_numbers`). In evaluation (`Runner.head_outputs`) the workers
send back each head's output for their images.

Batch normalisation in training needs the statistics of the whole pass: with
worker processes each batch-norm layer adds up its per-channel sums across the
shards (the workers send theirs to the caller, which sends back the totals;
ops/batchnorm.py), and only the caller's shard updates the rolling statistics,
which live in the shared memory too. With thread workers a network with
`batch_normalize=1` is not split and uses `threads` BLAS threads instead.

Results with the same thread count are deterministic, and the same with
processes or threads; a different count sums in a different order (float
rounding), as any multi-threaded BLAS does.

A worker process that stops (killed, out of memory) is noticed at once: its end
of the socket closes, and the caller's next receive raises `WorkerDied` (after
every other worker has answered, so that each is ready for its next question).
`restart_stopped_workers` then starts a new process on the same shared memory,
and the caller (darkbp.train) runs the lost pass again.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import ctypes
import json
import mmap
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection

import numpy as np

from darkbp.errors import RunFailed
from darkbp.layers.base import Layer, grad_name
from darkbp.layers.head import summed_statistics
from darkbp.network import Network
from darkbp.passes import EVAL, PJREDDIE_EVAL, Noise, Pass
from darkbp.threads import default_threads, set_threads

# Worker processes need memfd_create (Linux) and passing descriptors to a child (POSIX).
PROCESSES_AVAILABLE = hasattr(os, "memfd_create") and os.name == "posix"
_ALIGN = 64  # bytes: every shared array starts on a cache line


class WorkerDied(RunFailed):
    """A worker process stopped (killed, out of memory) before it answered. The pass it
    was in is lost; `Runner.restart_stopped_workers` puts new processes in place."""

    def __init__(self, code: int):
        super().__init__(f"a darkbp worker process stopped ({exit_text(code)}); its message, "
                         "if any, is above. Run with --threads 1 to work without workers.")
        self.code = code


def exit_text(code: int) -> str:
    """'exit code 1', or for a signal 'exit code -9, SIGKILL'."""
    try:
        return f"exit code {code}" + (f", {signal.Signals(-code).name}" if code < 0 else "")
    except ValueError:
        return f"exit code {code}"


def keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks instead of returning them to the OS.

    Every training step frees and allocates the same multi-megabyte arrays;
    by default glibc unmaps each and the next step page-faults it back in,
    a few milliseconds per step. Harmless where glibc is absent.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 30)


def _bare(layer: Layer) -> Layer:
    """A shallow copy of `layer` without its per-call state (the `_` attributes)."""
    twin = copy.copy(layer)
    for name in [name for name in vars(twin) if name.startswith("_")]:
        delattr(twin, name)
    return twin


def replica(layer: Layer) -> Layer:
    """A copy of `layer` sharing its parameters and state, with its own gradients and caches."""
    twin = _bare(layer)
    for name in layer.param_names:
        setattr(twin, grad_name(name), np.zeros_like(getattr(layer, name)))
    return twin


def _copy_network(network: Network, copy_layer) -> Network:
    twin = copy.copy(network)
    twin.layers = [copy_layer(layer) for layer in network.layers]
    return twin


def _pass(network: Network, x: np.ndarray, truth: np.ndarray, ctx: Pass) -> float:
    """Forward, cost and backward, adding into the gradients; the summed cost of the images."""
    network.forward(x, ctx)
    cost = float(network.cost(truth).sum())
    network.backward(truth)
    return cost


def _take_input_size(network: Network, x: np.ndarray) -> None:
    """A worker's copy of the network resized to the caller's input x, if it differs
    (multi-scale training resizes the caller's network every few batches)."""
    if x.ndim == 4 and x.shape[2:] != network.input_shape[1:]:     # not (N, inputs)
        network.resize(x.shape[3], x.shape[2])


def _worker_pass(network: Network, x: np.ndarray, truth, ctx: Pass) -> tuple[float, list]:
    """A worker's shard at the caller's input size: its gradients start from zero (the
    caller adds them up). Its cost, and its heads' numbers."""
    network.zero_grads()
    _take_input_size(network, x)
    return _pass(network, x, truth, ctx), head_numbers(network, truth)


def head_outputs(network: Network, x: np.ndarray, pjreddie_batchnorm: bool = False
                 ) -> list[np.ndarray]:
    """Each detection head's output for the letterboxed inputs x (N, C, h, w), in order of
    the heads, in evaluation mode (`pjreddie_batchnorm`: batch norm as pjreddie's
    inference, see darkbp.passes.Pass). darkbp.detector re-exports it."""
    outputs = network.run(x, PJREDDIE_EVAL if pjreddie_batchnorm else EVAL)
    return [outputs[head.index] for head in network.heads]


def _worker_heads(network: Network, x: np.ndarray, pjreddie_batchnorm: bool
                  ) -> list[np.ndarray]:
    """A worker's shard of `Runner.head_outputs`, at the caller's input size."""
    _take_input_size(network, x)
    return head_outputs(network, x, pjreddie_batchnorm)


def head_numbers(network: Network, truth) -> list[tuple[float, dict]]:
    """Each detection head's Darknet cost and statistics sums over the pass just run."""
    return [(head.darknet_cost(truth), head.statistics(truth)) for head in network.heads]


def _add_numbers(mine: list, theirs: list) -> list:
    return [(cost + other_cost, summed_statistics([stats, other]))
            for (cost, stats), (other_cost, other) in zip(mine, theirs)]


def _gradients(network: Network) -> list[np.ndarray]:
    return [getattr(layer, grad_name(name)) for layer in network.layers
            for name in layer.param_names]


class Runner:
    """Forward and backward passes of `network` on `threads` cores (see the module doc).

    Create it after the network's parameters are allocated (`initialize`,
    `astype`): the workers share those arrays (with processes, the Runner
    moves them into shared memory), and the optimiser, EMA and weight loading
    all change them in place. `processes`: None picks processes where
    available, False forces threads. Close it when done (`close`, or `with`).
    """

    def __init__(self, network: Network, threads: int, processes: bool | None = None):
        self.network = network
        self.threads = max(1, int(threads))
        self.batch_norm = any(layer.batch_statistics for layer in network.layers)
        self.workers: list = []
        self.head_numbers: list[tuple[float, dict]] = []    # of the last training pass
        count = self.threads - 1
        if count and (PROCESSES_AVAILABLE if processes is None else processes):
            try:
                # Polling while waiting pays only when no process waits for a core.
                spin = SPIN_SECONDS if self.threads <= default_threads() else 0.0
                self.workers = _start_processes(network, count, spin)
            except OSError:              # no interpreter to start (an embedded Python): threads
                pass
        if count and not self.workers and not self.batch_norm:
            self.workers = _start_threads(network, count)
        self.split = bool(self.workers)
        set_threads(1 if self.split else self.threads)
        keep_freed_memory()

    def close(self) -> None:
        """Stop the workers; from then on everything runs in the calling thread (the network
        keeps its parameters)."""
        for worker in self.workers:
            worker.close()
        self.workers = []
        self.split = False

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (none when the workers are threads)."""
        return [worker.process.pid for worker in self.workers if hasattr(worker, "process")]

    def restart_stopped_workers(self) -> list[int]:
        """Start a new process in place of each worker process that has stopped; their exit
        codes. The parameters live in the shared memory, so a new worker starts from the
        network as it is; its gradients are zeroed by its first pass."""
        codes = []
        for worker in self.workers:
            code = worker.exit_code()
            if code is not None:
                worker.restart()
                codes.append(code)
        return codes

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _shards(self, count: int) -> list[slice]:
        bounds = np.linspace(0, count, min(self.threads, count) + 1).round().astype(int).tolist()
        return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def train_step(self, x: np.ndarray, truth, noise: Noise | None = None) -> float:
        """Forward, cost and backward of one training pass with `noise` (its random numbers);
        gradients are added into the network's. truth: (N, outputs), or a detector's Truth.

        Returns the summed cost over the images; a detector's heads' Darknet costs and
        statistics over the pass are then in `head_numbers`.
        """
        ctx = Pass.training(noise)
        # With batch norm every shard needs 2 images (a connected layer's statistics).
        if not self.split or (self.batch_norm and len(x) < 2 * self.threads):
            cost = _pass(self.network, x, truth, ctx)
            self.head_numbers = head_numbers(self.network, truth)
            return cost
        first, *rest = self._shards(len(x))
        busy = self.workers[:len(rest)]
        replies = [worker.train(x[part], truth[part], ctx.shard(part.start, len(x), None))
                   for worker, part in zip(busy, rest)]
        shards = _CallerShards(busy, len(x), first.stop - first.start)
        own = truth[first]
        with _answered(replies, busy):
            costs = [_pass(self.network, x[first], own, ctx.shard(first.start, len(x), shards))]
        numbers = head_numbers(self.network, own)
        for cost, theirs in _results(replies):
            costs.append(cost)
            numbers = _add_numbers(numbers, theirs)
        self.head_numbers = [(head.split_darknet_cost(cost, stats), stats)
                             for head, (cost, stats) in zip(self.network.heads, numbers)]
        mine = _gradients(self.network)
        for worker in busy:
            for grad, theirs in zip(mine, worker.gradients):
                grad += theirs
        return sum(costs)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Evaluation-mode forward pass -> (N, outputs)."""
        if not self.split or len(x) < 2 * self.threads:
            return self.network.forward(x, EVAL)
        return np.concatenate(self._evaluated(x, lambda part: self.network.forward(part, EVAL),
                                              lambda worker, part: worker.forward(part)))

    def head_outputs(self, x: np.ndarray, pjreddie_batchnorm: bool = False
                     ) -> list[np.ndarray]:
        """A detector's darkbp.detector.head_outputs for x (N, C, h, w): each head's
        evaluation-mode output, split as `forward` splits. Evaluation-mode batch norm uses
        the rolling statistics, so the shards are independent."""
        if not self.split or len(x) < 2 * self.threads:
            return head_outputs(self.network, x, pjreddie_batchnorm)
        shards = self._evaluated(
            x, lambda part: head_outputs(self.network, part, pjreddie_batchnorm),
            lambda worker, part: worker.head_outputs(part, pjreddie_batchnorm))
        return [np.concatenate(per_head) for per_head in zip(*shards)]

    def _evaluated(self, x: np.ndarray, own, ask) -> list:
        """An evaluation pass split into shards: each worker asked for its shard
        (`ask(worker, part)`, a reply) while this process runs the first (`own(part)`);
        every shard's result, in the order of x."""
        first, *rest = self._shards(len(x))
        busy = self.workers[:len(rest)]
        replies = [ask(worker, x[part]) for worker, part in zip(busy, rest)]
        with _answered(replies, busy):
            mine = own(x[first])
        return [mine, *_results(replies)]


@contextlib.contextmanager
def _answered(replies: list, workers: list):
    """If the block fails, stop the workers' pass and wait for every reply before
    raising, so that each worker's next reply is to its next question."""
    try:
        yield
    except BaseException:
        for worker in workers:
            worker.abort()
        for reply in replies:
            try:
                reply.result()
            except Exception:  # noqa: BLE001, S110  (the block's error is the one to raise)
                pass
        raise


def _results(replies: list) -> list:
    """Every reply's result, in order; the first worker error is raised once all have answered."""
    results, error = [], None
    for reply in replies:
        try:
            results.append(reply.result())
        except Exception as caught:  # noqa: BLE001  (re-raised below, after the others answer)
            error = error or caught
    if error is not None:
        raise error
    return results


# ---------------------------------------------------------------- threads

class _ThreadWorker:
    """A replica of the network run on a pool thread."""

    def __init__(self, network: Network, pool: ThreadPoolExecutor):
        self.network = _copy_network(network, replica)
        self.gradients = _gradients(self.network)
        self.pool = pool

    def _submit(self, work, *args):
        # In a copy of the caller's context, so that np.errstate reaches the thread.
        return self.pool.submit(contextvars.copy_context().run, work, *args)

    def train(self, x, truth, ctx: Pass):
        """Its shard of a training pass (batch norm, which needs `ctx.shards`, is never split
        on threads)."""
        return self._submit(_worker_pass, self.network, x, truth, ctx)

    def forward(self, x):
        return self._submit(self.network.forward, x, EVAL)

    def head_outputs(self, x, pjreddie_batchnorm: bool):
        return self._submit(_worker_heads, self.network, x, pjreddie_batchnorm)

    def abort(self) -> None:
        """Nothing to stop: a thread never waits for the caller in a pass."""

    def exit_code(self) -> None:
        """A thread never stops on its own."""

    def close(self) -> None:
        self.pool.shutdown()


def _start_threads(network: Network, count: int) -> list[_ThreadWorker]:
    pool = ThreadPoolExecutor(count)
    return [_ThreadWorker(network, pool) for _ in range(count)]


# ---------------------------------------------------------------- processes

class _SharedArrays:
    """One block of memory for arrays shared with worker processes, laid out up front.

    `add(shape, dtype)` reserves an array and returns its place; `create()`
    makes the block (an anonymous memfd, zero-filled) and `view(place)` an
    array on it. A child maps the same block from the inherited descriptor
    (`attached`).
    """

    def __init__(self):
        self.size = 0

    @classmethod
    def attached(cls, fd: int, size: int) -> "_SharedArrays":
        shared = cls()
        shared.size, shared.memory = size, mmap.mmap(fd, size)
        return shared

    def add(self, shape: tuple, dtype) -> tuple:
        place = (self.size, tuple(shape), np.dtype(dtype).str)
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.size += -(-nbytes // _ALIGN) * _ALIGN
        return place

    def create(self) -> None:
        """Make the block. Its descriptor stays open, for workers started later in place of
        stopped ones, until this object is collected (the arrays hold the mapping itself)."""
        self.size = max(self.size, 1)   # a network without parameters still maps something
        self.fd = os.memfd_create("darkbp-shared", 0)
        weakref.finalize(self, os.close, self.fd)
        os.ftruncate(self.fd, self.size)
        self.memory = mmap.mmap(self.fd, self.size)

    def view(self, place: tuple) -> np.ndarray:
        offset, shape, dtype = place
        return np.frombuffer(self.memory, dtype, int(np.prod(shape)), offset).reshape(shape)


def _blueprint(layer: Layer) -> Layer:
    """A copy of `layer` with no arrays: what a worker process is sent to build its own."""
    twin = _bare(layer)
    for name in (*layer.param_names, *layer.state_names, *map(grad_name, layer.param_names)):
        setattr(twin, name, None)
    return twin


def _start_processes(network: Network, count: int, spin: float) -> list["_ProcessWorker"]:
    """Move the network's parameters and state into shared memory and start `count`
    worker processes, each with its gradients there too."""
    shared = _SharedArrays()
    values = [(i, name, shared.add(getattr(layer, name).shape, network.dtype))
              for i, layer in enumerate(network.layers)
              for name in (*layer.param_names, *layer.state_names)]
    grads = [[(i, grad_name(name), shared.add(getattr(layer, name).shape, network.dtype))
              for i, layer in enumerate(network.layers) for name in layer.param_names]
             for _ in range(count)]
    shared.create()
    for i, name, place in values:
        view = shared.view(place)
        view[...] = getattr(network.layers[i], name)
        setattr(network.layers[i], name, view)
    blueprint = _copy_network(network, _blueprint)
    workers: list[_ProcessWorker] = []
    try:
        for mine in grads:
            workers.append(_ProcessWorker(shared, blueprint, values, mine, spin))
    except OSError:
        for worker in workers:
            worker.close()
        raise
    return workers


# The child imports darkbp from where the parent did: it takes the parent's sys.path (as
# multiprocessing's spawn does).
_SERVE = ("import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
          "from darkbp.parallel import serve; serve(*map(int, sys.argv[2:]))")


class _ProcessWorker:
    """A worker process (see `serve` for what they say to each other), and the parent's
    views of its gradients."""

    def __init__(self, shared: _SharedArrays, blueprint: Network, values: list, grads: list,
                 spin: float):
        """values: (layer index, name, place) of the shared parameters and state; grads:
        the same for this worker's gradients."""
        self.shared, self.blueprint, self.places = shared, blueprint, values + grads
        self.spin = spin
        self.gradients = [shared.view(place) for _, _, place in grads]
        self._start()

    def _start(self) -> None:
        """Start the process and send it the network to build on the shared memory."""
        mine, theirs = socket.socketpair()
        environment = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                           MKL_NUM_THREADS="1")
        # Its own session: a Ctrl-C at the terminal goes to the parent, which stops it.
        shared = self.shared
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, json.dumps(sys.path),
             str(theirs.fileno()), str(shared.fd), str(shared.size)],
            pass_fds=(theirs.fileno(), shared.fd), env=environment, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        theirs.close()
        self.connection = Connection(mine.detach())
        self.connection.send((self.blueprint, self.places, self.spin))
        self.early = None               # its reply, when it came in place of a sum
        self._finalizer = weakref.finalize(self, _stop, self.process, self.connection)

    def exit_code(self) -> int | None:
        """None while the process runs, else how it ended."""
        return self.process.poll()

    def restart(self) -> None:
        """A new process in place of this one, which has stopped."""
        self._finalizer()
        self._start()

    def _send(self, message, tag: bytes | None = None) -> None:
        """`message` pickled, or with a tag, the tag and the array `message`'s bytes."""
        try:
            if tag is None:
                self.connection.send(message)
            else:
                _send_tagged(self.connection, tag, message)
        except OSError:
            pass                        # it has exited: the next receive says how

    def _receive(self) -> bytes:
        try:
            return _receive(self.connection, self.spin)
        except (EOFError, OSError):
            raise WorkerDied(_stop(self.process, self.connection)) from None

    def train(self, x, truth, ctx: Pass) -> "_Reply":
        """Its shard of a training pass (ctx: the shard's context, without its shards)."""
        self._send(("train", np.geterr(), x, truth, ctx))
        return _Reply(self)

    def forward(self, x) -> "_Reply":
        self._send(("forward", np.geterr(), x))
        return _Reply(self)

    def head_outputs(self, x, pjreddie_batchnorm: bool) -> "_Reply":
        self._send(("heads", np.geterr(), x, pjreddie_batchnorm))
        return _Reply(self)

    def partial(self, like: np.ndarray) -> np.ndarray:
        """Its sums (shaped as `like`) for the batch norm the pass is at; raises its error
        if it failed instead."""
        data = self._receive()
        if data[:1] == _SUM:
            return np.frombuffer(data, like.dtype, like.size, 1).reshape(like.shape)
        self.early = _, ok, value = pickle.loads(data)
        raise value if not ok else RuntimeError("a darkbp worker ended a pass before its sums")

    def send_total(self, total: np.ndarray) -> None:
        self._send(total, _TOTAL)

    def abort(self) -> None:
        """Stop its pass where it waits for a total (nothing, if it is past that)."""
        self._send(None, _ABORT)

    def close(self) -> None:
        self._finalizer()


class _Reply:
    def __init__(self, worker: _ProcessWorker):
        self.worker = worker

    def result(self):
        worker = self.worker
        message, worker.early = worker.early, None
        while message is None:
            data = worker._receive()
            if data[:1] != _SUM:                         # else: sums of an aborted pass
                message = pickle.loads(data)
        _, ok, value = message
        if not ok:
            raise value
        return value


class _Aborted(Exception):
    """A worker's pass stopped because the caller's failed."""


class _CallerShards:
    """The batch-norm sums of the caller's shard (see ops/batchnorm.Shards): it adds the
    workers' sums to its own, in order, and sends each worker the totals."""

    update_state = True

    def __init__(self, workers: list, images: int, own_images: int):
        self.workers, self.images, self.own_images = workers, images, own_images

    def total(self, sums: np.ndarray) -> np.ndarray:
        total = sums.copy()
        for worker in self.workers:
            total += worker.partial(sums)
        for worker in self.workers:
            worker.send_total(total)
        return total


class _WorkerShards:
    """The batch-norm sums of a worker's shard: sent to the caller, which returns the totals."""

    update_state = False

    def __init__(self, connection: Connection, spin: float):
        self.connection, self.spin = connection, spin
        self.images = self.own_images = 0

    def total(self, sums: np.ndarray) -> np.ndarray:
        _send_tagged(self.connection, _SUM, sums)
        data = _receive(self.connection, self.spin)
        if data[:1] != _TOTAL:                           # an abort, or None: the caller closes
            raise _Aborted()
        return np.frombuffer(data, sums.dtype, sums.size, 1).reshape(sums.shape)


# Between the caller and a worker, messages are pickled (their first byte is b"\x80"),
# except batch norm's sums and totals and the abort, which are a one-byte tag and the
# array's raw bytes: a third of a pickled exchange's cost. And whoever waits polls for up
# to SPIN_SECONDS before it sleeps in the receive, so that a reply due within microseconds
# does not wait for the system to wake the process (~70 -> ~12 us a round trip) - unless
# there are more processes than cores, where the poller would hold up the one it waits for.
_SUM, _TOTAL, _ABORT = b"S", b"T", b"A"
SPIN_SECONDS = 0.0005


def _send_tagged(connection: Connection, tag: bytes, array: np.ndarray | None) -> None:
    connection.send_bytes(tag if array is None else tag + array.tobytes())


def _receive(connection: Connection, spin: float) -> bytes:
    """The next message's bytes, polling for up to `spin` seconds first (raises EOFError
    when the other side has gone)."""
    deadline = time.perf_counter() + spin
    while not connection.poll(0) and time.perf_counter() < deadline:
        pass
    return connection.recv_bytes()


def _stop(process: subprocess.Popen, connection: Connection) -> int:
    """Ask a worker to exit, wait for it (kill it after 5 s); its exit code."""
    try:
        connection.send(None)
    except OSError:
        pass
    connection.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
    return process.wait()


def serve(connection_fd: int, shared_fd: int, size: int) -> None:
    """A worker process's loop: build the network on the shared memory, then run what
    the parent asks until it sends None or goes away.

    parent: ("train", errstate, x, truth, ctx)     ->  worker: ("done", True, (cost, heads))
            ("forward", errstate, x)               ->          ("done", True, y)
            ("heads", errstate, x, pjreddie_batchnorm)  ->     ("done", True, [y per head])
    or ("done", False, error) if that failed. Within a training pass, at each batch
    norm the worker sends ("sum", sums) and gets ("total", totals) or ("abort",).
    """
    connection = Connection(connection_fd)
    shared = _SharedArrays.attached(shared_fd, size)
    os.close(shared_fd)
    set_threads(1)
    keep_freed_memory()
    network, places, spin = connection.recv()
    for i, name, place in places:
        setattr(network.layers[i], name, shared.view(place))
    shards = _WorkerShards(connection, spin)
    while True:
        try:
            data = _receive(connection, spin)
        except (EOFError, OSError):
            return
        if data[:1] in (_TOTAL, _ABORT):
            continue                    # for a pass this worker has ended
        message = pickle.loads(data)
        if message is None:
            return
        kind, *args = message
        errstate, x, *rest = args
        try:
            with np.errstate(**errstate):
                if kind == "train":
                    truth, ctx = rest
                    shards.images, shards.own_images = ctx.images, len(x)
                    ctx = ctx.shard(ctx.offset, ctx.images, shards)
                    reply = ("done", True, _worker_pass(network, x, truth, ctx))
                elif kind == "heads":
                    reply = ("done", True, _worker_heads(network, x, *rest))
                else:
                    reply = ("done", True, network.forward(x, EVAL))
        except Exception as error:  # noqa: BLE001  (handed to the parent, which raises it)
            reply = ("done", False, error)
        try:
            connection.send(reply)
        except OSError:
            return
        except Exception:  # noqa: BLE001  (an error that does not pickle: send its text)
            connection.send(("done", False, RuntimeError(f"in a darkbp worker: {reply[2]!r}")))
