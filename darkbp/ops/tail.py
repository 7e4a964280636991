"""Batch norm + bias + activation, forward and backward, fused in cache-sized channel blocks.

z: (A, F, B), the filters' values over the A·B images and pixels (darkbp/layers/affine.py).
The maths is ops/batchnorm.py's, followed by the bias and the activation:

    forward   x̂ = (z − mean)/sqrt(var + eps),  y = act(scales·x̂ + biases)
    backward  dz' = act'(y)·dy,  dbiases = Σdz',  dscales = Σdz'·x̂,
              dz = scales/sqrt(var + eps)·(dz' − Σdz'/M − x̂·Σ(dz'·x̂)/(M − 1))

What fusing changes is the memory traffic.  Unfused, each step is a pass of its own over
arrays of the layer's whole output (3 MB for 16 filters over 64 MNIST images), with a new
array for the biased values and one for the activation.  Here the output is written
over z, the activation runs in place, and nothing but x̂ and y is kept: not the
pre-activation (the activations here have act'(z) = act'(y) as a function of y, their
`from_output`), which saves a layer-sized array per batch-normalised layer.  Nor is y
kept where the activation is piecewise linear (leaky, relu, relu6, ...): its derivative takes
the same branch at y as at the pre-activation t = scales·x̂ + biases, which backward
makes again block by block, bit for bit, from x̂.  The output may then go as soon as
the next layer has read it (a [maxpool] keeps none of its input): 120 of the 400 MB
that cfg/yolo-digits.cfg holds from forward to backward at batch 64.  The
channels go a block of at most BLOCK values at a time, so that a block's steps find it
in cache; blocks smaller than a few MB measured no faster on this machine's 32 MB L3
and cost a NumPy call per step per block.

A pass split into shards (darkbp/parallel.py) needs the statistics of the whole pass
before it can normalise: then the blocks are gone over once for each sum that must be
exchanged (`shards.total`), and once more for the rest.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from darkbp.ops.activations import Activation
from darkbp.ops.batchnorm import MOMENTUM, Shards, eval_inv_std

BLOCK = 1 << 20   # values of a channel block: 4 MB in float32

# Activations whose backward(t, t, dy) equals backward(t, act(t), dy): piecewise linear,
# each piece chosen by the same test on t as on act(t) (tests/test_ops_tail.py checks it).
FROM_PRE_ACTIVATION = frozenset({"linear", "relu", "relie", "leaky", "hardtan", "relu6",
                                 "revleaky"})


class TailCache(NamedTuple):
    """What bn_tail_backward needs from bn_tail_forward."""

    x_hat: np.ndarray        # (A, F, B)
    y: np.ndarray | None     # (A, F, B), the output; None in FROM_PRE_ACTIVATION
    inv_std: np.ndarray      # (F,) 1/sqrt(var + eps) of the batch
    scales: np.ndarray       # (F,)
    biases: np.ndarray       # (F,)
    act: Activation
    m: int                   # values per channel in the whole pass
    shards: Shards | None


def fusable(act: Activation) -> bool:
    """Whether bn_tail_* can run `act`: its derivative follows from its output."""
    return act.from_output and act.in_place is not None


def _blocks(z: np.ndarray) -> list[slice]:
    """Channel slices of about BLOCK values each."""
    a, f, b = z.shape
    step = max(1, BLOCK // (a * b))
    return [slice(f0, min(f, f0 + step)) for f0 in range(0, f, step)]


def bn_tail_forward(z: np.ndarray, scales: np.ndarray, biases: np.ndarray,
                    rolling_mean: np.ndarray, rolling_variance: np.ndarray, act: Activation,
                    train: bool, shards: Shards | None = None, eps: float = 1e-5,
                    x_hat: np.ndarray | None = None, pjreddie: bool = False
                    ) -> tuple[np.ndarray, TailCache | None]:
    """act(scales·(z − mean)/sqrt(var + eps) + biases), written over z (which the caller
    gives up).  z: (A, F, B); the rest (F,), z's dtype.

    Training (batch statistics, rolling ones updated in place as batchnorm_forward does)
    also returns the cache, with x̂ in `x_hat` if it is given (an (A, F, B) buffer the
    caller reuses from call to call); evaluation uses the rolling statistics (divided as
    ops.batchnorm.eval_inv_std says: `pjreddie`), returns no cache, and allocates nothing.
    """
    blocks = _blocks(z)
    if not train:
        k = scales * eval_inv_std(rolling_variance, eps, pjreddie)
        shift = biases - rolling_mean * k
        for c in blocks:
            zc = z[:, c]
            zc *= k[c, None]
            zc += shift[c, None]
            act.in_place(zc)
        return z, None

    a, f, b = z.shape
    m = a * b
    if shards is not None:
        m = m // shards.own_images * shards.images
    if m < 2:
        raise ValueError("batch norm in training needs more than one value per channel "
                         f"(batch × pixels = {m})")
    if x_hat is None or x_hat.shape != z.shape or x_hat.dtype != z.dtype:
        x_hat = np.empty_like(z)
    mean = np.empty(f, z.dtype)
    var = np.empty(f, z.dtype)

    def centre(c):
        np.subtract(z[:, c], mean[c, None], out=x_hat[:, c])
        var[c] = np.einsum("acb,acb->c", x_hat[:, c], x_hat[:, c])

    if shards is None:                 # each block from start to end while it is in cache
        for c in blocks:
            mean[c] = np.einsum("acb->c", z[:, c]) / m
            centre(c)
            var[c] /= m - 1
            _normalise(z, x_hat, c, var, scales, biases, eps, act)
    else:                              # sums over every shard before each next step
        for c in blocks:
            mean[c] = np.einsum("acb->c", z[:, c])
        mean[:] = shards.total(mean) / m
        for c in blocks:
            centre(c)
        var[:] = shards.total(var) / (m - 1)
        for c in blocks:
            _normalise(z, x_hat, c, var, scales, biases, eps, act)
    if shards is None or shards.update_state:
        rolling_mean *= 1 - MOMENTUM
        rolling_mean += MOMENTUM * mean
        rolling_variance *= 1 - MOMENTUM
        rolling_variance += MOMENTUM * var
    inv_std = 1 / np.sqrt(var + eps)
    y = None if act.name in FROM_PRE_ACTIVATION else z
    return z, TailCache(x_hat, y, inv_std, scales, biases, act, m, shards)


def _normalise(z, x_hat, c, var, scales, biases, eps, act) -> None:
    """Block c: x̂ = (z − mean)·inv_std in x_hat (which holds z − mean), then
    z = act(scales·x̂ + biases)."""
    xc, zc = x_hat[:, c], z[:, c]
    xc *= (1 / np.sqrt(var[c] + eps))[:, None]
    np.multiply(xc, scales[c, None], out=zc)
    zc += biases[c, None]
    act.in_place(zc)


def bn_tail_backward(dy: np.ndarray, cache: TailCache) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """(dz, dbiases, dscales) from dy (A, F, B), the gradient at the output; dz is
    written over dy.  In a split pass dbiases and dscales are this shard's parts."""
    x_hat, y, act, m = cache.x_hat, cache.y, cache.act, cache.m
    f = dy.shape[1]
    blocks = _blocks(dy)
    sums = np.empty(2 * f, dy.dtype)        # Σdz'·x̂, then Σdz'
    k = cache.scales * cache.inv_std

    def activation(c) -> np.ndarray:        # dz' of block c, and its sums
        if act.name == "linear":
            yc = None                       # act' = 1
        elif y is None:                     # t = scales·x̂ + biases, as _normalise made it
            yc = x_hat[:, c] * cache.scales[c, None]
            yc += cache.biases[c, None]
        else:
            yc = y[:, c]
        dz = act.backward(yc, yc, dy[:, c])
        sums[c] = np.einsum("acb,acb->c", dz, x_hat[:, c])
        sums[f:][c] = np.einsum("acb->c", dz)
        return dz

    def normalise(c, dz, totals) -> None:   # dy[:, c] = k·(dz' − Σdz'/M − x̂·Σ(dz'·x̂)/(M − 1))
        t = x_hat[:, c] * (totals[c] / (m - 1))[:, None]
        t += (totals[f:][c] / m)[:, None]
        out = np.subtract(dz, t, out=dy[:, c])
        out *= k[c, None]

    if cache.shards is None:                # each block from start to end while it is in cache
        for c in blocks:
            normalise(c, activation(c), sums)
    else:                                   # the sums over every shard come first
        for c in blocks:
            dy[:, c] = activation(c)
        totals = cache.shards.total(sums.copy())
        for c in blocks:
            normalise(c, dy[:, c], totals)
    return dy, sums[f:], sums[:f]
