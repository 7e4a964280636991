"""darkbp against PyTorch on the CPU, whole networks: training and forward images/s, peak memory.

    DARKBP_DATA=/work/shared/data python bench/bench.py
    python bench/bench.py --cfg residual --threads 1 --windows 5 --json bench.json
    python bench/bench.py --cfg yolo-digits --windows 3          # the detector
    python bench/bench.py --profile --cfg residual    # per operation: bench/bench_profile.py
    python bench/bench.py --no-torch
    DARKBP_DATA=/work/shared/data python bench/bench.py --time-to-accuracy

Throughput (the default mode), for each --cfg (default: the bench cfgs, LeNet
cfg/mnist.cfg, cfg/grouped.cfg, cfg/batchnorm.cfg, cfg/residual.cfg,
cfg/resnet_cifar.cfg and cfg/tiny_cifar.cfg) and each thread count of --threads
(default 1,2), at --batch images (default 64):

  train img/s     one step = forward(train=True) + cost + backward + SGD update, as
                  `darkbp.train.Trainer` runs it (the cfg's momentum, decay and
                  learning_rate).  PyTorch: the twin (bench/twin.py), cross_entropy
                  (reduction="sum"), zero_grad, backward, optim.SGD.step with Darknet's
                  rule in torch's terms (lr/batch, weight decay decay·batch on weights
                  only), loss.item().
  forward img/s   evaluation mode: darkbp forward(train=False); torch model.eval() under
                  inference_mode, softmax included.
  peak RSS MiB    the peak resident set of a process that imports one framework, builds
                  the network and trains for --window-seconds (VmHWM: Linux carries
                  ru_maxrss over from the parent across exec), plus that of darkbp's
                  worker processes (2+ threads; the parameters they share with the
                  parent are counted twice); "RSS after imports" is the peak just
                  after the imports, what the framework costs before any work (torch's
                  process imports darkbp's cfg reader too, to build the twin: ~2 MiB).

Each (cfg, threads) configuration runs in fresh child processes: OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS and MKL_NUM_THREADS are set in their environment, and
`darkbp.threads.set_threads(n)` / `torch.set_num_threads(n)` run before any work;
with n > 1, darkbp's Runner (as `darkbp train --threads n`) works with n − 1 worker
processes beside its own, each on one BLAS thread: n cores for either framework.
One child per framework measures peak RSS (torch's import alone is ~200 MB);
one child measures speed with both frameworks, alternating: after a warm-up,
--windows rounds, each timing a darkbp and a torch window of --window-seconds
per figure, who goes first swapping every round, so machine noise hits both
alike (with a 0.25 s pause before each window, for the other framework's idle
threads to stop spinning).  A figure is the median over its windows; a ratio darkbp/torch is the
median of the ratios of the two windows of each round (in brackets: their
lowest and highest), > 1 where darkbp is faster (or, for RSS, bigger).

Both frameworks see the same batches: a pool of 16 batches that the parent
picks once and every child cycles.  For a 28x28x1 input they are real MNIST
training images (full MNIST from $DARKBP_DATA, else the sample shipped with
darkbp: enough for throughput); for any other input (the 32x32x3 cfgs) random
pixels and random labels (speed does not depend on which).  The torch network is
bench/twin.py's twin, built from the parsed cfg with darkbp's initial weights, and
checked before any timing, on float64 copies of both (in float32 rounding parts
them on batch-normalised networks): same forward output, same weights after two
SGD steps.  The timed runs are float32.

A detector (--cfg yolo-digits: cfg/yolo-digits.cfg, two [yolo] heads) trains on random
pixels and random boxes (Truth.random: 1 to 4 per image).  darkbp's step is the
Trainer's: Runner.train_step(x, truth, noise), which for each head assigns the
targets (the box matching of Darknet's forward_yolo_layer), computes the loss and
backward, then SGD; its Runner splits the batch between processes as for a classifier.
Its forward is `darkbp detect`'s and `map`'s: the batch split between the Runner's
processes.  The twin's step is its forward, darkbp's [yolo] loss
(s·BCE-with-logits on x, y, objectness, classes, ½·s·(t − z)² on w, h) at darkbp's
scale s and target t, backward and SGD: the box matching is NOT in the torch step.
The parent assigns each pool batch's targets once, with darkbp's heads on its
initial weights, and the twin scatters them into dense arrays in its step (as
darkbp's head fills its own); the train figure thus compares the network's forward
and backward and the loss arithmetic, and darkbp's also pays for the matching.
Forward: the heads' outputs, the logistic included.  The float64 check before
timing gives the twin, at each of its two steps, the targets darkbp assigned.

--time-to-accuracy trains cfg/residual.cfg (or the --cfg given) on full MNIST with
the library's `Trainer`, as `darkbp train cfg/residual.cfg --data mnist` does (the
cfg's batch, schedule and max_batches, which is the cap; seed 0; without the cfg's
EMA, which neither framework then runs), at --threads (default 2), evaluating the raw
weights on the test set every 200 batches, until 99.3% test accuracy.  With torch,
the same loop in PyTorch runs next: the twin with the same initial weights, data
order, batches, learning-rate schedule and evaluations.  It reports the batches
needed and, for each, the training time (the sum of the steps' times: evaluation
and darkbp's checkpoints excluded) and the wall time (everything).  Needs full
MNIST: DARKBP_DATA=/work/shared/data (a folder holding mnist/).  With a detector
(--cfg yolo-digits) it is bench/tta_detect.py instead: darkbp and the twin train the
cfg's whole schedule on mnist-det side by side (two processes advanced one epoch at a
time, alternately), the twin's targets assigned from its own outputs, and both report
mAP@0.5 on the valid split after each epoch.

BLAS kernels. Some machines set OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (older OpenBLAS
builds compute wrong results or crash on some processors), which force an older kernel
than OpenBLAS would pick (Haswell's AVX2 on an AVX-512 CPU, about half the speed on large
products); a user's machine sets neither, and torch's oneDNN ignores both. So the children
run without those two variables (only them; the tests and CI keep the environment as it
is), and --blas-env keep measures with them as set here. Each speed child reports the
kernel each framework actually ran: threadpoolctl's `architecture` of numpy's OpenBLAS,
and torch.backends.cpu.get_cpu_capability().

--json FILE saves every number, the windows included.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH_CFGS = ("cfg/mnist.cfg", "cfg/grouped.cfg", "cfg/batchnorm.cfg", "cfg/residual.cfg",
              "cfg/resnet_cifar.cfg", "cfg/tiny_cifar.cfg")
DETECTOR_CFG = "cfg/yolo-digits.cfg"   # --cfg yolo-digits: a detector, not among the defaults
TTA_CFG = "cfg/residual.cfg"
TTA_THREADS = "2"
TORCH_VERSION = "2.13.0"          # SPEC 9: the bar, and the only torch these machines install
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")   # removed for the children (--blas-env)
POOL_BATCHES = 16                 # distinct batches every child cycles through
MNIST_INPUT = (1, 28, 28)         # cfgs with this input get MNIST batches, others random ones
# Idle OpenBLAS workers spin ~0.1 s (2^28 cycles) after their last job before they
# sleep: without a pause, numpy's spinning threads eat into the next torch window.
SETTLE_SECONDS = 0.25
SEED = 0
TARGET_ACCURACY = 0.993
EVAL_EVERY = 200                  # batches between two test-set evaluations
EVAL_BATCH = 500                  # test images per forward pass, as darkbp.evaluate


# ====================================================================== parent
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        _run_child(Path(args.child))
        return 0
    if args.blas_env == "unset":              # the children inherit this environment
        for var in BLAS_VARS:
            os.environ.pop(var, None)
    try:
        threads = _thread_list(args.threads or (TTA_THREADS if args.time_to_accuracy
                                                else "1,2"))
    except ValueError as error:
        _parser().error(str(error))
    if args.batch < 1 or args.windows < 1 or args.window_seconds <= 0:
        _parser().error("--batch and --windows must be >= 1, --window-seconds > 0")
    torch_note = None if args.no_torch else _torch_unavailable()
    use_torch = not args.no_torch and torch_note is None
    if torch_note:
        print(f"bench: {torch_note}; measuring darkbp only", file=sys.stderr)

    from darkbp.errors import DarkbpError
    try:
        if args.profile:
            cfgs = [_find_cfg(c) for c in (args.cfg or BENCH_CFGS)]
            report = _profile().run(sys.modules[__name__], cfgs, args, use_torch)
        elif args.time_to_accuracy:
            cfgs = [_find_cfg(c) for c in (args.cfg or [TTA_CFG])]
            report = _time_to_accuracy(cfgs, threads, use_torch)
        else:
            cfgs = [_find_cfg(c) for c in (args.cfg or BENCH_CFGS)]
            report = _throughput(cfgs, threads, args, use_torch)
    except (DarkbpError, _BenchError) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"raw numbers: {args.json}", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/bench.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", action="append", metavar="CFG",
                        help="cfg to measure: a path, or a name in cfg/ such as residual; "
                             "repeatable (default: the six bench cfgs; cfg/residual.cfg "
                             "with --time-to-accuracy)")
    parser.add_argument("--threads", metavar="N,N",
                        help="comma-separated thread counts (default: 1,2; 2 with "
                             "--time-to-accuracy)")
    parser.add_argument("--batch", type=int, default=64, help="images per step (default: 64)")
    parser.add_argument("--windows", type=int, default=7,
                        help="timed windows per figure and framework (default: 7)")
    parser.add_argument("--window-seconds", type=float, default=1.0,
                        help="length of a window, seconds (default: 1.0)")
    parser.add_argument("--no-torch", action="store_true", help="measure darkbp only")
    parser.add_argument("--json", metavar="FILE", help="save the raw numbers to FILE")
    parser.add_argument("--blas-env", choices=("unset", "keep"), default="unset",
                        help="unset (default): the children run without OPENBLAS_CORETYPE and "
                             "OPENBLAS_L2_SIZE, as users' machines do; keep: as set here")
    parser.add_argument("--time-to-accuracy", action="store_true",
                        help="time `darkbp train` and torch to 99.3%% test accuracy on "
                             "full MNIST (needs DARKBP_DATA); with a detector (--cfg "
                             "yolo-digits), darkbp and its twin trained on mnist-det, "
                             "interleaved, mAP@0.5 after each epoch (bench/tta_detect.py)")
    parser.add_argument("--profile", action="store_true",
                        help="where one training step's time goes, per operation, at 1 thread, "
                             "beside torch's profiler; --windows profiled steps "
                             "(bench/bench_profile.py)")
    parser.add_argument("--child", metavar="JOB", help=argparse.SUPPRESS)
    return parser


class _BenchError(Exception):
    pass


def _thread_list(text: str) -> list[int]:
    try:
        threads = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--threads takes comma-separated integers, got {text!r}") from None
    if not threads or min(threads) < 1:
        raise ValueError(f"--threads takes positive integers, got {text!r}")
    return list(dict.fromkeys(threads))


def _torch_unavailable() -> str | None:
    """Why torch cannot be the bar here, or None when torch 2.13.0 is installed."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        found = version("torch")
    except PackageNotFoundError:
        return "torch is not installed"
    if found.split("+")[0] != TORCH_VERSION:
        return f"torch {found} is installed, the bar is torch {TORCH_VERSION}"
    return None


