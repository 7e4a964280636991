"""Where one training step's time goes: darkbp per operation, beside torch's profiler.

    python bench/bench.py --profile --cfg residual
    python bench/bench.py --profile --cfg resnet_cifar --cfg yolo-digits --windows 5 --json p.json

bench.py's --profile mode (this module is not a script; named bench_profile, not profile,
because torch imports the standard library's `profile` and bench/ comes first on a
script's sys.path).  For each --cfg, one child process at 1 thread (bench.py's children,
the same pools of batches, `_DarkbpRunner` and `_TorchRunner` steps) runs, after three
warm-up steps, --windows rounds of one plain step and one profiled step, and reports:

darkbp  the profiled step's time by category (below), in ms per step and share of the
        step, beside the plain step's time (the median of each: their difference is what
        the timers cost); the BLAS products' FLOPs (2·P·K·M of each `np.matmul`, as run:
        a bias riding in a product as a row of ones counts) and GFLOP/s for the
        convolutions' forward, dW and dx products; and the GEMM share, the part of the
        step spent in BLAS: darkbp's own limit, were everything outside BLAS free.
torch   `torch.profiler.profile` over the twin's steps (bench/twin.py): the operators by
        self CPU time, in ms per step and share of the profiled step, and what is outside
        any operator (Python, the autograd engine); its plain step's median beside.
        One table holds both, darkbp's categories on the left and torch's operators on
        the right, each by its own ranking; below it, the time each framework spends in
        its convolutions (darkbp: its GEMM, im2col/col2im, conv other and depthwise
        categories; torch: the operators named *convolution*).

darkbp's categories come from timers wrapped around its functions at run time, where the
code looks them up (a module that imported a function holds its own name for it); darkbp
itself is not changed, and the wrappers are removed after each profiled step.  Each timer
counts its own time less that of the timers called inside it, so nothing is counted
twice: the GEMM inside conv_forward is GEMM, the rest of conv_forward is "conv other".
The step itself is the outermost timer: what no inner timer claims is "rest" (Python
between the layers, Runner, reshapes, layers without a category such as [local] and
[dropout]), and the categories add up to the profiled step.

  GEMM forward, dW, dx   the convolutions' `np.matmul` calls (darkbp/ops/conv.py), by
                         what runs them: conv_forward; the dW products; the rest of
                         conv_backward
  GEMM connected         [connected] layers' forward and backward, whose products are `@`
                         (their tails excluded; their FLOPs 2·inputs·outputs·N a product)
  im2col forward         the forward products' columns: im2col, or the chunked columns
                         (a batch stored CHWN) and their zero padding
  im2col / col2im bwd    the same in conv_backward: the chunked columns made again for dW
                         (and for dx where it is a convolution of dy), col2im
  conv other             the rest of conv_forward and conv_backward: bias adds, the dW
                         chunks' sums and transposes, the bias gradient
  depthwise conv         the direct depthwise kernel (no GEMM)
  batch-norm tail        AffineLayer's tail and [batchnorm]: normalisation, scale, bias
  activations            every activation's forward and backward (darkbp/ops/activations)
  shortcut / route       [shortcut], [route], [upsample], and Network.backward's own time:
                         the sums of gradients where outputs branch (and its loop)
  pooling                [maxpool], [avgpool]
  layout changes         ops/layout.py's `ordered`: NCHW <-> CHWN copies
  cost                   [softmax], [cost] and the detection heads: forward, cost, gradient
  box matching           the heads' target assignment (train_targets)
  SGD + EMA              SGD.step and, where the cfg sets ema=, EMA.update (as Trainer)

At 1 thread only: with more, darkbp's Runner splits a classifier's batch over worker
processes, whose time these timers do not see.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

GEMM_FORWARD, GEMM_DW, GEMM_DX = "GEMM forward", "GEMM dW", "GEMM dx"
GEMM_CONNECTED = "GEMM connected"
IM2COL_FORWARD, IM2COL_BACKWARD = "im2col forward", "im2col / col2im backward"
CONV_OTHER = "conv other"
DEPTHWISE = "depthwise conv"
TAIL = "batch-norm tail"
ACTIVATIONS = "activations"
COPIES = "shortcut / route"
POOLING = "pooling"
LAYOUT = "layout changes"
COST = "cost"
MATCHING = "box matching"
SGD_EMA = "SGD + EMA"
REST = "rest"
CATEGORIES = (GEMM_FORWARD, GEMM_DW, GEMM_DX, GEMM_CONNECTED, IM2COL_FORWARD, IM2COL_BACKWARD,
              CONV_OTHER, DEPTHWISE, TAIL, ACTIVATIONS, COPIES, POOLING, LAYOUT, COST, MATCHING,
              SGD_EMA, REST)
GEMMS = (GEMM_FORWARD, GEMM_DW, GEMM_DX, GEMM_CONNECTED)
_PHASE_GEMM = {"forward": GEMM_FORWARD, "dW": GEMM_DW, "dx": GEMM_DX}
IM2COL = {"forward": IM2COL_FORWARD, "dW": IM2COL_BACKWARD, "dx": IM2COL_BACKWARD}  # by phase

# Module functions: (module, name, category, phase).  A phase says which convolution
# product an `np.matmul` inside is (the innermost phase wins).
FUNCTIONS = (
    ("darkbp.ops.conv", "conv_forward", CONV_OTHER, "forward"),
    ("darkbp.ops.conv", "conv_backward", CONV_OTHER, "dx"),
    ("darkbp.ops.conv", "_matmul_t_sum", CONV_OTHER, "dW"),
    ("darkbp.ops.conv", "_chunked_dweights", CONV_OTHER, "dW"),
    ("darkbp.ops.conv", "_padded", IM2COL, None),
    ("darkbp.ops.im2col", "im2col", IM2COL, None),
    ("darkbp.ops.im2col", "col2im", IM2COL, None),
    ("darkbp.ops.depthwise", "depthwise_forward", DEPTHWISE, None),
    ("darkbp.ops.depthwise", "depthwise_backward", DEPTHWISE, None),
    ("darkbp.ops.layout", "ordered", LAYOUT, None),
)
GENERATORS = (("darkbp.ops.conv", "_column_chunks", IM2COL),)   # timed at each next()
# Methods: (module, class, names, category), wrapped on the class that defines them.
METHODS = (
    ("darkbp.layers.affine", "AffineLayer", ("_tail_forward", "_tail_backward"), TAIL),
    ("darkbp.layers.batchnorm", "BatchnormLayer", ("forward", "backward"), TAIL),
    ("darkbp.layers.shortcut", "ShortcutLayer", ("forward", "backward"), COPIES),
    ("darkbp.layers.route", "RouteLayer", ("forward", "backward"), COPIES),
    ("darkbp.layers.upsample", "UpsampleLayer", ("forward", "backward"), COPIES),
    ("darkbp.network", "Network", ("backward",), COPIES),
    ("darkbp.layers.maxpool", "MaxpoolLayer", ("forward", "backward"), POOLING),
    ("darkbp.layers.avgpool", "AvgpoolLayer", ("forward", "backward"), POOLING),
    ("darkbp.network", "Network", ("cost",), COST),
    ("darkbp.layers.softmax", "SoftmaxLayer", ("forward", "backward", "cost", "input_grad"),
     COST),
    ("darkbp.layers.cost", "CostLayer", ("forward", "cost", "input_grad"), COST),
    ("darkbp.layers.yolo", "YoloLayer", ("forward", "cost", "input_grad"), COST),
    ("darkbp.layers.region", "RegionLayer", ("forward", "cost", "input_grad"), COST),
    ("darkbp.layers.detection", "DetectionLayer", ("forward", "cost", "input_grad"), COST),
    ("darkbp.layers.yolo", "YoloLayer", ("train_targets",), MATCHING),
    ("darkbp.layers.region", "RegionLayer", ("train_targets",), MATCHING),
    ("darkbp.layers.detection", "DetectionLayer", ("train_targets",), MATCHING),
    ("darkbp.sgd", "SGD", ("step",), SGD_EMA),
    ("darkbp.ema", "EMA", ("update",), SGD_EMA),
)
ACTIVATION_FIELDS = ("forward", "backward", "in_place", "backward_in_place")


class Profiler:
    """Timers around darkbp's functions, by category, for the steps run through `step`.

        profiler = Profiler()
        seconds = profiler.step(train_step)     # the step's time, its parts in .seconds
        profiler.seconds, profiler.flops        # category -> s; GEMM category -> FLOPs

    The timers are in place during `step` only.  Times and FLOPs add up over steps.
    """

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.flops: dict[str, float] = defaultdict(float)
        self.steps = 0
        self._stack: list[list] = []          # open timers: [category, inner seconds, phase]
        self._last_root = 0.0                 # the outermost timer's last time
        self._gemm = {phase: self._timed(np.matmul, category)
                      for phase, category in _PHASE_GEMM.items()}

    def step(self, run) -> float:
        """Run `run()` with the timers in place; its seconds."""
        undo = self._install()
        try:
            self._timed(run, REST)()
            self.steps += 1
            return self._last_root
        finally:
            for restore in reversed(undo):
                restore()

    # ------------------------------------------------------------------ timers
    def _timed(self, function, category: str | dict, phase: str | None = None, flops=None):
        """`function` timed as `category` (a dict: the category of the phase it runs in): its
        time less its inner timers' (`flops(*args)`: FLOPs it runs, counted in `category`)."""
        stack, seconds, clock = self._stack, self.seconds, time.perf_counter

        @functools.wraps(function)
        def timed(*args, **kwargs):
            frame = [category if isinstance(category, str) else category[self._phase()], 0.0,
                     phase]
            stack.append(frame)
            start = clock()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = clock() - start
                stack.pop()
                seconds[frame[0]] += elapsed - frame[1]
                if stack:
                    stack[-1][1] += elapsed
                else:
                    self._last_root = elapsed
                if flops is not None:
                    self.flops[category] += flops(*args)
        return timed

    def _timed_generator(self, function, category: str):
        """A generator function whose every next() is timed as `category` (the caller's
        loop body between two items is not)."""
        done = object()

        @functools.wraps(function)
        def timed(*args, **kwargs):
            items = function(*args, **kwargs)
            advance = self._timed(lambda: next(items, done), category)
            while (item := advance()) is not done:
                yield item
        return timed

    def _phase(self) -> str:
        """The innermost open timer's phase: forward, dW or dx (forward outside any)."""
        return next((frame[2] for frame in reversed(self._stack) if frame[2]), "forward")

    def _matmul(self, a, b, *args, **kwargs):
        """np.matmul, timed as the GEMM of the innermost phase, its FLOPs counted."""
        phase = self._phase()
        product = self._gemm[phase](a, b, *args, **kwargs)
        # (..., P, K) @ (..., K, M) -> (..., P, M): K multiply-adds for each value made
        self.flops[_PHASE_GEMM[phase]] += 2.0 * product.size * a.shape[-1]
        return product

    # ------------------------------------------------------------------ installing
    def _install(self) -> list:
        """Put every timer in place; the functions that take them out again."""
        import darkbp.layers  # noqa: F401  (every layer module, as the network's REGISTRY)
        import darkbp.ema  # noqa: F401
        import darkbp.sgd  # noqa: F401
        from darkbp.ops import activations, conv
        undo = []

        def swap(owner, name, value):
            original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            setattr(owner, name, value)
            undo.append(lambda: setattr(owner, name, original))

        modules = [module for key, module in list(sys.modules.items())
                   if key.startswith("darkbp.") and module is not None]
        for module_name, name, category, phase in FUNCTIONS:
            original = getattr(sys.modules[module_name], name)
            timed = self._timed(original, category, phase)
            for module in modules:              # wherever a module holds the function
                for key, value in list(vars(module).items()):
                    if value is original:
                        swap(module, key, timed)
        for module_name, name, category in GENERATORS:
            module = sys.modules[module_name]
            swap(module, name, self._timed_generator(getattr(module, name), category))
        for module_name, class_name, names, category in METHODS:
            cls = getattr(sys.modules[module_name], class_name)
            for name in names:
                swap(cls, name, self._timed(cls.__dict__[name], category))
        from darkbp.layers.connected import ConnectedLayer
        swap(ConnectedLayer, "forward", self._timed(ConnectedLayer.__dict__["forward"],
                                                    GEMM_CONNECTED, flops=_connected_forward))
        swap(ConnectedLayer, "backward", self._timed(ConnectedLayer.__dict__["backward"],
                                                     GEMM_CONNECTED, flops=_connected_backward))
        swap(conv, "np", _NumpyTimedMatmul(self._matmul))
        for key, act in list(activations.ACTIVATIONS.items()):
            timed = dataclasses.replace(act, **{
                field: self._timed(getattr(act, field), ACTIVATIONS)
                for field in ACTIVATION_FIELDS if getattr(act, field) is not None})
            activations.ACTIVATIONS[key] = timed
            undo.append(functools.partial(activations.ACTIVATIONS.__setitem__, key, act))
        return undo


