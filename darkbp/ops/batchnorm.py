"""Batch normalisation per channel over the batch and the pixels, forward and backward.

x: (N, C, P) — a conv's (N, F, OH·OW) or a connected layer's (N, outputs, 1).
Training: over the M = N·P values of a channel, the mean and Darknet's
*unbiased* variance var = Σ(x − mean)²/(M − 1) (both Darknets normalise with
it), x̂ = (x − mean)/sqrt(var + eps), y = scales·x̂.  Darknet's own forward
divides by sqrt(var) + 1e-6 instead, and its backward differentiates neither
that nor the formula here (it takes sqrt(var + 1e-5) and 1/M where the forward
has 1/(M − 1)); darkbp uses the one formula above in both directions, so the
gradient is exact (SPEC §3).  The rolling statistics are updated in place as
Darknet does: rolling = 0.99·rolling + 0.01·batch, with the same unbiased
variance.  Evaluation uses the rolling statistics, (x − rolling_mean)/
sqrt(rolling_variance + eps), and updates nothing.  The layer's bias, the
shift, is added by the caller.

A pass split into shards that run at once (darkbp/parallel.py) still
normalises with the statistics of the whole pass: given `shards`, each
per-channel sum over the local values (Σx, then Σ(x − mean)², and in backward
Σdy and Σdy·x̂) is replaced by its total over all shards, `shards.total(sum)`,
and M counts the values of every shard.  Only the shard that says
`shards.update_state` updates the rolling statistics.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

MOMENTUM = 0.01  # Darknet: rolling = .99·rolling + .01·batch statistic


class Shards(Protocol):
    """The other shards of a split pass, seen from one of them (see the module doc)."""

    images: int              # in the whole pass
    own_images: int          # in this shard
    update_state: bool       # this shard updates the rolling statistics

    def total(self, sums: np.ndarray) -> np.ndarray:
        """The sum over every shard of each one's `sums` (same shape, dtype)."""


class BatchnormCache(NamedTuple):
    """What batchnorm_backward needs from batchnorm_forward."""

    x_hat: np.ndarray        # (N, C, P) normalised input
    inv_std: np.ndarray      # (C,) 1/sqrt(var + eps), batch (train) or rolling (eval) variance
    scales: np.ndarray       # (C,)
    train: bool
    m: int                   # values per channel in the whole pass (train)
    shards: Shards | None    # the forward's


def eval_inv_std(rolling_variance: np.ndarray, eps: float, pjreddie: bool) -> np.ndarray:
    """(C,) the inference's 1/sqrt(var + eps) (darkbp's, AlexeyAB's), or with `pjreddie`
    1/(sqrt(var) + 1e-6): pjreddie's Darknet's inference (normalize_cpu), float32 as its
    sqrtf(var) + .000001f. The two differ by ~1e-3 of a detector's outputs when the
    variances are small; pjreddie's is infinite at var = 0."""
    if pjreddie:
        return 1 / (np.sqrt(rolling_variance) + rolling_variance.dtype.type(1e-6))
    return 1 / np.sqrt(rolling_variance + eps)


def batchnorm_forward(x: np.ndarray, scales: np.ndarray, rolling_mean: np.ndarray,
                      rolling_variance: np.ndarray, train: bool, eps: float = 1e-5,
                      shards: Shards | None = None, pjreddie: bool = False
                      ) -> tuple[np.ndarray, BatchnormCache]:
    """y = scales·(x − mean)/sqrt(var + eps) per channel; x (N, C, P) -> y (N, C, P), x's dtype.

    In training, mean/var are the batch's (unbiased var, M − 1) and rolling_mean /
    rolling_variance (C,) are updated in place; in evaluation they are used as is, and
    `pjreddie` divides by sqrt(var) + 1e-6 instead (eval_inv_std).
    """
    if x.ndim != 3:
        raise ValueError(f"batchnorm input must be (N, C, P), got shape {x.shape}")
    n, c, p = x.shape
    for name, a in (("scales", scales), ("rolling_mean", rolling_mean),
                    ("rolling_variance", rolling_variance)):
        if a.shape != (c,) or a.dtype != x.dtype:
            raise ValueError(f"batchnorm {name} is {a.dtype} {a.shape}, expected {x.dtype} ({c},)")
    m = n * p                # (N, C, P) may hold the images in N or in P (a CHWN batch)
    if shards is not None:
        m = m // shards.own_images * shards.images
    total = _total(shards)
    if train:
        if m < 2:
            raise ValueError("batch norm in training needs more than one value per channel "
                             f"(batch × pixels = {m})")
        # einsum sums over (N, P) about twice as fast as .mean(axis=(0, 2)).
        mean = total(np.einsum("ncp->c", x)) / m
        centred = x - mean[:, None]
        var = total(np.einsum("ncp,ncp->c", centred, centred)) / (m - 1)
        if shards is None or shards.update_state:
            rolling_mean *= 1 - MOMENTUM
            rolling_mean += MOMENTUM * mean
            rolling_variance *= 1 - MOMENTUM
            rolling_variance += MOMENTUM * var
        inv_std = 1 / np.sqrt(var + eps)
    else:
        centred = x - rolling_mean[:, None]
        inv_std = eval_inv_std(rolling_variance, eps, pjreddie)
    x_hat = centred
    x_hat *= inv_std[:, None]
    return scales[:, None] * x_hat, BatchnormCache(x_hat, inv_std, scales, train, m, shards)


def batchnorm_backward(dy: np.ndarray, cache: BatchnormCache) -> tuple[np.ndarray, np.ndarray]:
    """(dx (N, C, P), dscales (C,)): the exact gradient of the forward that made `cache`.

    Training: dx = scales·inv_std·(dy − Σdy/M − x̂·Σ(dy·x̂)/(M − 1)), sums over the
    M = N·P values (mean and variance depend on x too; the x̂ term's 1/(M − 1) is the
    unbiased variance's: ∂var/∂x = 2(x − mean)/(M − 1)).
    Evaluation: dx = scales·inv_std·dy.
    In a split pass the sums are over every shard, and dscales is this shard's part.
    """
    x_hat = cache.x_hat
    dscales = np.einsum("ncp,ncp->c", dy, x_hat)
    k = cache.scales * cache.inv_std                      # (C,)
    if not cache.train:
        return dy * k[:, None], dscales
    m, c = cache.m, len(dscales)
    sums = np.concatenate([dscales, np.einsum("ncp->c", dy)])
    sums = _total(cache.shards)(sums)                     # Σdy·x̂, Σdy over the whole pass
    dx = x_hat * (sums[:c] / (m - 1))[:, None]            # x̂·Σ(dy·x̂)/(M − 1)
    dx += (sums[c:] / m)[:, None]                         # + Σdy/M
    np.subtract(dy, dx, out=dx)
    dx *= k[:, None]
    return dx, dscales


def _total(shards: Shards | None):
    """Per-channel sums -> their totals over the pass: themselves when it is not split."""
    return (lambda sums: sums) if shards is None else shards.total