def _find_cfg(name: str) -> Path:
    """A cfg given as a path, or by its name in the repository's cfg/ ("residual")."""
    for path in (Path(name), REPO / name, REPO / "cfg" / name, REPO / "cfg" / f"{name}.cfg"):
        if path.is_file():
            return path.resolve()
    raise _BenchError(f"no such cfg: {name}")


def _console():
    from rich.console import Console
    return Console(stderr=True, highlight=False)


def _run(job: dict, threads: int, what: str) -> dict:
    """Run one child process on `job`, with `threads` everywhere; its result."""
    with tempfile.TemporaryDirectory(prefix="darkbp-bench-") as tmp:
        job = {**job, "threads": threads, "result": str(Path(tmp) / "result.json"),
               "tmp": tmp}
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        env = {**os.environ, **{var: str(threads) for var in THREAD_VARS}}
        busy = _busy_cores()
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                               str(job_path)], env=env, stdout=subprocess.DEVNULL)
        if done.returncode != 0:
            raise _BenchError(f"{what} failed (exit code {done.returncode}; its errors are above)")
        result = json.loads(Path(job["result"]).read_text())
    result["busy_cores_before"] = busy
    _console().print(f"  {what}: {time.perf_counter() - started:.0f} s"
                     f"  [dim]({busy:.1f} cores busy before)[/dim]")
    return result