class _NumpyTimedMatmul:
    """numpy, with `matmul` timed: what darkbp/ops/conv.py sees as `np` while profiled."""

    def __init__(self, matmul):
        self.matmul = matmul

    def __getattr__(self, name):
        return getattr(np, name)


def _connected_forward(layer, x, ctx) -> float:
    return 2.0 * layer.inputs * layer.outputs * x.shape[0]          # W @ xᵀ


def _connected_backward(layer, dy, need_dx=True) -> float:
    products = 2 if need_dx else 1                                   # dW, and dx
    return products * 2.0 * layer.inputs * layer.outputs * dy.shape[0]


# ====================================================================== child
def child(bench, job: dict) -> dict:
    """The profile of job["cfg"] (bench.py's `_run_child`; `bench`: bench.py's module)."""
    bench._import_darkbp(1)
    pool = dict(np.load(job["pool"]))
    result = {"darkbp": _profile_darkbp(bench, job, pool)}
    if job["torch"]:
        bench._import_torch(1)
        result["torch"] = _profile_torch(bench, job, pool)
    result["kernels"] = bench._kernels(job["torch"])
    return result


def _timed_step(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _profile_darkbp(bench, job: dict, pool: dict) -> dict:
    from darkbp.ema import EMA
    runner = bench._DarkbpRunner(job, pool)
    decay = runner.network.config.ema
    ema = EMA(runner.network.layers, decay) if decay else None

    def step():                                # Trainer's: the passes, SGD, the EMA
        runner.train_step()
        if ema is not None:
            ema.update()

    for _ in range(3):
        step()
    profiler = Profiler()
    plain, profiled = [], []
    for _ in range(job["windows"]):            # alternating: noise hits both alike
        plain.append(_timed_step(step))
        profiled.append(profiler.step(step))
    runner.runner.close()
    steps = profiler.steps
    categories = {name: profiler.seconds.get(name, 0.0) / steps * 1e3 for name in CATEGORIES}
    gemm = {name: {"ms": categories[name], "gflop": profiler.flops.get(name, 0.0) / steps / 1e9}
            for name in GEMMS}
    return {"plain_ms": [s * 1e3 for s in plain], "profiled_ms": [s * 1e3 for s in profiled],
            "ema": decay, "categories": categories, "gemm": gemm,
            "gemm_share": sum(categories[name] for name in GEMMS) / sum(categories.values())}


def _profile_torch(bench, job: dict, pool: dict, top: int = 12) -> dict:
    from torch.profiler import ProfilerActivity, profile
    runner = bench._TorchRunner(job, pool)
    for _ in range(3):
        runner.train_step()
    plain = [_timed_step(runner.train_step) for _ in range(job["windows"])]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        profiled = [_timed_step(runner.train_step) for _ in range(job["windows"])]
    steps = len(profiled)
    ops = sorted(((event.key, event.self_cpu_time_total / 1e3 / steps)
                  for event in prof.key_averages()), key=lambda op: -op[1])
    step_ms = sum(profiled) * 1e3 / steps
    inside = sum(ms for _, ms in ops)
    return {"plain_ms": [s * 1e3 for s in plain], "profiled_ms": [s * 1e3 for s in profiled],
            "step_ms": step_ms,
            "operators": [{"name": name, "ms": ms} for name, ms in ops[:top]],
            "other_operators_ms": sum(ms for _, ms in ops[top:]),
            "outside_operators_ms": step_ms - inside}


# ====================================================================== parent
def run(bench, cfgs: list[Path], args, use_torch: bool) -> dict:
    """Profile each cfg in a child process (`bench`: bench.py's module); the report."""
    from darkbp.network import parse_network

    if args.threads not in (None, "1"):
        raise bench._BenchError("--profile runs at 1 thread (the Runner's worker processes "
                                "are out of its timers' sight)")
    networks = [parse_network(cfg) for cfg in cfgs]
    for network in networks:
        network.check_trainable()
    machine = bench._machine()
    results = []
    with tempfile.TemporaryDirectory(prefix="darkbp-profile-") as tmp:
        pools = bench._Pools(Path(tmp), args.batch)
        for cfg, network in zip(cfgs, networks):
            pool, source = pools.pool(network)
            problem = bench._twin().unsupported(network) if use_torch else None
            if problem:
                print(f"bench: {bench._short(cfg)}: no torch twin ({problem}); darkbp only",
                      file=sys.stderr)
            job = {"kind": "profile", "cfg": str(cfg), "pool": str(pool), "batch": args.batch,
                   "windows": args.windows, "torch": use_torch and not problem}
            bench._console().print(f"[bold]{bench._short(cfg)}[/bold], 1 thread, "
                                   f"batch {args.batch}, {source}")
            row = bench._run(job, 1, f"profile, {args.windows} rounds")
            row.update(cfg=bench._short(cfg), threads=1, batch=args.batch, input=source,
                       bflops=sum(layer.bflops for layer in network.layers))
            results.append(row)
    report = {"mode": "profile", "machine": machine,
              "settings": {"batch": args.batch, "windows": args.windows, "threads": 1},
              "results": results}
    render(report)
    return report


def render(report: dict, console=None) -> None:
    """The tables of a report: per cfg darkbp's categories, its GEMMs, torch's operators."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False, width=132)
    for row in report["results"]:
        ours = row["darkbp"]
        step = sum(ours["categories"].values())
        plain = statistics.median(ours["plain_ms"])
        profiled = statistics.median(ours["profiled_ms"])
        title = f"{row['cfg']}, batch {row['batch']}, 1 thread, {row['input']}"
        console.print(f"[bold]darkbp[/bold]" + (" and [bold]torch[/bold]" if "torch" in row
                                                 else "") + f": {title}")
        console.print(_side_by_side(ours, row.get("torch"), Table))
        console.print(f"  profiled step {step:.1f} ms (mean; median {profiled:.1f}), plain step "
                      f"{plain:.1f} ms (median of {len(ours['plain_ms'])}): the timers cost "
                      f"~{profiled - plain:.1f} ms a step"
                      + (f"; SGD + EMA: the cfg's ema={ours['ema']:g}" if ours["ema"] else ""))
        for name, gemm in ours["gemm"].items():
            if gemm["ms"] > 0:
                console.print(f"  {name:15} {gemm['ms']:8.2f} ms  {gemm['gflop']:7.3f} GFLOP  "
                              f"{gemm['gflop'] / gemm['ms'] * 1e3:6.1f} GFLOP/s")
        blas = ours["gemm_share"]
        console.print(f"  GEMM share: {blas:.1%} of the step in BLAS ({blas * step:.1f} of "
                      f"{step:.1f} ms); were everything outside BLAS free, a step would take "
                      f"~{blas * plain:.1f} ms of the plain {plain:.1f} ms, "
                      f"{1 / max(blas, 1e-9):.1f}x as fast")
        if "torch" in row:
            theirs = row["torch"]
            console.print(f"  torch.profiler, self CPU time; profiled step "
                          f"{theirs['step_ms']:.1f} ms (mean), plain step "
                          f"{statistics.median(theirs['plain_ms']):.1f} ms (median of "
                          f"{len(theirs['plain_ms'])})")
            mine, yours = convolution_ms(ours, theirs)
            console.print(f"  convolutions in all (darkbp: its GEMMs, im2col/col2im and conv "
                          f"other; torch: the operators named *convolution*): darkbp "
                          f"{mine:.1f} ms ({mine / step:.0%} of its profiled step), torch "
                          f"{yours:.1f} ms ({yours / theirs['step_ms']:.0%})")
        console.print()


CONVOLUTION = (GEMM_FORWARD, GEMM_DW, GEMM_DX, IM2COL_FORWARD, IM2COL_BACKWARD, CONV_OTHER,
               DEPTHWISE)


def convolution_ms(ours: dict, theirs: dict) -> tuple[float, float]:
    """Each framework's time in its convolutions, ms per profiled step: darkbp's convolution
    categories; torch's operators with "convolution" in their name (forward, backward and
    autograd's node), among those the report kept."""
    mine = sum(ours["categories"].get(name, 0.0) for name in CONVOLUTION)
    yours = sum(op["ms"] for op in theirs["operators"] if "convolution" in op["name"].lower())
    return mine, yours


def _side_by_side(ours: dict, theirs: dict | None, Table):
    """darkbp's categories and, beside them, torch's operators (each by time, largest first,
    as share of its own profiled step)."""
    sides = [("darkbp category", [(name, ms) for name, ms in ours["categories"].items()
                                  if ms > 0], sum(ours["categories"].values()))]
    if theirs:
        rows = [(op["name"], op["ms"]) for op in theirs["operators"]]
        rows += [("other operators", theirs["other_operators_ms"]),
                 ("outside operators (Python, autograd)", theirs["outside_operators_ms"])]
        sides.append(("torch operator", rows, theirs["step_ms"]))
    table = Table()
    for title, _, _ in sides:
        table.add_column(title)
        table.add_column("ms / step", justify="right")
        table.add_column("share", justify="right")
    columns = [[[name, f"{ms:.2f}", f"{ms / step:.1%}"] for name, ms in rows]
               for _, rows, step in sides]
    for row in itertools.zip_longest(*columns, fillvalue=["", "", ""]):
        table.add_row(*itertools.chain(*row))
    table.add_row(*itertools.chain(*(["step", f"{step:.2f}", "100%"] for *_, step in sides)),
                  style="bold")
    return table
