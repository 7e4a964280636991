"""Darknet's shortcut sum: alpha·prev + beta·src over the positions shortcut_cpu pairs up.

    plan = shortcut_plan(prev_shape, src_shape)       # per image (C, H, W); None: no pairing
    z = shortcut_forward(prev, src, alpha, beta, plan)
    d_prev, d_src = shortcut_backward(dz, src.shape, alpha, beta, plan)

When the two shapes are equal that is alpha·prev + beta·src everywhere. Otherwise
(pjreddie/darknet src/blas.c, shortcut_cpu) src is read every `stride` pixels and
written onto prev every `sample` pixels, stride = src_w / prev_w and sample =
prev_w / src_w (integer division, each at least 1; Darknet asserts that the
heights give the same two ratios), over the first min(C) channels and
min(H) × min(W) positions. Every other value of prev passes unchanged: alpha does
not multiply it. The backward is the exact adjoint of that forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShortcutPlan:
    """Which values of prev (N, C2, H2, W2) and src (N, C1, H1, W1) shortcut_cpu pairs up."""

    stride: int          # src is read every `stride` pixels ...
    sample: int          # ... and added onto every `sample`-th pixel of prev
    channels: int        # min(C1, C2)
    rows: int            # min(H1, H2)
    cols: int            # min(W1, W2)
    same: bool           # equal shapes: every value is paired

    @property
    def prev_index(self) -> tuple:
        """The paired values of prev: (N, channels, rows, cols)."""
        step = self.sample
        return (slice(None), slice(0, self.channels), slice(0, self.rows * step, step),
                slice(0, self.cols * step, step))

    @property
    def src_index(self) -> tuple:
        """The paired values of src: (N, channels, rows, cols)."""
        step = self.stride
        return (slice(None), slice(0, self.channels), slice(0, self.rows * step, step),
                slice(0, self.cols * step, step))


def shortcut_plan(prev_shape: tuple[int, int, int],
                  src_shape: tuple[int, int, int]) -> ShortcutPlan | None:
    """The pairing of prev (C2, H2, W2) with src (C1, H1, W1); None where Darknet's
    shortcut_cpu would fail its asserts (width and height ratios that disagree)."""
    c2, h2, w2 = prev_shape
    c1, h1, w1 = src_shape
    stride, sample = w1 // w2, w2 // w1
    if stride != h1 // h2 or sample != h2 // h1:
        return None
    return ShortcutPlan(stride=max(stride, 1), sample=max(sample, 1), channels=min(c1, c2),
                        rows=min(h1, h2), cols=min(w1, w2),
                        same=tuple(prev_shape) == tuple(src_shape))


def shortcut_forward(prev: np.ndarray, src: np.ndarray, alpha: float, beta: float,
                     plan: ShortcutPlan) -> np.ndarray:
    """prev (N, C2, H2, W2), src (N, C1, H1, W1) -> z (N, C2, H2, W2), a new array.

    alpha, beta: Python floats (a NumPy float64 would promote float32 arrays). The
    rounding is Darknet's: alpha·prev and beta·src each rounded, then their sum.
    """
    paired = src[plan.src_index]
    if beta != 1:
        paired = paired * beta
    if plan.same and alpha == 1:
        return prev + paired                      # the usual residual sum, in one pass
    z = prev.copy(order="K")                      # stored like prev
    target = z[plan.prev_index]                   # a view into z
    if alpha != 1:
        target *= alpha
    target += paired
    return z


def shortcut_backward(dz: np.ndarray, src_shape: tuple[int, ...], alpha: float, beta: float,
                      plan: ShortcutPlan) -> tuple[np.ndarray, np.ndarray]:
    """dz (N, C2, H2, W2), the gradient at z -> (d_prev, d_src), two arrays sharing no
    memory: d_prev is dz itself, overwritten; d_src is (N, C1, H1, W1) = src_shape."""
    paired = dz[plan.prev_index]                  # a view: read it before scaling it
    if plan.same:
        d_src = paired * beta if beta != 1 else paired.copy(order="K")
    else:
        d_src = np.zeros(src_shape, dz.dtype)     # the values src's forward never read: 0
        d_src[plan.src_index] = paired * beta if beta != 1 else paired
    if alpha != 1:
        paired *= alpha
    return dz, d_src
