"""[cost]'s costs: for each type, the cost whose exact gradient is the one Darknet applies.

p, truth: (N, n), truth in p's dtype; d = truth − p element by element. Darknet's
backward adds scale·delta into the previous layer's delta (src/cost_layer.c, src/blas.c);
scale·delta is −∂/∂p of the cost below, the one darkbp reports:

    sse     scale · ½d²                          gradient  scale · (p − t)
    masked  sse, but 0 where t == SECRET_NUM     gradient  0 there
    smooth  scale · ½d² if |d| < 1               gradient  scale · (p − t)
            scale · (|d| − ½) otherwise                    scale · sign(p − t)
    L1      scale · |d|                          gradient  scale · (+1 if p >= t else −1)

Darknet reports Σ d² for sse and masked and Σ (d² or 2|d| − 1) for smooth, twice these,
and Σ |d| for L1, all without the scale. L1's gradient at p == t is Darknet's (its delta
is d > 0 ? 1 : −1, so −1 there).
"""

from __future__ import annotations

import numpy as np

COST_TYPES = ("sse", "masked", "smooth", "L1")   # Darknet's names (strcmp: case matters)
SECRET_NUM = -1234.0   # include/darknet.h: a truth of this value means "no truth" (masked)


def _difference(p: np.ndarray, truth: np.ndarray, kind: str) -> np.ndarray:
    """d = truth − p, (N, n); masked: 0 where the truth is SECRET_NUM (Darknet sets p to it)."""
    d = truth - p
    if kind == "masked":
        d[truth == SECRET_NUM] = 0
    return d


def cost_forward(p: np.ndarray, truth: np.ndarray, kind: str, scale: float) -> np.ndarray:
    """Per-image cost (N,) of predictions p (N, n) against truth (N, n); see the module doc."""
    d = _difference(p, truth, kind)
    if kind == "L1":
        per_element = np.abs(d)
    elif kind == "smooth":
        a = np.abs(d)
        per_element = np.where(a < 1, 0.5 * d * d, a - 0.5)
    else:
        per_element = 0.5 * d * d
    return p.dtype.type(scale) * per_element.sum(axis=1)


def cost_gradient(p: np.ndarray, truth: np.ndarray, kind: str, scale: float) -> np.ndarray:
    """d(Σ_images cost)/dp, (N, n): scale times minus Darknet's delta."""
    d = _difference(p, truth, kind)
    if kind == "L1":
        grad = np.where(d > 0, -1, 1).astype(p.dtype)
    elif kind == "smooth":
        grad = np.where(np.abs(d) < 1, -d, np.where(d > 0, -1, 1).astype(p.dtype))
    else:
        grad = -d
    return grad * p.dtype.type(scale)
