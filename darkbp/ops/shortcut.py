"""Darknet's shortcut sum: alpha·prev + beta·src over the positions shortcut_cpu pairs up,
and AlexeyAB's weighted sum of the previous layer and several `from` layers.

    plan = shortcut_plan(prev_shape, src_shape)       # per image (C, H, W); None: no pairing
    z = shortcut_forward(prev, src, alpha, beta, plan)
    d_prev, d_src = shortcut_backward(dz, src.shape, alpha, beta, plan)

    a = mix_factors(weights, normalization)           # weights (n+1, K) -> factors (n+1, K)
    z = mix_forward(prev, srcs, a, plans)              # a[0]·prev + Σ a[i]·src_i
    d_prev, d_srcs, g = mix_backward(dz, prev, srcs, a, plans)
    d_weights = mix_weights_grad(weights, a, g, normalization)

When the two shapes are equal that is alpha·prev + beta·src everywhere. Otherwise
(pjreddie/darknet src/blas.c, shortcut_cpu) src is read every `stride` pixels and
written onto prev every `sample` pixels, stride = src_w / prev_w and sample =
prev_w / src_w (integer division, each at least 1; Darknet asserts that the
heights give the same two ratios), over the first min(C) channels and
min(H) × min(W) positions. Every other value of prev passes unchanged: alpha does
not multiply it. The backward is the exact adjoint of that forward.

AlexeyAB's shortcut (src/blas.c shortcut_multilayer_cpu, blas_kernels.cu
shortcut_multilayer_kernel) adds n `from` layers onto prev, each over the values a plan
pairs (AlexeyAB asserts equal widths and heights, where a plan pairs the first
min(C) channels, as its flat index does), with a factor per input: K = 1 of them
(weights_type=per_feature) or one per channel of prev (K = C, per_channel), normalised
over the n + 1 inputs at each k:

    none      a_i = w_i
    relu      a_i = f_i / (1e-4 + Σ_j f_j),  f_i = max(w_i, 0.001)
    softmax   a_i = e_i / (1e-4 + Σ_j e_j),  e_i = exp(w_i − max_j w_j)

relu's floor 0.001 is the GPU code's (its lrelu); the CPU code's relu floors at 0, which
gives the same factors while every weight is above 0.001. The weights' gradient is the
exact one, including the 1e-4's share through max_j w_j (AlexeyAB's CPU and GPU code
each use another rule; see tests/naive_layers.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from darkbp.ops.layout import stored_like


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
    memory: d_prev is dz itself, overwritten; d_src is (N, C1, H1, W1) = src_shape, stored
    as dz is (see layout.py)."""
    paired = dz[plan.prev_index]                  # a view: read it before scaling it
    if plan.same:
        d_src = paired * beta if beta != 1 else paired.copy(order="K")
    else:
        d_src = stored_like(src_shape, dz, zeros=True)   # values src's forward never read: 0
        d_src[plan.src_index] = paired * beta if beta != 1 else paired
    if alpha != 1:
        paired *= alpha
    return dz, d_src


# --- AlexeyAB's weighted sum of several inputs ------------------------------------------------

NORMALIZATION_EPS = 0.0001   # added to the sum of the factors (shortcut_multilayer_kernel's eps)
RELU_FLOOR = 0.001           # relu normalisation's floor: the GPU code's lrelu


def mix_factors(weights: np.ndarray, normalization: str) -> np.ndarray:
    """weights (n+1, K) -> the factors a (n+1, K) each input is multiplied by: the weights
    normalised over the inputs (axis 0), in their dtype, summed in AlexeyAB's order."""
    if normalization == "none":
        return weights
    if normalization == "relu":
        f = np.maximum(weights, weights.dtype.type(RELU_FLOOR))
    else:
        f = np.exp(weights - weights.max(axis=0))
    total = np.full(f.shape[1:], NORMALIZATION_EPS, f.dtype)
    for row in f:                                 # eps + f_0 + f_1 + ..., as AlexeyAB adds
        total += row
    return f / total


def _per_channel(a_i: np.ndarray, channels: int) -> np.ndarray:
    """One input's factors (K,) as (1, K, 1, 1), cut to the first `channels` when K > 1."""
    return a_i[:channels].reshape(1, -1, 1, 1) if a_i.size > 1 else a_i.reshape(1, 1, 1, 1)


def mix_forward(prev: np.ndarray, srcs: list[np.ndarray], a: np.ndarray,
                plans: list[ShortcutPlan]) -> np.ndarray:
    """prev (N, C, H, W), srcs [(N, C_i, H_i, W_i)], a (n+1, K) -> z (N, C, H, W), new:
    z = a_0·prev + Σ_i a_i·src_i over the values plan i pairs; each product rounded, then
    added in input order, as AlexeyAB's kernel does."""
    z = prev * _per_channel(a[0], prev.shape[1])
    for i, (src, plan) in enumerate(zip(srcs, plans), start=1):
        target = z if plan.same else z[plan.prev_index]          # a view into z
        target += src[plan.src_index] * _per_channel(a[i], plan.channels)
    return z


def _factor_grad(dz: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Σ dz·x over the images and pixels (and channels when k = 1): (k,)."""
    per_channel = np.einsum("nchw,nchw->c", dz, x)
    return per_channel if k > 1 else per_channel.sum(keepdims=True)


def mix_backward(dz: np.ndarray, prev: np.ndarray, srcs: list[np.ndarray], a: np.ndarray,
                 plans: list[ShortcutPlan]):
    """dz (N, C, H, W) -> (d_prev, [d_src_i], g): the gradients of the inputs (new arrays
    sharing no memory) and g (n+1, K), the gradient of the factors a."""
    k = a.shape[1]
    g = np.zeros(a.shape, np.result_type(dz, a))
    g[0] = _factor_grad(dz, prev, k)
    d_prev = dz * _per_channel(a[0], prev.shape[1])
    d_srcs = []
    for i, (src, plan) in enumerate(zip(srcs, plans), start=1):
        paired = dz if plan.same else dz[plan.prev_index]       # (N, channels, rows, cols)
        g[i, :plan.channels if k > 1 else 1] = _factor_grad(paired, src[plan.src_index], k)
        d_src = np.zeros_like(src, d_prev.dtype)                # stored as src is
        d_src[plan.src_index] = paired * _per_channel(a[i], plan.channels)
        d_srcs.append(d_src)
    return d_prev, d_srcs, g


def mix_weights_grad(weights: np.ndarray, a: np.ndarray, g: np.ndarray,
                     normalization: str) -> np.ndarray:
    """The gradient of the weights (n+1, K) from g, that of the factors a = mix_factors(...):

        none      g
        relu      (g_j − Σ_i g_i a_i) / S · [w_j > 0.001],   S = 1e-4 + Σ f
        softmax   a_j (g_j − G) − [j = argmax w] · 1e-4 / (1e-4 + Σ e) · G,   G = Σ_i g_i a_i
    """
    if normalization == "none":
        return g.copy()
    mean = np.sum(g * a, axis=0)                                # G, (K,)
    if normalization == "relu":
        f = np.maximum(weights, RELU_FLOOR)
        total = NORMALIZATION_EPS + f.sum(axis=0)
        return (g - mean) / total * (weights > RELU_FLOOR)
    grad = a * (g - mean)
    e = np.exp(weights - weights.max(axis=0))
    top = np.argmax(weights, axis=0)                            # the max's own share of eps
    grad[top, np.arange(weights.shape[1])] -= NORMALIZATION_EPS / (
        NORMALIZATION_EPS + e.sum(axis=0)) * mean
    return grad
