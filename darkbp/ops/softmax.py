"""Grouped softmax with temperature, cross-entropy, and their joint gradient.

x: (N, n).  Each row is cut into `groups` equal contiguous slices and each
slice gets its own softmax of x/T, as Darknet's [softmax] groups= and
temperature= do.  Loss per image: −Σ truth·log p.
"""

from __future__ import annotations

import numpy as np


def _grouped(a: np.ndarray, groups: int) -> np.ndarray:
    """(N, n) -> (N, groups, n/groups) view."""
    n, width = a.shape
    if groups < 1 or width % groups:
        raise ValueError(f"softmax groups={groups} must divide the {width} inputs")
    return a.reshape(n, groups, width // groups)


def softmax_forward(x: np.ndarray, groups: int = 1, temperature: float = 1.0) -> np.ndarray:
    """p (N, n) = softmax(x/T) over each of `groups` slices of each row, in x's dtype."""
    z = _grouped(x, groups) / float(temperature)  # a NumPy float64 T would upcast float32 x
    z -= z.max(axis=2, keepdims=True)   # exp never overflows; the largest term is 1
    np.exp(z, out=z)
    z /= z.sum(axis=2, keepdims=True)
    return z.reshape(x.shape)


def cross_entropy(p: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image loss (N,) = −Σ truth·log p.

    Terms with truth = 0 contribute exactly 0 even where p = 0; a p that
    underflowed to 0 under a nonzero truth counts as the smallest normal
    number (a large finite loss, not inf or nan).  Elsewhere values are untouched.
    p: (N, n); truth: (N, n), taken in p's dtype.
    """
    tiny = np.finfo(p.dtype).tiny
    log_p = np.log(np.maximum(p, tiny))
    return -np.einsum("ij,ij->i", truth.astype(p.dtype, copy=False), log_p)


def softmax_cross_entropy_backward(p: np.ndarray, truth: np.ndarray, groups: int = 1,
                                   temperature: float = 1.0) -> np.ndarray:
    """dx (N, n): exact gradient of Σ_images −Σ truth·log softmax(x/T) w.r.t. x.

    Per group g: (p·S_g − truth)/T with S_g = Σ truth over the group; this is
    Darknet's (p − truth)/T when each group's truth sums to 1.  truth is
    taken in p's dtype.
    """
    pg, tg = _grouped(p, groups), _grouped(truth.astype(p.dtype, copy=False), groups)
    dx = pg * tg.sum(axis=2, keepdims=True)
    dx -= tg
    if temperature != 1:
        dx /= float(temperature)
    return dx.reshape(p.shape)
