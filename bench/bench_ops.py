"""Micro-benchmark of darkbp's kernels against PyTorch CPU, forward + backward.

    python bench/bench_ops.py [--threads 1] [--batch 64] [--repeat 50] [--mallopt]
    python bench/bench_ops.py --cfg resnet_cifar --mallopt     # every conv of a cfg

Times, float32, median of --repeat runs, each kernel as the layers call it:
the convolutions of cfg/mnist.cfg (20 5x5 on 28x28x1, 50 5x5 on 12x12x20)
and cfg/grouped.cfg (16 3x3 on 28x28x1, 32 3x3 in 4 groups on 14x14x16, the
depthwise 3x3/2 on 14x14x32, 64 1x1 in 2 groups on 7x7x32), with biases, on
input stored as the previous layer leaves it (CHWN, see darkbp/ops/layout.py)
and output kept in the conv's layout, inside `kernel_buffers`; the 2x2 max
pools, training (forward + backward) and evaluation (forward alone); a batch
norm and a softmax + cross-entropy.  A network's first conv computes no input
gradient, in darkbp and in torch alike.  The conv rows also time both column
layouts, to check `choose_layout`.  The script re-runs itself with
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS set, so BLAS honours
--threads.

--cfg NAME (a path, or a name in cfg/) times instead each distinct [convolutional] of that
cfg (how many times it occurs beside it), forward + backward as above, with each
framework's GFLOP/s (Darknet's FLOPs: forward, dW and, but in a first layer, dx), and
one float32 `np.matmul` of 512x512 by 512x512 for what NumPy's BLAS reaches on a large
square product.

--mallopt keeps freed memory in glibc's heap (M_MMAP_THRESHOLD and
M_TRIM_THRESHOLD raised): otherwise glibc hands the kernels' multi-MB
temporaries back to the OS after each call and page-faults them in again on
the next (~1500 faults, ~2-3 ms, per LeNet conv2 forward+backward).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def keep_freed_memory():
    """glibc: serve big arrays from the heap and never trim it (mallopt, Linux only)."""
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 30)


def median_ms(fn, repeat):
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


# (name, channels, size of the square input, filters, size, stride, padding, groups, first layer)
CONVS = (
    ("mnist conv1 20 5x5 28x28x1", 1, 28, 20, 5, 1, 0, 1, True),
    ("mnist conv2 50 5x5 12x12x20", 20, 12, 50, 5, 1, 0, 1, False),
    ("grouped conv 16 3x3 28x28x1", 1, 28, 16, 3, 1, 1, 1, True),
    ("grouped conv 32 3x3/g4 14x14x16", 16, 14, 32, 3, 1, 1, 4, False),
    ("grouped dw 32 3x3/2 14x14x32", 32, 14, 32, 3, 2, 1, 32, False),
    ("grouped conv 64 1x1/g2 7x7x32", 32, 7, 64, 1, 1, 0, 2, False),
)
POOLS = (("maxpool 2/2 24x24x20", 20, 24), ("maxpool 2/2 8x8x50", 50, 8),
         ("maxpool 2/2 28x28x16", 16, 28))


def cfg_convs(path) -> tuple:
    """CONVS' rows for each distinct [convolutional] of a cfg (square inputs, no dilation),
    and how many layers each stands for."""
    from collections import Counter

    from darkbp.network import parse_network

    counts = Counter()
    for layer in parse_network(path).layers:
        if layer.type != "convolutional":
            continue
        c, h, w = layer.in_shape
        if h != w or layer.dilation != 1 or layer.antialiasing:
            raise SystemExit(f"bench_ops: layer {layer.index}: only square, undilated convs")
        counts[(c, h, layer.filters, layer.size, layer.stride, layer.padding, layer.groups,
                layer.index == 0)] += 1
    rows = tuple((f"{f} {k}x{k}/{st}{f'/g{g}' if g > 1 else ''} {hw}x{hw}x{c}"
                  f"{' (first)' if first else ''}", c, hw, f, k, st, p, g, first)
                 for (c, hw, f, k, st, p, g, first) in counts)
    return rows, [counts[key] for key in counts]


def conv_gflop(batch: int, c, hw, f, size, stride, padding, groups, first) -> float:
    """A conv's forward + backward FLOPs (Darknet's count), in GFLOP."""
    out = (hw + 2 * padding - size) // stride + 1
    forward = 2.0 * f * (c // groups) * size * size * out * out * batch / 1e9
    return forward * (2 if first else 3)


def darkbp_cases(batch, convs=CONVS, extras=True):
    from darkbp.ops import conv, im2col
    from darkbp.ops.batchnorm import batchnorm_backward, batchnorm_forward
    from darkbp.ops.buffers import kernel_buffers
    from darkbp.ops.layout import as_nchw, ordered
    from darkbp.ops.maxpool import maxpool_backward, maxpool_forward
    from darkbp.ops.softmax import cross_entropy, softmax_cross_entropy_backward, softmax_forward

    rng = np.random.default_rng(0)
    f32 = np.float32
    cases = {}

    def stored(shape, layout):
        a = rng.standard_normal(shape).astype(f32)
        return as_nchw(ordered(a, layout), layout)

    def conv_case(c, hw, f, size, stride, padding, groups, first, layout=None):
        chosen = layout or im2col.choose_layout(batch)
        x = stored((batch, c, hw, hw), "NCHW" if first else chosen)
        w = rng.standard_normal((f, c // groups, size, size)).astype(f32)
        b = rng.standard_normal(f).astype(f32)
        out = (hw + 2 * padding - size) // stride + 1
        dy = stored((batch, f, out, out), chosen)

        @kernel_buffers
        def run():
            original = conv.choose_layout
            if layout:
                conv.choose_layout = lambda *shape: layout
            try:
                _, cache = conv.conv_forward(x, w, stride, padding, groups, True, b)
                conv.conv_backward(dy, cache, w, need_dx=not first)
            finally:
                conv.choose_layout = original
        return run

    for name, *args in convs:
        cases[name] = conv_case(*args)
        if extras:
            for layout in im2col.LAYOUTS:
                cases[f"  {name} [{layout}]"] = conv_case(*args, layout=layout)
    if not extras:
        return cases

    def pool_case(c, hw, train):
        x = stored((batch, c, hw, hw), "CHWN")

        @kernel_buffers
        def run():
            y, cache = maxpool_forward(x, 2, 2, 1, backward=train)
            if train:
                maxpool_backward(np.ones_like(y), cache)
        return run

    for name, c, hw in POOLS:
        cases[name] = pool_case(c, hw, True)
        cases[f"  {name} forward only"] = pool_case(c, hw, False)

    xb = rng.standard_normal((batch, 20, 576)).astype(f32)
    scales = np.ones(20, f32)

    def bn():
        y, cache = batchnorm_forward(xb, scales, np.zeros(20, f32), np.ones(20, f32), True)
        batchnorm_backward(y, cache)
    cases["batchnorm 24x24x20"] = bn

    logits = rng.standard_normal((batch, 10)).astype(f32)
    truth = np.eye(10, dtype=f32)[rng.integers(0, 10, batch)]

    def sm():
        p = softmax_forward(logits)
        cross_entropy(p, truth)
        softmax_cross_entropy_backward(p, truth, 1, 1.0)
    cases["softmax+xent 10"] = sm
    return cases


def torch_cases(batch, threads, convs=CONVS, extras=True):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return {}
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    cases = {}

    def conv_case(c, hw, f, size, stride, padding, groups, first):
        x = torch.randn(batch, c, hw, hw, generator=g, requires_grad=not first)
        w = torch.randn(f, c // groups, size, size, generator=g, requires_grad=True)
        b = torch.randn(f, generator=g, requires_grad=True)
        out = (hw + 2 * padding - size) // stride + 1
        dy = torch.randn(batch, f, out, out, generator=g)
        inputs = [w, b] if first else [x, w, b]
        return lambda: torch.autograd.grad(F.conv2d(x, w, b, stride, padding, 1, groups),
                                           inputs, dy)

    for name, *args in convs:
        cases[name] = conv_case(*args)
    if not extras:
        return cases

    def pool_case(c, hw, train):
        x = torch.randn(batch, c, hw, hw, generator=g, requires_grad=train)

        def run():
            if train:
                y = F.max_pool2d(x, 2, 2)
                torch.autograd.grad(y, [x], torch.ones_like(y))
            else:
                with torch.inference_mode():
                    F.max_pool2d(x, 2, 2)
        return run

    for name, c, hw in POOLS:
        cases[name] = pool_case(c, hw, True)
        cases[f"  {name} forward only"] = pool_case(c, hw, False)

    xb = torch.randn(batch, 20, 24, 24, generator=g, requires_grad=True)
    wb = torch.ones(20, requires_grad=True)
    rm, rv = torch.zeros(20), torch.ones(20)

    def bn():
        y = F.batch_norm(xb, rm, rv, wb, None, training=True, momentum=0.01, eps=1e-5)
        torch.autograd.grad(y, [xb, wb], y.detach())
    cases["batchnorm 24x24x20"] = bn

    logits = torch.randn(batch, 10, generator=g, requires_grad=True)
    labels = torch.randint(0, 10, (batch,), generator=g)
    cases["softmax+xent 10"] = lambda: torch.autograd.grad(
        F.cross_entropy(logits, labels, reduction="sum"), [logits])
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--mallopt", action="store_true", help="keep freed memory in the heap")
    parser.add_argument("--cfg", help="time the convolutions of this cfg instead")
    args = parser.parse_args()

    if os.environ.get("OMP_NUM_THREADS") != str(args.threads):
        env = dict(os.environ, **{v: str(args.threads) for v in THREAD_VARS})
        sys.exit(subprocess.call([sys.executable, *sys.argv], env=env))
    if args.mallopt:
        keep_freed_memory()

    if args.cfg:
        return cfg_main(args)
    ours = {k: median_ms(fn, args.repeat) for k, fn in darkbp_cases(args.batch).items()}
    theirs = {k: median_ms(fn, args.repeat)
              for k, fn in torch_cases(args.batch, args.threads).items()}
    print(f"forward+backward, float32, batch {args.batch}, {args.threads} thread(s), "
          f"median of {args.repeat} (ms){', mallopt' if args.mallopt else ''}")
    width = max(map(len, ours))
    print(f"{'kernel':{width}s} {'darkbp':>8s} {'torch':>8s} {'torch/darkbp':>13s}")
    for name, ms in ours.items():
        t = theirs.get(name)
        tail = f"{t:8.3f} {t / ms:13.2f}" if t is not None else ""
        print(f"{name:{width}s} {ms:8.3f} {tail}")



def cfg_main(args) -> None:
    """--cfg: each distinct conv of the cfg in both frameworks, and a large square matmul."""
    from bench import _find_cfg                  # bench/bench.py, beside this script
    convs, counts = cfg_convs(_find_cfg(args.cfg))
    ours = {k: median_ms(fn, args.repeat)
            for k, fn in darkbp_cases(args.batch, convs, extras=False).items()}
    theirs = {k: median_ms(fn, args.repeat)
              for k, fn in torch_cases(args.batch, args.threads, convs, extras=False).items()}
    print(f"{args.cfg}: each conv forward+backward, float32, batch {args.batch}, "
          f"{args.threads} thread(s), median of {args.repeat} (ms){', mallopt' if args.mallopt else ''}")
    width = max(map(len, ours))
    print(f"{'conv':{width}s} {'layers':>6s} {'darkbp':>8s} {'torch':>8s} {'torch/darkbp':>13s} "
          f"{'darkbp GFLOP/s':>15s} {'torch GFLOP/s':>14s}")
    for (name, *shape), count in zip(convs, counts):
        ms, t = ours[name], theirs.get(name)
        gflop = conv_gflop(args.batch, *shape)
        tail = (f"{t:8.3f} {t / ms:13.2f} {gflop / ms * 1e3:15.1f} {gflop / t * 1e3:14.1f}"
                if t is not None else f"{'':8s} {'':13s} {gflop / ms * 1e3:15.1f}")
        print(f"{name:{width}s} {count:6d} {ms:8.3f} {tail}")
    a = np.random.default_rng(0).random((512, 512), np.float32)
    print(f"np.matmul 512x512x512 float32: "
          f"{2 * 512 ** 3 / median_ms(lambda: a @ a, args.repeat) / 1e6:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
