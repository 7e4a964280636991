"""Running a network on several CPU threads: the batch is split, not the matrix products.

NumPy runs element-wise work (im2col, pooling, activations) on one thread, and
at batch 64 the matrix products are too small for BLAS threads to pay off.
So with `threads` > 1 a `Runner` splits each batch into `threads` equal
shards and runs them at once, each through its own replica of the layers
(sharing the parameters, with their own gradients and caches) and a
single-threaded BLAS; NumPy releases the GIL inside its loops. The shards'
gradients are added into the network's own, so the update sees the gradient of
the whole batch, as Darknet's does.

Batch normalisation in training needs the statistics of the whole forward
pass, so a network with `batch_normalize=1` runs unsplit, with `threads`
BLAS threads instead.

Results with the same thread count are deterministic; a different count sums
in a different order (float rounding), as any multi-threaded BLAS does.
"""

from __future__ import annotations

import contextvars
import copy
import ctypes
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from darkbp.layers.base import Layer, grad_name
from darkbp.network import Network
from darkbp.threads import set_threads


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


def replica(layer: Layer) -> Layer:
    """A copy of `layer` sharing its parameters and state, with its own gradients and caches."""
    twin = copy.copy(layer)
    for name in [name for name in vars(twin) if name.startswith("_")]:
        delattr(twin, name)
    for name in layer.param_names:
        setattr(twin, grad_name(name), np.zeros_like(getattr(layer, name)))
    return twin


class Runner:
    """Forward and backward passes of `network` on `threads` threads (see the module doc).

    Create it after the network's parameters are allocated (`initialize`,
    `astype`): replicas share those arrays, and the optimiser, EMA and
    weight loading all change them in place.
    """

    def __init__(self, network: Network, threads: int):
        self.network = network
        self.threads = max(1, int(threads))
        has_batch_norm = any(getattr(layer, "batch_normalize", False) for layer in network.layers)
        self.split = self.threads > 1 and not has_batch_norm
        self.replicas = [network] + [self._replica_network() for _ in range(self.threads - 1)]
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        set_threads(1 if self.split else self.threads)
        keep_freed_memory()

    def _replica_network(self) -> Network:
        twin = copy.copy(self.network)
        twin.layers = [replica(layer) for layer in self.network.layers]
        return twin

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def _shards(self, count: int) -> list[slice]:
        bounds = np.linspace(0, count, min(self.threads, count) + 1).round().astype(int)
        return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def train_step(self, x: np.ndarray, truth: np.ndarray) -> float:
        """Forward, cost and backward of one pass; gradients are added into the network's.

        Returns the summed cost over the images.
        """
        if not self.split:
            self.network.forward(x, train=True)
            cost = float(self.network.cost(truth).sum())
            self.network.backward(truth)
            return cost

        def work(index: int, part: slice) -> float:
            net = self.replicas[index]
            net.forward(x[part], train=True)
            cost = float(net.cost(truth[part]).sum())
            net.backward(truth[part])
            return cost

        shards = self._shards(len(x))
        costs = self._map(work, shards)
        for twin in self.replicas[1:len(shards)]:
            for layer, other in zip(self.network.layers, twin.layers):
                for name in layer.param_names:
                    grad, other_grad = getattr(layer, grad_name(name)), getattr(other, grad_name(name))
                    grad += other_grad
                    other_grad.fill(0)
        return sum(costs)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Evaluation-mode forward pass -> (N, outputs)."""
        if not self.split or len(x) < 2 * self.threads:
            return self.network.forward(x, train=False)
        return np.concatenate(self._map(
            lambda i, part: self.replicas[i].forward(x[part], train=False),
            self._shards(len(x))))

    def _map(self, work, shards: list[slice]) -> list:
        """work(i, shard) for every shard on the pool, each in a copy of the caller's context
        (so that settings such as np.errstate reach the worker threads)."""
        calls = [self.pool.submit(contextvars.copy_context().run, work, i, part)
                 for i, part in enumerate(shards)]
        return [call.result() for call in calls]