# ---------------------------------------------------------------------- throughput
def _throughput(cfgs: list[Path], threads: list[int], args, use_torch: bool) -> dict:
    from darkbp.network import parse_network

    networks = [parse_network(cfg) for cfg in cfgs]
    for network in networks:
        network.check_trainable()
    unsupported = (lambda network: None) if not use_torch else _twin().unsupported
    machine = _machine()
    if machine["busy_cores"] > 0.3:
        print(f"bench: {machine['busy_cores']:.1f} of {machine['cores']} cores are busy with "
              "other work: alternation keeps the ratios fair, but the figures drop, above "
              "all with several threads", file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory(prefix="darkbp-bench-") as tmp:
        pools = _Pools(Path(tmp), args.batch)
        jobs = []                              # every cfg checked before anything runs
        for cfg, network in zip(cfgs, networks):
            pool, source = pools.pool(network)
            problem = unsupported(network)
            if problem:
                print(f"bench: {_short(cfg)}: no torch twin ({problem}); darkbp only",
                      file=sys.stderr)
            jobs.append((cfg, use_torch and not problem, source, {
                "cfg": str(cfg), "pool": str(pool), "batch": args.batch,
                "windows": args.windows, "window_seconds": args.window_seconds,
                "torch": use_torch and not problem}))
        for cfg, cfg_torch, source, job in jobs:
            for n in threads:
                _console().print(f"[bold]{_short(cfg)}[/bold], {_threads(n)}, batch {args.batch}, "
                                 f"{source}")
                row = {"cfg": _short(cfg), "threads": n, "batch": args.batch, "input": source}
                row["darkbp_memory"] = _run({**job, "kind": "memory", "framework": "darkbp"},
                                            n, "darkbp memory")
                if cfg_torch:
                    row["torch_memory"] = _run({**job, "kind": "memory", "framework": "torch"},
                                               n, "torch memory")
                row["speed"] = _run({**job, "kind": "speed"}, n,
                                    f"speed, {args.windows} rounds"
                                    + (" alternating darkbp / torch" if cfg_torch else ""))
                if cfg_torch:
                    row["ratio"] = {figure: statistics.median(
                        a / b for a, b in zip(row["speed"]["darkbp"][figure],
                                              row["speed"]["torch"][figure]))
                        for figure in ("train", "forward")}
                for name in ("darkbp", "torch")[:1 + cfg_torch]:
                    loss = row["speed"][name]["final_loss"]
                    if not math.isfinite(loss):
                        print(f"bench: {name}'s loss became {loss}: its speed was measured "
                              "on non-finite numbers", file=sys.stderr)
                results.append(row)
    report = {"mode": "throughput", "machine": machine, "data": pools.data,
              "sample": pools.sample,
              "settings": {"batch": args.batch, "windows": args.windows,
                           "window_seconds": args.window_seconds, "threads": threads,
                           "pool_batches": POOL_BATCHES},
              "results": results}
    _render_throughput(report)
    return report


class _Pools:
    """The batches every child of a cfg cycles: POOL_BATCHES x `batch` images and labels,
    one .npz per input shape and class count, in `folder`."""

    def __init__(self, folder: Path, batch: int):
        self.folder, self.batch = folder, batch
        self.paths: dict[tuple, Path] = {}
        self.data = None           # where the MNIST batches came from, once loaded
        self.sample = False        # the MNIST sample shipped with darkbp, not full MNIST

    def pool(self, network) -> tuple[Path, str]:
        """The pool file for `network`'s input, and what its images are."""
        # A detector's pool holds the targets its own heads assign: one pool per cfg.
        key = (network.input_shape, network.outputs, network.file if network.heads else None)
        if key not in self.paths:
            self.paths[key] = self._write(network, self.folder / f"pool{len(self.paths)}.npz")
        if network.heads:
            return self.paths[key], "random {2}x{1}x{0} input, random boxes".format(
                *network.input_shape)
        if network.input_shape == MNIST_INPUT:
            return self.paths[key], "MNIST sample" if self.sample else "MNIST"
        return self.paths[key], "random {2}x{1}x{0} input".format(*network.input_shape)

    def _write(self, network, path: Path) -> Path:
        import numpy as np

        size = POOL_BATCHES * self.batch
        if network.input_shape == MNIST_INPUT:
            x, labels = self._mnist(network, size)
        else:          # speed does not depend on which pixels: random ones, random labels
            rng = np.random.default_rng(SEED)
            x = rng.integers(0, 256, (size, *network.input_shape)).astype(np.float32)
            x /= np.float32(255)
            labels = rng.integers(0, network.outputs, size)
        x = x.reshape(POOL_BATCHES, self.batch, *network.input_shape)
        if network.heads:
            np.savez(path, x=x, **_detector_pool(network, x))
        else:
            np.savez(path, x=x, labels=labels.reshape(POOL_BATCHES, self.batch))
        return path

    def _mnist(self, network, size: int):
        import numpy as np

        from darkbp.datasets import load_dataset, network_input
        from darkbp.evaluate import check_fits

        dataset = load_dataset("mnist")
        if dataset.notice:
            print(f"bench: {dataset.notice} (enough for throughput)", file=sys.stderr)
        check_fits(network, dataset)
        if len(dataset.train_labels) < size:
            raise _BenchError(f"--batch {self.batch} needs {size} training images, "
                              f"{dataset.name} has {len(dataset.train_labels)}")
        self.data, self.sample = str(dataset.source), dataset.is_sample
        picked = np.random.default_rng(SEED).permutation(len(dataset.train_labels))[:size]
        return (network_input(dataset.train_images[picked], network.input_shape),
                dataset.train_labels[picked])


def _detector_pool(network, x) -> dict:
    """A detector pool's boxes (P, B, 90, 5), random, and for the twin the targets darkbp's
    heads assign them on x (P, B, C, H, W) at the initial weights: "t{batch}.{head}.index"
    (and .scale, .target), bench/twin.py's sparse_targets."""
    import numpy as np

    from darkbp.network import parse_network
    from darkbp.ops.detection import Truth
    from darkbp.passes import Noise, Pass

    network = parse_network(network.file).initialize(SEED, np.float32)
    _, neth, netw = network.input_shape
    rng = np.random.default_rng(SEED)
    boxes = np.stack([Truth.random(rng, x.shape[1], network.heads[0].classes, netw,
                                   neth).boxes for _ in x])
    pool = {"boxes": boxes}
    for i, (images, image_boxes) in enumerate(zip(x, boxes)):
        truth = Truth(image_boxes, netw, neth, seen=(i + 1) * len(images))
        with np.errstate(over="ignore", invalid="ignore"):
            network.run(images, Pass.training(Noise(SEED, i)))
        for k, head in enumerate(network.heads):
            for name, value in zip(("index", "scale", "target"),
                                   _twin().sparse_targets(head.assign(truth))):
                pool[f"t{i}.{k}.{name}"] = value
    return pool


def _render_throughput(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = _wide(Console(highlight=False))
    settings = report["settings"]
    by_cfg: dict[str, list[dict]] = {}
    for row in report["results"]:
        by_cfg.setdefault(row["cfg"], []).append(row)
    for cfg, rows in by_cfg.items():
        table = Table(title=f"{cfg}, batch {settings['batch']}, {rows[0]['input']}",
                      title_justify="left",
                      caption=(f"median of {settings['windows']} windows of "
                               f"{settings['window_seconds']:g} s; ratio = darkbp/torch, median "
                               "of paired windows (lowest-highest)"),
                      caption_justify="left")
        table.add_column("figure")
        for row in rows:
            n = _threads(row["threads"])
            table.add_column(f"darkbp\n{n}", justify="right")
            if "torch_memory" in row:
                table.add_column(f"torch\n{n}", justify="right")
                table.add_column(f"ratio\n{n}", justify="right")
        lines = {"train img/s": [], "forward img/s": [], "peak RSS MiB, training": [],
                 "RSS after imports MiB": []}
        for row in rows:
            speed, torch_on = row["speed"], "torch_memory" in row
            for figure, key in (("train img/s", "train"), ("forward img/s", "forward")):
                ours = speed["darkbp"][key]
                lines[figure].append(f"{statistics.median(ours):,.0f}")
                if torch_on:
                    theirs = speed["torch"][key]
                    ratios = [a / b for a, b in zip(ours, theirs)]
                    lines[figure] += [f"{statistics.median(theirs):,.0f}", _ratio(ratios)]
            for figure, key in (("peak RSS MiB, training", "peak_mib"),
                                ("RSS after imports MiB", "imports_mib")):
                ours = row["darkbp_memory"][key]
                lines[figure].append(f"{ours:,.0f}")
                if torch_on:
                    theirs = row["torch_memory"][key]
                    lines[figure] += [f"{theirs:,.0f}", f"{ours / theirs:.2f}"]
        for figure, cells in lines.items():
            table.add_row(figure, *cells)
        console.print(table)
    console.print(_machine_line(report["machine"]))
    kernels = _kernels_line(report["results"])
    if kernels:
        console.print(kernels)
    if report["sample"]:
        console.print("(batches from the MNIST sample shipped with darkbp; speed does not "
                      "depend on which digits)")


def _ratio(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def _short(cfg: Path | str) -> str:
    path = Path(cfg)
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def _threads(n: int) -> str:
    return f"{n} thread" + ("s" if n > 1 else "")


# ---------------------------------------------------------------------- time to accuracy
def _time_to_accuracy(cfgs: list[Path], threads: list[int], use_torch: bool) -> dict:
    from darkbp.catalogue import candidates
    from darkbp.datasets import load_dataset
    from darkbp.evaluate import check_fits
    from darkbp.network import parse_network

    if any(parse_network(cfg).heads for cfg in cfgs):     # a detector: time to mAP@0.5
        return _time_to_map(cfgs, threads, use_torch)
    dataset = load_dataset("mnist")
    if dataset.is_sample:
        where = os.environ.get("DARKBP_DATA")
        hint = (f"DARKBP_DATA={where} holds no complete mnist/ folder" if where
                else "DARKBP_DATA is not set")
        raise _BenchError(
            f"--time-to-accuracy needs full MNIST, and {hint} (looked in: "
            f"{', '.join(str(folder) for folder in candidates('mnist'))}). Set DARKBP_DATA to "
            "the folder that holds mnist/ (e.g. DARKBP_DATA=/work/shared/data), or run "
            "`darkbp data fetch mnist`")
    frameworks = {}
    for cfg in cfgs:
        network = parse_network(cfg)
        check_fits(network, dataset)
        problem = use_torch and _twin().unsupported(network)
        if problem:
            print(f"bench: {_short(cfg)}: no torch twin ({problem}); darkbp only",
                  file=sys.stderr)
        frameworks[cfg] = ("darkbp", "torch") if use_torch and not problem else ("darkbp",)
    machine = _machine()
    runs = []
    for cfg in cfgs:
        for n in threads:
            _console().print(f"[bold]{_short(cfg)}[/bold], {_threads(n)}: training to "
                             f"{TARGET_ACCURACY:.1%}, evaluating every {EVAL_EVERY} batches")
            job = {"kind": "accuracy", "cfg": str(cfg), "target": TARGET_ACCURACY,
                   "eval_every": EVAL_EVERY}
            for framework in frameworks[cfg]:
                run = _run({**job, "framework": framework}, n, f"{framework} training")
                runs.append({"cfg": _short(cfg), "threads": n, "framework": framework, **run})
    report = {"mode": "time_to_accuracy", "machine": machine, "data": str(dataset.source),
              "target": TARGET_ACCURACY, "eval_every": EVAL_EVERY, "runs": runs}
    _render_accuracy(report)
    return report


def _time_to_map(cfgs: list[Path], threads: list[int], use_torch: bool) -> dict:
    """A detector's time to mAP on mnist-det beside its twin (bench/tta_detect.py)."""
    import tta_detect
    machine = _machine()              # before the runs, as _time_to_accuracy: its busy cores
    runs = []
    for cfg in cfgs:
        for n in threads:
            run = tta_detect.time_to_map(cfg, n, use_torch, _console())
            tta_detect.render(run)
            runs.append(run)
    print(_machine_line(machine))
    return {"mode": "time_to_map", "machine": machine, "runs": runs}


def _render_accuracy(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"time to {report['target']:.1%} test accuracy, full MNIST",
                  title_justify="left",
                  caption=(f"test set evaluated every {report['eval_every']} batches; train s = "
                           "the steps alone (evaluation and checkpoints excluded), wall s = "
                           "everything; ratio = darkbp train s / torch train s, < 1 where darkbp "
                           "is faster"),
                  caption_justify="left")
    for name, justify in (("cfg", "left"), ("threads", "right"), ("framework", "left"),
                          ("reached", "left"), ("batches", "right"), ("train s", "right"),
                          ("ratio", "right"), ("wall s", "right"), ("peak RSS MiB", "right"),
                          ("last accuracies", "left")):
        table.add_column(name, justify=justify)
    darkbp_train = {}
    for run in report["runs"]:
        last = run["evaluations"][-1]
        key = (run["cfg"], run["threads"])
        if run["framework"] == "darkbp":
            darkbp_train[key] = last["train_s"]
        ratio = (f"{darkbp_train[key] / last['train_s']:.2f}"
                 if run["framework"] == "torch" and key in darkbp_train else "")
        reached = (f"epoch {last['batch'] / run['batches_per_epoch']:.2f}" if run["reached"]
                   else f"no (cap: {last['batch']})")
        table.add_row(run["cfg"], str(run["threads"]), run["framework"], reached,
                      str(last["batch"]), f"{last['train_s']:.1f}", ratio,
                      f"{last['wall_s']:.1f}", f"{run['peak_mib']:,.0f}",
                      " ".join(f"{100 * e['accuracy']:.2f}%" for e in run["evaluations"][-3:]))
    console = _wide(Console(highlight=False))
    console.print(table)
    console.print(_machine_line(report["machine"]))


def _wide(console):
    """Rich wraps to 80 columns off a terminal: too narrow for these tables."""
    from rich.console import Console
    return console if console.is_terminal else Console(highlight=False, width=132)


def _busy_cores(seconds: float = 0.3) -> float:
    """How many cores other processes kept busy over the last `seconds` (/proc/stat)."""
    def sample():
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
        return fields[3] + fields[4], sum(fields)          # idle + iowait, all
    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(1, total1 - total0))


def _machine_line(machine: dict) -> str:
    torch = f", torch {machine['torch']}" if "torch" in machine else ""
    blas_env = ", ".join(f"{var}={value}" for var, value in machine["blas_env"].items())
    return (f"{machine['cpu']}, {machine['cores']} cores; Python {machine['python']}, "
            f"numpy {machine['numpy']} ({machine['blas']}){torch}; "
            f"{blas_env or ' and '.join(BLAS_VARS) + ' unset'}; "
            f"{machine['busy_cores']:.1f} cores busy with other work at the start")


def _kernels_line(results: list[dict]) -> str | None:
    """The kernels the speed children ran, e.g. "darkbp: OpenBLAS SkylakeX; torch: AVX512"."""
    found: dict[str, set] = {}
    for row in results:
        for framework, kernel in row["speed"].get("kernels", {}).items():
            found.setdefault(framework, set()).add(kernel)
    if not found:
        return None
    return "kernels run: " + "; ".join(f"{framework} {', '.join(sorted(kernels))}"
                                        for framework, kernels in found.items())


def _kernels(torch_too: bool) -> dict[str, str]:
    """The kernel each framework runs in this process: OpenBLAS's core type (threadpoolctl,
    after numpy has loaded it; "unknown" without threadpoolctl) and torch's CPU capability."""
    try:
        from threadpoolctl import threadpool_info
        blas = [f"{info['internal_api']} {info.get('architecture')}"
                for info in threadpool_info() if info["user_api"] == "blas"]
    except ImportError:
        blas = []
    kernels = {"darkbp": ", ".join(blas) or "unknown (pip install threadpoolctl)"}
    if torch_too:
        import torch
        kernels["torch"] = f"oneDNN/ATen {torch.backends.cpu.get_cpu_capability()}"
    return kernels


def _machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy as np
    from darkbp.threads import blas_library
    machine = {"cpu": cpu, "cores": os.cpu_count(), "busy_cores": _busy_cores(),
               "python": platform.python_version(), "numpy": np.__version__,
               "blas": Path(blas_library()).name,
               "blas_env": {var: os.environ[var] for var in BLAS_VARS if var in os.environ}}
    from importlib.metadata import PackageNotFoundError, version
    try:
        machine["torch"] = version("torch")
    except PackageNotFoundError:
        pass
    return machine


# ====================================================================== children
def _run_child(job_path: Path) -> None:
    """Run one job (written by `_run`) and write its result as JSON."""
    job = json.loads(job_path.read_text())
    kind, framework = job["kind"], job.get("framework")
    if kind == "memory":
        result = _child_memory(job, framework)
    elif kind == "speed":
        result = _child_speed(job)
    elif kind == "profile":
        result = _profile().child(sys.modules[__name__], job)
    else:
        result = _child_accuracy(job, framework)
    Path(job["result"]).write_text(json.dumps(result))


def _peak_mib(pid: int | str = "self") -> float:
    """The peak resident set size of this process (or of process `pid`), MiB.

    Linux keeps ru_maxrss across execve, so a child's ru_maxrss starts at the
    RSS of the parent it was forked from (here: the parent holding MNIST).
    VmHWM is the high-water mark of the process's own memory since its exec.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024                   # kB
    except OSError:
        pass
    if pid != "self":
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # KiB on Linux


def _workers_peak_mib(runner) -> float:
    """The peak RSS of a darkbp Runner's worker processes, summed (the parameters they
    share with the parent count in each: an overestimate by that much)."""
    return sum(_peak_mib(pid) for pid in runner.pids)


def _import_darkbp(threads: int):
    import numpy as np

    from darkbp.threads import set_threads
    set_threads(threads)
    return np


def _import_torch(threads: int):
    import torch
    torch.set_num_threads(threads)
    return torch


def _twin():
    """bench/twin.py, beside this script (which runs as a script: its folder is on sys.path)."""
    import twin
    return twin


def _profile():
    """bench/bench_profile.py, beside this script."""
    import bench_profile
    return bench_profile


def _child_memory(job: dict, framework: str) -> dict:
    threads = job["threads"]
    if framework == "darkbp":
        np = _import_darkbp(threads)
        import darkbp.network  # noqa: F401  (what the measured loop needs, before the baseline)
        import darkbp.sgd  # noqa: F401
    else:
        _import_torch(threads)
        _twin()
        import numpy as np
    imports = _peak_mib()
    pool = dict(np.load(job["pool"]))
    runner = _DarkbpRunner(job, pool) if framework == "darkbp" else _TorchRunner(job, pool)
    _window(runner.train_step, job["window_seconds"], minimum=5)
    workers = _workers_peak_mib(runner.runner) if framework == "darkbp" else 0.0
    return {"imports_mib": imports, "peak_mib": _peak_mib() + workers}


def _child_speed(job: dict) -> dict:
    np = _import_darkbp(job["threads"])
    pool = dict(np.load(job["pool"]))
    if job["torch"]:
        _import_torch(job["threads"])
        _check_twins(job, pool)
    runners = {"darkbp": _DarkbpRunner(job, pool)}
    if job["torch"]:
        runners["torch"] = _TorchRunner(job, pool)
    seconds, batch = job["window_seconds"], job["batch"]
    figures = ("train", "forward")
    for figure in figures:                     # warm-up: caches, allocator, thread pools
        for runner in runners.values():
            _window(getattr(runner, f"{figure}_step"), seconds / 2, minimum=3)
    speeds = {name: {figure: [] for figure in figures} for name in runners}
    order = list(runners)
    for _ in range(job["windows"]):
        for figure in figures:
            for name in order:
                time.sleep(SETTLE_SECONDS)
                steps_per_s = _window(getattr(runners[name], f"{figure}_step"), seconds)
                speeds[name][figure].append(steps_per_s * batch)
        order.reverse()                        # who goes first alternates
    for name, runner in runners.items():
        speeds[name]["final_loss"] = runner.last_loss
    speeds["kernels"] = _kernels(job["torch"])
    return speeds


def _window(step, seconds: float, minimum: int = 1) -> float:
    """Run `step` for at least `seconds` and `minimum` times; steps per second."""
    count, start = 0, time.perf_counter()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= minimum:
            return count / elapsed


class _DarkbpRunner:
    """darkbp's training step (as Trainer._run_epoch) and forward pass on the pool's batches."""

    def __init__(self, job: dict, pool: dict, dtype: str = "float32"):
        import numpy as np

        from darkbp.network import parse_network
        from darkbp.parallel import Runner
        from darkbp.sgd import SGD
        self.np = np
        self.network = parse_network(job["cfg"]).initialize(SEED, dtype)
        self.runner = Runner(self.network, job["threads"])
        config = self.network.config
        self.sgd = SGD(self.network.layers, config.momentum, config.decay, job["batch"])
        self.lr = config.schedule.learning_rate
        self.x = pool["x"].astype(dtype, copy=False)                         # (P, B, C, H, W)
        self.heads = self.network.heads
        if self.heads:
            self.boxes = pool["boxes"]                                   # (P, B, 90, 5)
        else:
            self.truth = np.eye(self.network.outputs, dtype=dtype)[pool["labels"]]  # (P, B, K)
        self.train_index = self.forward_index = 0
        self.last_loss = self.last_truth = None

    def train_step(self) -> None:
        i = self.train_index % len(self.x)
        self.train_index += 1
        with self.np.errstate(over="ignore", invalid="ignore"):     # as Trainer.run
            if self.heads:                     # as DetectionTrainer: a Truth, the pass's noise
                from darkbp.ops.detection import Truth
                from darkbp.passes import Noise
                _, neth, netw = self.network.input_shape
                self.last_truth = Truth(self.boxes[i], netw, neth,
                                        seen=self.train_index * len(self.x[i]))
                self.last_loss = self.runner.train_step(
                    self.x[i], self.last_truth, Noise(SEED, self.train_index - 1, 0))
            else:
                self.last_loss = self.runner.train_step(self.x[i], self.truth[i])
            self.sgd.step(self.lr)

    def forward_step(self):
        i = self.forward_index % len(self.x)
        self.forward_index += 1
        if self.heads:
            # Every head's output, as darkbp.detector.detect_passes runs them: the batch
            # split across the Runner's workers.
            return self.runner.head_outputs(self.x[i])
        return self.runner.forward(self.x[i])

    def params(self) -> dict[str, "object"]:
        return {f"{layer.index}.{name}": value for layer in self.network.layers
                for name, value, _ in layer.parameters()}


class _TorchRunner:
    """The same network (bench/twin.py), step and batches in PyTorch."""

    def __init__(self, job: dict, pool: dict, dtype: str = "float32"):
        import torch

        from darkbp.network import parse_network
        self.torch = torch
        network = parse_network(job["cfg"]).initialize(SEED, dtype)   # darkbp's start
        self.model = _twin().Twin(network)
        self.optimizer = self.model.sgd(network.config, job["batch"])
        self.x = torch.from_numpy(pool["x"].astype(dtype, copy=False))  # float32: the pool's memory
        if network.heads:      # per batch, per head: the targets darkbp assigned (_detector_pool)
            self.labels = [[self.targets([pool[f"t{i}.{k}.{name}"]
                                          for name in ("index", "scale", "target")])
                            for k in range(len(network.heads))] for i in range(len(self.x))]
        else:
            self.labels = torch.from_numpy(pool["labels"].astype("int64"))
        self.train_index = self.forward_index = 0
        self.last_loss = None

    def targets(self, found) -> list:
        """sparse_targets' (index, scale, target) as tensors, the values in the twin's dtype."""
        index, scale, target = found
        dtype = self.model.tensors[next(iter(self.model.tensors))].dtype
        return [self.torch.from_numpy(index.astype("int64")),
                self.torch.from_numpy(scale).to(dtype), self.torch.from_numpy(target).to(dtype)]

    def train_step(self, labels=None) -> None:
        """One step on the next batch; `labels`: a detector's targets in place of the pool's
        (the float64 check's, assigned by darkbp at this step)."""
        i = self.train_index % len(self.x)
        self.train_index += 1
        if not self.model.training:
            self.model.train()
        loss = self.model.loss(self.model(self.x[i]), self.labels[i] if labels is None else labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.last_loss = loss.item()

    def forward_step(self):
        i = self.forward_index % len(self.x)
        self.forward_index += 1
        return self.model.predict(self.x[i])

    def params(self) -> dict[str, "object"]:
        return {f"{index}.{name}": t.detach().numpy()
                for (index, name), t in self.model.tensors.items()
                if name not in ("rolling_mean", "rolling_variance")}


def _check_twins(job: dict, pool: dict) -> None:
    """The torch twin computes what darkbp computes: forward, and two SGD steps, in float64
    (tests/test_bench_twin.py checks every gradient too).

    float64, because in float32 the two legitimately part: on MNIST a batch-normalised
    first layer's bias gradient is a sum of ~50,000 terms that mostly cancel, and
    pooling windows of near-equal values pick their maximum by rounding; in float64
    they agree to ~1e-12.
    """
    import numpy as np

    def close(a, b):
        return np.allclose(a, b, rtol=1e-7, atol=1e-9 * max(1.0, float(np.abs(b).max())))

    # darkbp in one process: its heads then hold the whole batch, whose targets the twin takes.
    ours = _DarkbpRunner({**job, "threads": 1}, pool, "float64")
    theirs = _TorchRunner(job, pool, "float64")
    p_ours, p_theirs = ours.forward_step(), theirs.forward_step()
    pairs = (zip(p_ours, p_theirs) if ours.heads else [(p_ours, p_theirs)])
    for a, b in pairs:
        b = b.numpy()
        if a.shape != b.shape or not close(b, a):
            raise SystemExit("bench: the torch network's forward differs from darkbp's: "
                             "the twin is not the same network")
    sparse = _twin().sparse_targets
    for _ in range(2):
        ours.train_step()
        # a detector's: the targets darkbp assigned at this step, from the same weights
        theirs.train_step([theirs.targets(sparse(head.assign(ours.last_truth)))
                           for head in ours.heads] if ours.heads else None)
    a, b = ours.params(), theirs.params()
    for key in a:
        if not close(b[key], a[key]):
            raise SystemExit(f"bench: after two SGD steps torch's {key} differs from darkbp's "
                             f"(max |diff| {np.abs(a[key] - b[key]).max():.3g})")
    ours.runner.close()


# ---------------------------------------------------------------------- time to accuracy
class _Reached(Exception):
    pass


class _Progress:
    """The evaluations of one run: after every `eval_every` batches and after the last,
    the test accuracy, the training time so far (the steps alone) and the wall time."""

    def __init__(self, job: dict, total_batches: int):
        self.target, self.every, self.total = job["target"], job["eval_every"], total_batches
        self.started = time.perf_counter()
        self.train_s = 0.0
        self.evaluations: list[dict] = []

    def step(self, batch_num: int, seconds: float, accuracy) -> None:
        """After update `batch_num` (1-based), which took `seconds`; `accuracy()` evaluates
        the test set. Raises _Reached at the target."""
        self.train_s += seconds
        if batch_num % self.every and batch_num != self.total:
            return
        value = accuracy()
        self.evaluations.append({"batch": batch_num, "accuracy": value,
                                 "train_s": self.train_s,
                                 "wall_s": time.perf_counter() - self.started})
        if value >= self.target:
            raise _Reached


def _child_accuracy(job: dict, framework: str) -> dict:
    _import_darkbp(job["threads"])
    from darkbp.datasets import load_dataset
    from darkbp.network import parse_network
    if framework == "torch":
        _import_torch(job["threads"])
    dataset = load_dataset("mnist")
    network = parse_network(job["cfg"])
    config = network.config
    batch = config.mini_batch * config.subdivisions
    progress = _Progress(job, config.schedule.max_batches)
    workers = [0.0]                            # darkbp's worker processes, at their peak
    try:
        if framework == "darkbp":
            _train_darkbp(job, network, dataset, progress, workers)
        else:
            _train_torch(network, dataset, progress)
        reached = False
    except _Reached:
        reached = True
    return {"evaluations": progress.evaluations, "reached": reached,
            "batches_per_epoch": len(dataset.train_labels) // batch,
            "peak_mib": _peak_mib() + workers[0]}


def _train_darkbp(job, network, dataset, progress: _Progress, workers: list[float]) -> None:
    """`darkbp train CFG --data mnist --ema 0`, the evaluations made from its listener."""
    from darkbp.train import Trainer, TrainListener, TrainOptions

    class Listener(TrainListener):
        def start(self, trainer):
            self.trainer = trainer

        def batch(self, report):
            # Trainer times each step from its learning rate to its SGD update.
            progress.step(report.batch_num, self.trainer.batch / report.images_per_s,
                          self.accuracy)

        def accuracy(self):
            # VmHWM is the peak so far: read at each evaluation, before the workers exit.
            workers[0] = max(workers[0], _workers_peak_mib(self.trainer.runner))
            return self.trainer.test_accuracy()

    options = TrainOptions(out=Path(job["tmp"]) / "backup", seed=SEED, ema=0.0,
                           threads=job["threads"])
    Trainer(network, dataset, options, Listener()).run()


def _train_torch(network, dataset, progress: _Progress) -> None:
    """Trainer's loop in PyTorch: same initial weights, data order, batches, schedule."""
    import numpy as np
    import torch

    from darkbp.datasets import network_input
    config = network.config
    network.initialize(SEED, np.float32)
    model = _twin().Twin(network)
    batch = config.mini_batch * config.subdivisions
    optimizer = model.sgd(config, batch)
    per_epoch = len(dataset.train_labels) // batch
    labels = torch.from_numpy(dataset.train_labels.astype(np.int64))

    def accuracy() -> float:
        correct = 0
        for start in range(0, len(dataset.test_labels), EVAL_BATCH):
            x = network_input(dataset.test_images[start:start + EVAL_BATCH],
                              network.input_shape)
            predicted = model.predict(torch.from_numpy(x)).argmax(dim=1).numpy()
            correct += int((predicted == dataset.test_labels[start:start + EVAL_BATCH]).sum())
        model.train()
        return correct / len(dataset.test_labels)

    model.train()
    batch_num, epoch = 0, 0
    while batch_num < progress.total:
        epoch += 1
        order = np.random.default_rng([SEED, epoch]).permutation(len(labels))
        for index in range(min(per_epoch, progress.total - batch_num)):
            tic = time.perf_counter()
            lr = config.schedule.rate(batch_num, np.random.default_rng([SEED, 1, batch_num]))
            for group in optimizer.param_groups:
                group["lr"] = lr / batch
            optimizer.zero_grad()
            loss = 0.0
            for part in np.split(order[index * batch:(index + 1) * batch], config.subdivisions):
                x = torch.from_numpy(network_input(dataset.train_images[part],
                                                   network.input_shape))
                step_loss = model.loss(model(x), labels[part])
                step_loss.backward()
                loss += step_loss.item()
            if not math.isfinite(loss):
                raise SystemExit(f"bench: torch's loss became {loss} at batch {batch_num + 1}")
            optimizer.step()
            batch_num += 1
            progress.step(batch_num, time.perf_counter() - tic, accuracy)


if __name__ == "__main__":
    sys.exit(main())
