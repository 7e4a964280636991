"""Slow, obviously-correct loop references for Darknet's other layers (tests only).

Transcribed from pjreddie/darknet's C (and AlexeyAB/darknet where that fork is
named), element by element, in float64, sharing no code with darkbp. Arrays are
NCHW; Darknet keeps each image as C, H, W, so (n, c, h, w) is its flat index
c·H·W + h·W + w of image n. Where Darknet works on flat indices (reorg) the loop
here does too.

Every forward returns the layer's output BEFORE its activation (Darknet applies
`activate_array` afterwards; the caller applies it), and every backward is the
exact adjoint of the forward next to it: for every term the forward adds, the
backward adds the matching dy contribution into a fresh zero array. Where
Darknet's own backward is not that adjoint, the docstring says how.

Darknet keeps "delta" = −∂loss/∂output; here every gradient is +∂loss/∂·.
"""

from __future__ import annotations

import math

import numpy as np

# include/darknet.h: `#define SECRET_NUM -1234`, the "no truth here" marker of [cost] type=masked.
SECRET_NUM = -1234.0


def _c_div(a, b):
    """C's integer division of ints (truncates toward zero, unlike Python's //)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


# --- [avgpool] (src/avgpool_layer.c) ----------------------------------------------------------

def avgpool_forward(x):
    """x (N, C, H, W) -> (N, C, 1, 1): y[n, c] = Σ_{h, w} x[n, c, h, w] / (H·W).

    forward_avgpool_layer: a global average over each channel (no size/stride options).
    """
    n_img, chans, h, w = x.shape
    y = np.zeros((n_img, chans, 1, 1))
    for n in range(n_img):
        for c in range(chans):
            total = 0.0
            for i in range(h):
                for j in range(w):
                    total += x[n, c, i, j]
            y[n, c, 0, 0] = total / (h * w)
    return y


def avgpool_backward(x_shape, dy):
    """dy (N, C, 1, 1) -> dx (N, C, H, W): every input cell gets dy[n, c] / (H·W).

    backward_avgpool_layer does exactly this (it adds into net.delta).
    """
    n_img, chans, h, w = x_shape
    dy = np.asarray(dy, float).reshape(n_img, chans)
    dx = np.zeros(x_shape)
    for n in range(n_img):
        for c in range(chans):
            for i in range(h):
                for j in range(w):
                    dx[n, c, i, j] += dy[n, c] / (h * w)
    return dx


# --- [shortcut] (src/shortcut_layer.c, shortcut_cpu in src/blas.c) ----------------------------

def _shortcut_plan(prev_shape, src_shape):
    """The (stride, sample, minc, minh, minw) shortcut_cpu computes for src added onto prev.

    forward_shortcut_layer calls shortcut_cpu(batch, l.w, l.h, l.c, src, l.out_w, l.out_h,
    l.out_c, alpha, beta, out) and make_shortcut_layer sets l.w/h/c = the `from` layer's
    (src) sizes, l.out_w/h/c = the previous layer's (prev). So in shortcut_cpu w1 = src_w,
    w2 = prev_w: stride = src_w / prev_w, sample = prev_w / src_w (C integer division),
    each asserted equal to the same ratio of the heights, then raised to at least 1.
    """
    n1, c2, h2, w2 = prev_shape
    n2, c1, h1, w1 = src_shape
    if n1 != n2:
        raise ValueError(f"batch sizes differ: prev {n1}, src {n2}")
    stride = w1 // w2
    sample = w2 // w1
    if stride != h1 // h2 or sample != h2 // h1:
        raise ValueError(f"shortcut_cpu asserts the width and height ratios agree: "
                         f"prev {h2}x{w2}, src {h1}x{w1}")
    stride = max(stride, 1)
    sample = max(sample, 1)
    return stride, sample, min(c1, c2), min(h1, h2), min(w1, w2)


def shortcut_forward(prev, src, alpha=1.0, beta=1.0):
    """prev (N, C2, H2, W2), src (N, C1, H1, W1) -> out with prev's shape.

    forward_shortcut_layer copies prev (net.input) into the output, then shortcut_cpu does
    `out = s1·out + s2·add` with s1 = alpha, s2 = beta ([shortcut] alpha=, beta=, both
    default 1, parse_shortcut) at these positions only, for k < min(C1, C2),
    j < min(H1, H2), i < min(W1, W2):

        out[n, k, j·sample, i·sample] = alpha·prev[n, k, j·sample, i·sample]
                                        + beta·src[n, k, j·stride, i·stride]

    stride = W1 // W2, sample = W2 // W1, each at least 1 (see _shortcut_plan). Every other
    position keeps prev unscaled (alpha does NOT multiply it). With equal shapes every
    position is covered: out = alpha·prev + beta·src. A src twice prev's size is read at
    its even cells; a src half prev's size is added onto prev's even cells only; channels
    past min(C1, C2) are prev's own.
    """
    stride, sample, minc, minh, minw = _shortcut_plan(prev.shape, src.shape)
    out = np.array(prev, dtype=float)
    for n in range(prev.shape[0]):
        for k in range(minc):
            for j in range(minh):
                for i in range(minw):
                    oj, oi = j * sample, i * sample
                    sj, si = j * stride, i * stride
                    out[n, k, oj, oi] = alpha * prev[n, k, oj, oi] + beta * src[n, k, sj, si]
    return out


def shortcut_backward(prev_shape, src_shape, dy, alpha=1.0, beta=1.0):
    """dy (prev's shape) -> (d_prev, d_src), the exact adjoint of shortcut_forward.

    d_prev = dy where the forward kept prev, alpha·dy where it wrote alpha·prev + beta·src;
    d_src[n, k, j·stride, i·stride] += beta·dy[n, k, j·sample, i·sample].

    Darknet's backward_shortcut_layer adds alpha·dy to ALL of prev's delta
    (axpy_cpu(outputs·batch, alpha, l.delta, ...)): that differs from the exact adjoint at
    the positions the forward did not cover (exact factor 1 there, Darknet's alpha), i.e.
    only when the shapes differ and alpha ≠ 1. Its src part, shortcut_cpu(..., l.delta,
    ..., 1, beta, from.delta), is the exact adjoint above (it accumulates).
    """
    stride, sample, minc, minh, minw = _shortcut_plan(prev_shape, src_shape)
    d_prev = np.array(dy, dtype=float)
    d_src = np.zeros(src_shape)
    for n in range(prev_shape[0]):
        for k in range(minc):
            for j in range(minh):
                for i in range(minw):
                    oj, oi = j * sample, i * sample
                    sj, si = j * stride, i * stride
                    d_prev[n, k, oj, oi] = alpha * dy[n, k, oj, oi]
                    d_src[n, k, sj, si] += beta * dy[n, k, oj, oi]
    return d_prev, d_src


# --- AlexeyAB's [shortcut] (src/blas.c shortcut_multilayer_cpu, backward_shortcut_multilayer_cpu;
#     src/blas_kernels.cu shortcut_multilayer_kernel, backward_shortcut_multilayer_kernel) ---------

def _multilayer_factor(weights, normalization, floor, k, i):
    """Input i's factor at weight column k: weights[i][k] normalised over the inputs, the
    kernel's per-element loop (relu: max(w, floor)/(1e-4 + Σ max(w, floor)); softmax:
    exp(w − max)/(1e-4 + Σ exp(w − max)); none: w). floor 0 is the CPU's relu, 0.001 the
    GPU's lrelu."""
    column = [weights[j][k] for j in range(len(weights))]
    if normalization == "none":
        return column[i]
    if normalization == "relu":
        f = [max(w, floor) for w in column]
    else:
        top = max(column)
        f = [math.exp(w - top) for w in column]
    total = 0.0001
    for value in f:
        total += value
    return f[i] / total


def shortcut_multilayer_forward(prev, srcs, weights=None, normalization="none", floor=0.001):
    """prev (N, C, H, W), srcs [(N, C_i, H, W)] -> out (N, C, H, W), element by element.

    For each flat index p = c·H·W + h·W + w of an image of prev: out = a_0·prev[p], then
    for each input i whose image holds more than p values (its C_i·H·W), out += a_i·src_i[p]
    at the same flat index (AlexeyAB asserts equal H and W: the first C_i channels).
    weights (n+1, K) or None (every factor 1); K = 1 (per_feature) or C (per_channel), the
    column being p // (C·H·W / K).
    """
    n_img, c, h, w = prev.shape
    outputs = c * h * w
    out = np.zeros(prev.shape)
    flat_prev = np.asarray(prev, float).reshape(n_img, -1)
    flat_srcs = [np.asarray(src, float).reshape(n_img, -1) for src in srcs]
    step = outputs // (len(weights[0]) if weights is not None else 1)
    flat_out = out.reshape(n_img, -1)
    for b in range(n_img):
        for p in range(outputs):
            k = p // step

            def factor(i):
                return 1.0 if weights is None else _multilayer_factor(weights, normalization,
                                                                      floor, k, i)
            flat_out[b, p] = flat_prev[b, p] * factor(0)
            for i, src in enumerate(flat_srcs, start=1):
                if p < src.shape[1]:
                    flat_out[b, p] += src[b, p] * factor(i)
    return out


def shortcut_multilayer_backward(prev, srcs, dy, weights=None, normalization="none",
                                 floor=0.001, rule="cpu"):
    """dy (prev's shape) -> (d_prev, [d_src_i], updates): the inputs' gradients, exact (every
    input's factor times dy, as both AlexeyAB kernels do), and what AlexeyAB accumulates for
    the weights (n+1, K), with darkbp's sign (a gradient, not its negative):

        rule "cpu"  Σ dy·x_i                      (backward_shortcut_multilayer_cpu: grad = 1,
                                                   the gradient of the normalised factor a_i)
        rule "gpu"  Σ dy·x_i·a_i        relu      (the kernel's grad = w after normalisation)
                    Σ dy·x_i·a_i(1−a_i) softmax   (grad = w·(1 − w))
                    Σ dy·x_i            none

    Neither is the gradient of the weights themselves (that is mix_weights_grad's); the GPU
    update also skips weight decay and clips the accumulated updates to [−1, 1]
    (update_shortcut_layer_gpu), which this reference leaves to its caller.
    """
    n_img, c, h, w = prev.shape
    outputs = c * h * w
    flat_prev = np.asarray(prev, float).reshape(n_img, -1)
    flat_srcs = [np.asarray(src, float).reshape(n_img, -1) for src in srcs]
    flat_dy = np.asarray(dy, float).reshape(n_img, -1)
    d_prev = np.zeros((n_img, outputs))
    d_srcs = [np.zeros(src.shape) for src in flat_srcs]
    k_count = len(weights[0]) if weights is not None else 1
    updates = np.zeros((len(srcs) + 1, k_count))
    step = outputs // k_count
    inputs = [flat_prev] + flat_srcs
    for b in range(n_img):
        for p in range(outputs):
            k = p // step
            for i, x in enumerate(inputs):
                if p >= x.shape[1]:
                    continue
                a = 1.0 if weights is None else _multilayer_factor(weights, normalization,
                                                                   floor, k, i)
                (d_prev[b] if i == 0 else d_srcs[i - 1][b])[p] += flat_dy[b, p] * a
                grad = 1.0
                if rule == "gpu" and normalization == "relu":
                    grad = a
                elif rule == "gpu" and normalization == "softmax":
                    grad = a * (1 - a)
                updates[i, k] += flat_dy[b, p] * x[b, p] * grad
    return (d_prev.reshape(prev.shape), [d.reshape(src.shape) for d, src in zip(d_srcs, srcs)],
            updates)


# --- [route] (src/route_layer.c; groups/group_id from AlexeyAB/darknet) -----------------------

def _route_plan(shapes, groups, group_id):
    if not shapes:
        raise ValueError("route needs at least one input")
    if groups < 1 or not 0 <= group_id < groups:
        raise ValueError(f"need groups >= 1 and 0 <= group_id < groups, got {groups}, {group_id}")
    n_img, _, h, w = shapes[0]
    for shape in shapes:
        if shape[0] != n_img or tuple(shape[2:]) != (h, w):
            raise ValueError(f"route inputs must share N, H, W: {shapes}")
        if shape[1] % groups:
            raise ValueError(f"{shape[1]} channels do not split into {groups} groups")
    return n_img, h, w


def route_forward(xs, groups=1, group_id=0):
    """xs: list of (N, C_i, H, W) -> (N, Σ C_i / groups, H, W), inputs in cfg order.

    forward_route_layer (pjreddie) copies each input's whole image after the previous
    ones: concatenation along channels. AlexeyAB's [route] groups=G group_id=g (defaults
    1, 0) copies only the g-th of G equal parts of each input's per-image memory,
    input_size / G values from offset g·input_size / G: with C_i divisible by G that is
    channels g·C_i/G … (g+1)·C_i/G − 1 (required here). Darknet also accepts inputs of
    different H, W (the output is then a flat vector); this reference does not.
    """
    n_img, h, w = _route_plan([x.shape for x in xs], groups, group_id)
    total = sum(x.shape[1] // groups for x in xs)
    y = np.zeros((n_img, total, h, w))
    for n in range(n_img):
        offset = 0
        for x in xs:
            part = x.shape[1] // groups
            for c in range(part):
                for i in range(h):
                    for j in range(w):
                        y[n, offset + c, i, j] = x[n, group_id * part + c, i, j]
            offset += part
    return y


def route_backward(shapes, dy, groups=1, group_id=0):
    """dy (N, Σ C_i / groups, H, W) -> [dx_i], each of shapes[i]: the exact adjoint.

    Channels outside the group_id-th slice get zero. backward_route_layer (both forks)
    adds its slice of delta into each input's delta: exact.
    """
    n_img, h, w = _route_plan([tuple(s) for s in shapes], groups, group_id)
    dxs = [np.zeros(tuple(s)) for s in shapes]
    for n in range(n_img):
        offset = 0
        for dx in dxs:
            part = dx.shape[1] // groups
            for c in range(part):
                for i in range(h):
                    for j in range(w):
                        dx[n, group_id * part + c, i, j] += dy[n, offset + c, i, j]
            offset += part
    return dxs


# --- [reorg] (src/reorg_layer.c, reorg_cpu in src/blas.c) -------------------------------------

def _reorg_layer_shape(chans, h, w, stride, reverse):
    """make_reorg_layer's output (C, H, W)."""
    if reverse:
        return chans // (stride * stride), h * stride, w * stride
    return chans * stride * stride, h // stride, w // stride


def _reorg_cpu_pairs(w, h, c, stride):
    """The (in_index, out_index) pairs of reorg_cpu(x, w, h, c, batch, stride, ...) for one image.

    Loop over k < c, j < h, i < w: in_index = i + w·(j + h·k); with c2 = k mod (c/s²) and
    offset = k div (c/s²): w2 = i·s + offset mod s, h2 = j·s + offset div s,
    out_index = w2 + w·s·(h2 + h·s·c2). forward=1 does out[out_index] = x[in_index],
    forward=0 does out[in_index] = x[out_index]. It is a permutation of the w·h·c values
    when c is a multiple of s² (Darknet divides by c/s², 0 otherwise).
    """
    small_c = c // (stride * stride)
    pairs = []
    for k in range(c):
        for j in range(h):
            for i in range(w):
                in_index = i + w * (j + h * k)
                c2 = k % small_c
                offset = k // small_c
                w2 = i * stride + offset % stride
                h2 = j * stride + offset // stride
                out_index = w2 + w * stride * (h2 + h * stride * c2)
                pairs.append((in_index, out_index))
    return pairs


def _reorg_plan(x_shape, stride, reverse, darknet):
    n_img, chans, h, w = x_shape
    if stride < 1:
        raise ValueError(f"reorg stride must be >= 1, got {stride}")
    out_shape = _reorg_layer_shape(chans, h, w, stride, reverse)
    if math.prod(out_shape) != chans * h * w:
        raise ValueError(f"reorg of {chans}x{h}x{w} by {stride} (reverse={reverse}) does not "
                         f"keep the size: {out_shape}")
    if darknet == "pjreddie":
        args = (w, h, chans)                                   # l.w, l.h, l.c
    elif darknet == "alexeyab":
        args = (out_shape[2], out_shape[1], out_shape[0])      # l.out_w, l.out_h, l.out_c
    else:
        raise ValueError(f"darknet must be 'pjreddie' or 'alexeyab', got {darknet!r}")
    if args[2] % (stride * stride):
        raise ValueError(f"reorg_cpu needs its c ({args[2]}) to be a multiple of stride² "
                         f"({stride * stride}); Darknet would divide by zero or read out of bounds")
    forward_flag = 1 if reverse else 0
    return (n_img, *out_shape), _reorg_cpu_pairs(*args, stride), forward_flag


def reorg_forward(x, stride, reverse=False, *, darknet="pjreddie"):
    """x (N, C, H, W) -> the [reorg] output: (N, C·s², H/s, W/s), or (N, C/s², H·s, W·s) reversed.

    forward_reorg_layer calls reorg_cpu with forward = 1 when reverse, 0 when not (see
    _reorg_cpu_pairs for reorg_cpu's loop). The two forks differ in the sizes passed:

    - darknet="pjreddie" (default): reorg_cpu(input, l.w, l.h, l.c, ...), the INPUT sizes.
      reverse=1 is then a true depth-to-space, out[c2, j·s + o div s, i·s + o mod s] =
      x[k, j, i] (c2 = k mod C/s², o = k div C/s²); reverse=0 is its inverse applied to the
      flat memory as if x were (C/s², H·s, W·s): out viewed as (C, H, W) gets
      out[k, j, i] = x_flat viewed as (C/s², H·s, W·s) at [c2, j·s + o div s, i·s + o mod s].
      So pjreddie's reverse=0 (the YOLOv2 passthrough) needs C a multiple of s² and is NOT
      a per-channel space-to-depth of x.
    - darknet="alexeyab": reorg_cpu(input, l.out_w, l.out_h, l.out_c, ...), the OUTPUT
      sizes. reverse=0 is a true space-to-depth, out[k, j, i] = x[k mod C, j·s + o div s,
      i·s + o mod s] with o = k div C; reverse=1 is a flat permutation needing C a
      multiple of s⁴.

    pjreddie's flatten= and extra= options are not modelled.
    """
    out_shape, pairs, forward_flag = _reorg_plan(x.shape, stride, reverse, darknet)
    n_img = x.shape[0]
    size = math.prod(x.shape[1:])
    y = np.zeros(out_shape)
    for n in range(n_img):
        src = x[n].reshape(size)
        dst = y[n].reshape(size)
        for in_index, out_index in pairs:
            if forward_flag:
                dst[out_index] = src[in_index]
            else:
                dst[in_index] = src[out_index]
    return y


def reorg_backward(x_shape, dy, stride, reverse=False, *, darknet="pjreddie"):
    """dy (reorg output's shape) -> dx (x_shape): the inverse permutation (its exact adjoint).

    backward_reorg_layer calls reorg_cpu with the other forward flag, which is this same
    inverse, in both forks; but it ASSIGNS into net.delta (out[..] = ..) instead of adding,
    so whatever another consumer of the previous layer already added there is overwritten.
    """
    out_shape, pairs, forward_flag = _reorg_plan(tuple(x_shape), stride, reverse, darknet)
    if tuple(dy.shape) != out_shape:
        raise ValueError(f"dy has shape {dy.shape}, the reorg output is {out_shape}")
    n_img = x_shape[0]
    size = math.prod(x_shape[1:])
    dx = np.zeros(tuple(x_shape))
    for n in range(n_img):
        dsrc = dx[n].reshape(size)
        ddst = dy[n].reshape(size)
        for in_index, out_index in pairs:
            if forward_flag:
                dsrc[in_index] += ddst[out_index]
            else:
                dsrc[out_index] += ddst[in_index]
    return dx


# --- [upsample] (src/upsample_layer.c, upsample_cpu in src/blas.c) ----------------------------

def _upsample_shape(x_shape, stride):
    n_img, chans, h, w = x_shape
    if stride == 0:
        raise ValueError("upsample stride 0")
    if stride > 0:
        return (n_img, chans, h * stride, w * stride)
    s = -stride
    if h % s or w % s:
        raise ValueError(f"downsample by {s} of {h}x{w}: Darknet would index the input with "
                         f"the output's row length times {s}, i.e. read the wrong cells")
    return (n_img, chans, h // s, w // s)


def upsample_forward(x, stride=2, scale=1.0):
    """x (N, C, H, W) -> stride > 0: (N, C, H·s, W·s); stride < 0: (N, C, H/s, W/s), s = |stride|.

    [upsample] stride= (default 2), scale= (default 1), parse_upsample.
    stride > 0 (upsample_cpu forward=1): out[n, c, j, i] = scale·x[n, c, j div s, i div s]
    (nearest neighbour).
    stride < 0 (make_upsample_layer sets reverse=1; forward_upsample_layer zeroes the
    output and calls upsample_cpu(l.output, out_w, out_h, ..., forward=0, scale, input)):
    out[n, c, j div s, i div s] += scale·x[n, c, j, i] — every s×s block SUMMED (not
    averaged) times scale. Needs H, W multiples of s here (see _upsample_shape).
    """
    out_shape = _upsample_shape(x.shape, stride)
    y = np.zeros(out_shape)
    n_img, chans = x.shape[:2]
    if stride > 0:
        _, _, oh, ow = out_shape
        for n in range(n_img):
            for c in range(chans):
                for j in range(oh):
                    for i in range(ow):
                        y[n, c, j, i] = scale * x[n, c, j // stride, i // stride]
    else:
        s = -stride
        _, _, h, w = x.shape
        for n in range(n_img):
            for c in range(chans):
                for j in range(h):
                    for i in range(w):
                        y[n, c, j // s, i // s] += scale * x[n, c, j, i]
    return y


def upsample_backward(x_shape, dy, stride=2, scale=1.0):
    """dy (output's shape) -> dx (x_shape), the exact adjoint of upsample_forward.

    stride > 0: dx[n, c, j div s, i div s] += scale·dy[n, c, j, i] (backward_upsample_layer
    does the same, upsample_cpu forward=0, accumulating).
    stride < 0: dx[n, c, j, i] = scale·dy[n, c, j div s, i div s]. Darknet's backward
    (upsample_cpu forward=1 into net.delta) ASSIGNS these values instead of adding them,
    overwriting anything another consumer already added to the previous layer's delta.
    """
    out_shape = _upsample_shape(tuple(x_shape), stride)
    if tuple(dy.shape) != out_shape:
        raise ValueError(f"dy has shape {dy.shape}, the upsample output is {out_shape}")
    dx = np.zeros(tuple(x_shape))
    n_img, chans = x_shape[:2]
    if stride > 0:
        _, _, oh, ow = out_shape
        for n in range(n_img):
            for c in range(chans):
                for j in range(oh):
                    for i in range(ow):
                        dx[n, c, j // stride, i // stride] += scale * dy[n, c, j, i]
    else:
        s = -stride
        _, _, h, w = x_shape
        for n in range(n_img):
            for c in range(chans):
                for j in range(h):
                    for i in range(w):
                        dx[n, c, j, i] += scale * dy[n, c, j // s, i // s]
    return dx


# --- [local] (src/local_layer.c) --------------------------------------------------------------

def local_out_size(h, w, size, stride, pad):
    """(out_h, out_w) as local_out_height/local_out_width: (h − (pad ? 1 : size)) / stride + 1.

    `pad` is the cfg's pad= value (parse_local, default 0), used by Darknet as a flag here
    but as a pixel count by im2col_cpu/col2im_cpu, whose column grid is
    (h + 2·pad − size) / stride + 1 (C division). The two agree for pad=0 and for
    pad=1, size=3; when they do not, Darknet's gemm reads im2col's buffer with the wrong
    row length, so this raises instead.
    """
    out_h = _c_div(h - (1 if pad else size), stride) + 1
    out_w = _c_div(w - (1 if pad else size), stride) + 1
    col_h = _c_div(h + 2 * pad - size, stride) + 1
    col_w = _c_div(w + 2 * pad - size, stride) + 1
    if (out_h, out_w) != (col_h, col_w):
        raise ValueError(f"local layer size={size} stride={stride} pad={pad} on {h}x{w}: the layer "
                         f"has {out_h}x{out_w} locations but im2col makes {col_h}x{col_w} columns")
    if out_h < 1 or out_w < 1:
        raise ValueError(f"local layer output {out_h}x{out_w}")
    return out_h, out_w


def _local_plan(x_shape, weights, size, stride, pad):
    _, chans, h, w = x_shape
    out_h, out_w = local_out_size(h, w, size, stride, pad)
    locations = out_h * out_w
    k = chans * size * size
    if weights.size % (locations * k):
        raise ValueError(f"{weights.size} weights do not split into {locations} locations "
                         f"of filters x {k}")
    filters = weights.size // (locations * k)
    return out_h, out_w, filters, weights.reshape(locations, filters, k)


def local_forward(x, weights, biases, size, stride, pad):
    """x (N, C, H, W) -> (N, F, out_h, out_w) before activation (forward_local_layer).

    Locations: loc = oh·out_w + ow, L = out_h·out_w (see local_out_size for out_h, out_w).
    weights: L·F·C·size·size values in Darknet's order — shape (L, F, C·size·size), i.e.
      one F × (C·size·size) row-major matrix per location (l.weights + loc·size²·c·n), and
      in a row kk = c·size² + ki·size + kj (im2col's row order). Any array with these
      values in this C order is accepted (e.g. the flat block read from a .weights file).
    biases: F·L values, filter major — shape (F, out_h, out_w), the same layout as one
      image's output (copy_cpu(l.outputs, l.biases, ..., l.output + i·outputs)). Any array
      with these values in this C order is accepted.
    .weights order (load_weights_upto / save_weights_upto): the l.outputs biases, then the
    L·F·C·size² weights, both flat as above.

    y[n, f, oh, ow] = biases[f, oh, ow]
        + Σ_{c, ki, kj} weights[loc, f, c·size² + ki·size + kj]
                        · x[n, c, oh·stride − pad + ki, ow·stride − pad + kj]   (0 outside)
    """
    out_h, out_w, filters, wmat = _local_plan(x.shape, weights, size, stride, pad)
    n_img, chans, h, w = x.shape
    bias = np.asarray(biases, float).reshape(filters, out_h, out_w)
    y = np.zeros((n_img, filters, out_h, out_w))
    for n in range(n_img):
        for f in range(filters):
            for oh in range(out_h):
                for ow in range(out_w):
                    loc = oh * out_w + ow
                    total = bias[f, oh, ow]
                    for c in range(chans):
                        for ki in range(size):
                            for kj in range(size):
                                ih = oh * stride - pad + ki
                                iw = ow * stride - pad + kj
                                if 0 <= ih < h and 0 <= iw < w:
                                    kk = c * size * size + ki * size + kj
                                    total += wmat[loc, f, kk] * x[n, c, ih, iw]
                    y[n, f, oh, ow] = total
    return y


def local_backward(x, weights, dy, size, stride, pad):
    """dy (N, F, out_h, out_w) -> (dx, dweights, dbiases), the exact adjoint of local_forward.

    dweights has the shape `weights` was given in (same flat order); dbiases is
    (F, out_h, out_w) (Darknet's bias order) = Σ_n dy[n]. backward_local_layer computes the
    same sums (into weight_updates / bias_updates, which hold −gradients because Darknet's
    delta is −∂loss/∂output) and adds dx into net.delta with col2im_cpu: exact.
    """
    out_h, out_w, filters, wmat = _local_plan(x.shape, weights, size, stride, pad)
    n_img, chans, h, w = x.shape
    dx = np.zeros(x.shape)
    dw = np.zeros(wmat.shape)
    db = np.zeros((filters, out_h, out_w))
    for n in range(n_img):
        for f in range(filters):
            for oh in range(out_h):
                for ow in range(out_w):
                    loc = oh * out_w + ow
                    d = dy[n, f, oh, ow]
                    db[f, oh, ow] += d
                    for c in range(chans):
                        for ki in range(size):
                            for kj in range(size):
                                ih = oh * stride - pad + ki
                                iw = ow * stride - pad + kj
                                if 0 <= ih < h and 0 <= iw < w:
                                    kk = c * size * size + ki * size + kj
                                    dw[loc, f, kk] += d * x[n, c, ih, iw]
                                    dx[n, c, ih, iw] += d * wmat[loc, f, kk]
    return dx, dw.reshape(np.shape(weights)), db


# --- [crop] (src/crop_layer.c, CPU forward) ---------------------------------------------------

def _crop_check(x_shape, crop_h, crop_w, dh, dw):
    _, _, h, w = x_shape
    if not (0 <= dh <= h - crop_h and 0 <= dw <= w - crop_w):
        raise ValueError(f"a {crop_h}x{crop_w} crop at ({dh}, {dw}) does not fit in {h}x{w}")


def crop_forward(x, crop_h, crop_w, dh, dw, flip=False, adjust=True):
    """x (N, C, H, W) -> (N, C, crop_h, crop_w), forward_crop_layer on the CPU.

    row = i + dh; col = j + dw, or with flip col = W − dw − j − 1 (the whole image is
    mirrored and then cut at dw: output column j reads input column W−1−dw−j);
    out[n, c, i, j] = x[n, c, row, col]·scale + trans with scale=2, trans=−1 unless
    noadjust (adjust=False here: scale=1, trans=0). Darknet picks dh = rand() mod
    (H − crop_h + 1), dw likewise and one flip for the whole batch when training
    (flip= option and rand()%2); at test time flip=0, dh = (H − crop_h)/2,
    dw = (W − crop_w)/2. angle, saturation, exposure and shift are GPU-only.
    """
    _crop_check(x.shape, crop_h, crop_w, dh, dw)
    n_img, chans, _, w = x.shape
    scale, trans = (2.0, -1.0) if adjust else (1.0, 0.0)
    y = np.zeros((n_img, chans, crop_h, crop_w))
    for n in range(n_img):
        for c in range(chans):
            for i in range(crop_h):
                for j in range(crop_w):
                    row = i + dh
                    col = (w - dw - j - 1) if flip else (j + dw)
                    y[n, c, i, j] = x[n, c, row, col] * scale + trans
    return y


def crop_backward(x_shape, dy, crop_h, crop_w, dh, dw, flip=False, adjust=True):
    """dy (N, C, crop_h, crop_w) -> dx (x_shape): dx[n, c, row, col] += scale·dy[n, c, i, j].

    The exact adjoint of crop_forward (cells outside the crop get 0). Darknet's
    backward_crop_layer is empty: it passes no gradient at all.
    """
    _crop_check(tuple(x_shape), crop_h, crop_w, dh, dw)
    if tuple(dy.shape) != (x_shape[0], x_shape[1], crop_h, crop_w):
        raise ValueError(f"dy has shape {dy.shape}")
    n_img, chans, _, w = x_shape
    scale = 2.0 if adjust else 1.0
    dx = np.zeros(tuple(x_shape))
    for n in range(n_img):
        for c in range(chans):
            for i in range(crop_h):
                for j in range(crop_w):
                    row = i + dh
                    col = (w - dw - j - 1) if flip else (j + dw)
                    dx[n, c, row, col] += scale * dy[n, c, i, j]
    return dx


# --- [cost] (src/cost_layer.c; l2_cpu, l1_cpu, smooth_l1_cpu in src/blas.c) -------------------

COST_KINDS = ("sse", "masked", "smooth", "L1")


def _cost_pairs(pred, truth, kind):
    """Per image, the (p, t) pairs the cost sees; masked replaces p by SECRET_NUM where t is it."""
    if kind not in COST_KINDS:
        raise ValueError(f"cost type must be one of {COST_KINDS} (Darknet's strcmp, case "
                         f"sensitive; it falls back to sse for anything else), got {kind!r}")
    pred = np.asarray(pred, float)
    truth = np.asarray(truth, float)
    if pred.shape != truth.shape:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} differ")
    rows = []
    for n in range(pred.shape[0]):
        p_flat, t_flat = pred[n].reshape(-1), truth[n].reshape(-1)
        row = []
        for p, t in zip(p_flat, t_flat):
            if kind == "masked" and t == SECRET_NUM:
                p = SECRET_NUM
            row.append((float(p), float(t)))
        rows.append(row)
    return pred.shape, rows


def darknet_reported_cost(pred, truth, kind):
    """(N,) per image, Σ of Darknet's error array l.output (l.cost[0] is the sum over images).

    d = t − p: sse/masked (l2_cpu) d²; L1 (l1_cpu) |d|; smooth (smooth_l1_cpu) d² if
    |d| < 1 else 2|d| − 1. Darknet's reported cost does not include `scale`.
    """
    _, rows = _cost_pairs(pred, truth, kind)
    out = np.zeros(len(rows))
    for n, row in enumerate(rows):
        for p, t in row:
            d = t - p
            if kind == "L1":
                out[n] += abs(d)
            elif kind == "smooth":
                out[n] += d * d if abs(d) < 1 else 2 * abs(d) - 1
            else:
                out[n] += d * d
    return out


def darknet_delta(pred, truth, kind):
    """Darknet's l.delta (pred's shape) before the scale: d = t − p for sse/masked (0 where
    masked); L1: 1 if d > 0 else −1 (so −1 at d = 0); smooth: d if |d| < 1 else ±1."""
    shape, rows = _cost_pairs(pred, truth, kind)
    delta = np.zeros(shape)
    for n, row in enumerate(rows):
        flat = delta[n].reshape(-1)
        for e, (p, t) in enumerate(row):
            d = t - p
            if kind == "L1":
                flat[e] = 1.0 if d > 0 else -1.0
            elif kind == "smooth":
                flat[e] = d if abs(d) < 1 else (1.0 if d > 0 else -1.0)
            else:
                flat[e] = d
    return delta


def cost_forward(pred, truth, kind="sse", scale=1.0):
    """pred, truth (N, ...) -> (N,) per image: scale · Σ_e c(t_e − p_e), d = t − p.

    The cost whose exact gradient is what Darknet applies: backward_cost_layer adds
    scale·l.delta into net.delta (= −∂loss/∂pred), so ∂cost/∂pred = −scale·l.delta:
      sse:    c = ½ d²  (Darknet reports d², twice this, and no scale)
      masked: sse, but where truth == SECRET_NUM (−1234) forward_cost_layer first sets
              pred := SECRET_NUM (in place, in the previous layer's output), so d = 0 there:
              those elements cost nothing and get no gradient
      L1:     c = |d|   (Darknet reports |d|)
      smooth: c = ½ d² if |d| < 1 else |d| − ½  (Huber; Darknet reports d² and 2|d| − 1,
              twice this: its reported error is twice the integral of its delta)
    [cost] type= (default sse), scale= (default 1), parse_cost.
    """
    _, rows = _cost_pairs(pred, truth, kind)
    out = np.zeros(len(rows))
    for n, row in enumerate(rows):
        total = 0.0
        for p, t in row:
            d = t - p
            if kind == "L1":
                total += abs(d)
            elif kind == "smooth":
                total += 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5
            else:
                total += 0.5 * d * d
        out[n] = scale * total
    return out


def cost_gradient(pred, truth, kind="sse", scale=1.0):
    """∂cost_forward/∂pred (pred's shape) = −scale · darknet_delta, element by element.

      sse:    scale·(p − t)
      masked: scale·(p − t), 0 where truth == SECRET_NUM
      L1:     scale·sign(p − t), and +scale at p == t (Darknet's delta is −1 there: the
              derivative from above)
      smooth: scale·(p − t) if |t − p| < 1 else scale·sign(p − t)
    """
    shape, rows = _cost_pairs(pred, truth, kind)
    grad = np.zeros(shape)
    for n, row in enumerate(rows):
        flat = grad[n].reshape(-1)
        for e, (p, t) in enumerate(row):
            d = t - p
            if kind == "L1":
                g = -1.0 if d > 0 else 1.0
            elif kind == "smooth":
                g = -d if abs(d) < 1 else (-1.0 if d > 0 else 1.0)
            else:
                g = -d
            flat[e] = scale * g
    return grad


# --- [dropout] (src/dropout_layer.c) ----------------------------------------------------------

def dropout_forward(x, draws, probability=0.5, train=True):
    """x, draws (same shape; draws uniform in [0, 1]) -> y.

    forward_dropout_layer: nothing when not training (y = x); else for every element
    y = 0 if draw < probability, else x·scale with scale = 1/(1 − probability)
    (make_dropout_layer). [dropout] probability= defaults to .5 (parse_dropout). Darknet
    works in place on the previous layer's output and draws with rand_uniform(0, 1).
    """
    y = np.array(x, dtype=float)
    if not train:
        return y
    scale = 1.0 / (1.0 - probability)
    flat_y = y.reshape(-1)
    flat_x = np.asarray(x, float).reshape(-1)
    flat_r = np.asarray(draws).reshape(-1)
    for e in range(flat_y.size):
        flat_y[e] = 0.0 if flat_r[e] < probability else flat_x[e] * scale
    return y


def dropout_backward(draws, dy, probability=0.5):
    """dy -> dx: 0 where draw < probability, dy·1/(1 − probability) elsewhere.

    The exact adjoint of the training forward; backward_dropout_layer does the same in
    place on net.delta (it has no test-mode branch: backward only runs in training).
    """
    scale = 1.0 / (1.0 - probability)
    dx = np.zeros(np.shape(dy))
    flat_dx = dx.reshape(-1)
    flat_dy = np.asarray(dy, float).reshape(-1)
    flat_r = np.asarray(draws).reshape(-1)
    for e in range(flat_dx.size):
        flat_dx[e] = 0.0 if flat_r[e] < probability else flat_dy[e] * scale
    return dx


# --- [sam] (AlexeyAB/darknet src/sam_layer.c) -------------------------------------------------

def sam_forward(prev, src):
    """prev, src (N, C, H, W), the same shape -> z: forward_sam_layer's loop over the flat
    index i of the batch, output[i] = state.input[i] · from_output[i] (before activate_array).
    """
    if prev.shape != src.shape:
        raise ValueError(f"make_sam_layer asserts equal shapes: {prev.shape} vs {src.shape}")
    size = prev.size
    flat_prev, flat_src = np.asarray(prev, float).reshape(size), np.asarray(src, float).reshape(size)
    z = np.zeros(size)
    for i in range(size):
        z[i] = flat_prev[i] * flat_src[i]
    return z.reshape(prev.shape)


def sam_backward(prev, src, dz):
    """dz (the gradient at z) -> (d_prev, d_src), the exact adjoint of sam_forward.

    backward_sam_layer: state.delta[i] += l.delta[i]·from_output[i], and
    from_delta[i] = state.input[i]·l.delta[i]: it ASSIGNS the `from` layer's delta (a
    gradient a later reader of that layer already added there is lost); its GPU kernel adds.
    """
    size = prev.size
    flat_prev, flat_src = np.asarray(prev, float).reshape(size), np.asarray(src, float).reshape(size)
    flat_dz = np.asarray(dz, float).reshape(size)
    d_prev, d_src = np.zeros(size), np.zeros(size)
    for i in range(size):
        d_prev[i] += flat_dz[i] * flat_src[i]
        d_src[i] += flat_prev[i] * flat_dz[i]
    return d_prev.reshape(prev.shape), d_src.reshape(src.shape)


# --- [scale_channels] (AlexeyAB/darknet src/scale_channels_layer.c) ---------------------------

def _scale_index(i, out_shape, scale_wh):
    """The flat index into the scales (the previous layer's output) of output value i:
    i / channel_size per channel, i % channel_size + (i / batch_size)·channel_size per
    position (channel_size = out_w·out_h, batch_size = out_c·out_w·out_h)."""
    _, c, h, w = out_shape
    channel_size, batch_size = w * h, c * w * h
    if scale_wh:
        return i % channel_size + (i // batch_size) * channel_size
    return i // channel_size


def _scale_check(scales_shape, src_shape, scale_wh):
    n, c, h, w = scales_shape
    if scale_wh and (c != 1 or (h, w) != tuple(src_shape[2:])):
        raise ValueError(f"scale_wh=1 asserts scales (N, 1, H, W) of src's H, W: {scales_shape}")
    if not scale_wh and ((h, w) != (1, 1) or c != src_shape[1]):
        raise ValueError(f"scale_wh=0 asserts scales (N, C, 1, 1) of src's C: {scales_shape}")


def scale_channels_forward(scales, src, scale_wh=False):
    """scales (N, C, 1, 1) (scale_wh: (N, 1, H, W)), src (N, C, H, W) -> z (N, C, H, W).

    forward_scale_channels_layer, over the flat index i of the batch:
    output[i] = state.input[_scale_index(i)] · from_output[i] (before activate_array).
    """
    _scale_check(scales.shape, src.shape, scale_wh)
    size = src.size
    flat_scales = np.asarray(scales, float).reshape(-1)
    flat_src = np.asarray(src, float).reshape(size)
    z = np.zeros(size)
    for i in range(size):
        z[i] = flat_scales[_scale_index(i, src.shape, scale_wh)] * flat_src[i]
    return z.reshape(src.shape)


def scale_channels_backward(scales, src, dz, scale_wh=False):
    """dz -> (d_scales, d_src), the exact adjoint of scale_channels_forward.

    backward_scale_channels_layer (CPU) does exactly this:
    state.delta[_scale_index(i)] += l.delta[i]·from_output[i] and
    from_delta[i] += state.input[_scale_index(i)]·l.delta[i]. Its GPU kernel divides the
    scale_wh=1 scales' part by channel_size (out_w·out_h).
    """
    _scale_check(scales.shape, src.shape, scale_wh)
    size = src.size
    flat_scales = np.asarray(scales, float).reshape(-1)
    flat_src = np.asarray(src, float).reshape(size)
    flat_dz = np.asarray(dz, float).reshape(size)
    d_scales, d_src = np.zeros(flat_scales.size), np.zeros(size)
    for i in range(size):
        k = _scale_index(i, src.shape, scale_wh)
        d_scales[k] += flat_dz[i] * flat_src[i]
        d_src[i] += flat_scales[k] * flat_dz[i]
    return d_scales.reshape(scales.shape), d_src.reshape(src.shape)


# --- [local_avgpool] (AlexeyAB/darknet src/maxpool_layer.c, parse_local_avgpool) -------------

def local_avgpool_out_size(h, w, size, stride_x, stride_y, padding):
    """make_maxpool_layer's (out_h, out_w): (in + padding − size) / stride + 1."""
    return (h + padding - size) // stride_y + 1, (w + padding - size) // stride_x + 1


def _local_avgpool_windows(x_shape, size, stride_x, stride_y, padding):
    """Per output (k, i, j) of one image: the (cur_h, cur_w) of its window's valid cells,
    forward_local_avgpool_layer's loops (w_offset = h_offset = −pad/2)."""
    _, chans, h, w = x_shape
    out_h, out_w = local_avgpool_out_size(h, w, size, stride_x, stride_y, padding)
    offset = -_c_div(padding, 2)
    windows = {}
    for k in range(chans):
        for i in range(out_h):
            for j in range(out_w):
                cells = []
                for n in range(size):
                    for m in range(size):
                        cur_h = offset + i * stride_y + n
                        cur_w = offset + j * stride_x + m
                        if 0 <= cur_h < h and 0 <= cur_w < w:
                            cells.append((cur_h, cur_w))
                windows[k, i, j] = cells
    return (out_h, out_w), windows


def local_avgpool_forward(x, size, stride_x, stride_y, padding):
    """x (N, C, H, W) -> (N, C, OH, OW): each window's sum of its valid cells / their count
    (`avg / counter`, float32 in AlexeyAB, summed in window order)."""
    (out_h, out_w), windows = _local_avgpool_windows(x.shape, size, stride_x, stride_y, padding)
    y = np.zeros((x.shape[0], x.shape[1], out_h, out_w))
    for b in range(x.shape[0]):
        for (k, i, j), cells in windows.items():
            total = 0.0
            for cur_h, cur_w in cells:
                total += x[b, k, cur_h, cur_w]
            y[b, k, i, j] = total / len(cells)
    return y


def local_avgpool_backward(x_shape, dy, size, stride_x, stride_y, padding, *, darknet=False):
    """dy (N, C, OH, OW) -> dx (x_shape): each window's dy / count to each of its valid cells,
    the exact adjoint of local_avgpool_forward.

    darknet=True: backward_local_avgpool_layer (CPU) instead, dy / size² to each valid cell,
    which is the adjoint only where every window lies inside the input.
    """
    _, windows = _local_avgpool_windows(x_shape, size, stride_x, stride_y, padding)
    dx = np.zeros(x_shape)
    for b in range(x_shape[0]):
        for (k, i, j), cells in windows.items():
            share = dy[b, k, i, j] / (size * size if darknet else len(cells))
            for cur_h, cur_w in cells:
                dx[b, k, cur_h, cur_w] += share
    return dx
