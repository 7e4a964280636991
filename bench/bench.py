"""darkbp against PyTorch on the CPU, whole networks: training and forward images/s, peak memory.

    DARKBP_DATA=/work/shared/data python bench/bench.py
    python bench/bench.py --cfg cfg/mnist.cfg --threads 1 --windows 5 --json bench.json
    python bench/bench.py --no-torch
    DARKBP_DATA=/work/shared/data python bench/bench.py --time-to-accuracy

Throughput (the default mode), for each --cfg (default cfg/mnist.cfg and
cfg/grouped.cfg) and each thread count of --threads (default 1,2), at --batch
images (default 64):

  train img/s     one step = forward(train=True) + cost + backward + SGD update, as
                  `darkbp.train.Trainer` runs it (the cfg's momentum, decay and
                  learning_rate).  PyTorch: model(x), cross_entropy(reduction="sum"),
                  zero_grad, backward, optim.SGD.step, with Darknet's rule in torch's
                  terms (lr/batch, weight decay decay·batch on weights only), loss.item().
  forward img/s   evaluation mode: darkbp forward(train=False); torch model.eval() under
                  inference_mode, softmax included.
  peak RSS MiB    the peak resident set of a process that imports one framework, builds
                  the network and trains for --window-seconds (VmHWM: Linux carries
                  ru_maxrss over from the parent across exec), plus that of darkbp's
                  worker processes (2+ threads; the parameters they share with the
                  parent are counted twice); "RSS after imports" is the peak just
                  after the imports, what the framework costs before any work.

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

Both frameworks see the same batches: a pool of 16 batches of real MNIST
training images that the parent picks once (full MNIST from $DARKBP_DATA, else
the sample shipped with darkbp: enough for throughput) and every child
cycles.  The torch network is built from the parsed darkbp network (filters,
size, stride, padding, groups, activation of each layer; Darknet's max-pool
padding; connected; softmax), starts from darkbp's initial weights, and is
checked before any timing, on float64 copies of both (in float32 rounding
parts them on batch-normalised networks): same forward output, same weights
after two SGD steps.  The timed runs are float32.

--time-to-accuracy trains cfg/mnist.cfg (or the --cfg given) on full MNIST with
the library's `Trainer`, as `darkbp train cfg/mnist.cfg --data mnist` does (its
own hyperparameters; max_batches set to 5 epochs), evaluating on the test set
after every epoch, until 99% test accuracy or 5 epochs; it reports each epoch's
accuracy and the wall time (training + evaluation + checkpoints) once per
thread count.  With torch, the same loop in PyTorch (same initial weights,
data order and learning-rate schedule) runs next, for comparison.  Needs full
MNIST: DARKBP_DATA=/work/shared/data (a folder holding mnist/).

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
DEFAULT_CFGS = ("cfg/mnist.cfg", "cfg/grouped.cfg")
TTA_CFG = "cfg/mnist.cfg"
TORCH_VERSION = "2.13.0"          # SPEC 9: the bar, and the only torch these machines install
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
POOL_BATCHES = 16                 # distinct batches every child cycles through
# Idle OpenBLAS workers spin ~0.1 s (2^28 cycles) after their last job before they
# sleep: without a pause, numpy's spinning threads eat into the next torch window.
SETTLE_SECONDS = 0.25
SEED = 0
TARGET_ACCURACY = 0.99
MAX_EPOCHS = 5
# Darknet's activations that torch has exactly (leaky: Darknet's slope is 0.1).
TORCH_ACTIVATIONS = ("linear", "relu", "leaky", "logistic", "tanh", "elu")


# ====================================================================== parent
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        _run_child(Path(args.child))
        return 0
    try:
        threads = _thread_list(args.threads)
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
        if args.time_to_accuracy:
            cfgs = [_find_cfg(c) for c in (args.cfg or [TTA_CFG])]
            report = _time_to_accuracy(cfgs, threads, use_torch)
        else:
            cfgs = [_find_cfg(c) for c in (args.cfg or DEFAULT_CFGS)]
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
                        help="cfg to measure, repeatable (default: cfg/mnist.cfg and "
                             "cfg/grouped.cfg; cfg/mnist.cfg with --time-to-accuracy)")
    parser.add_argument("--threads", default="1,2", metavar="N,N",
                        help="comma-separated thread counts (default: 1,2)")
    parser.add_argument("--batch", type=int, default=64, help="images per step (default: 64)")
    parser.add_argument("--windows", type=int, default=7,
                        help="timed windows per figure and framework (default: 7)")
    parser.add_argument("--window-seconds", type=float, default=1.0,
                        help="length of a window, seconds (default: 1.0)")
    parser.add_argument("--no-torch", action="store_true", help="measure darkbp only")
    parser.add_argument("--json", metavar="FILE", help="save the raw numbers to FILE")
    parser.add_argument("--time-to-accuracy", action="store_true",
                        help="time `darkbp train` to 99%% test accuracy on full MNIST "
                             "(needs DARKBP_DATA)")
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
    for path in (Path(name), REPO / name):
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
    import numpy as np

    from darkbp.datasets import load_dataset
    from darkbp.evaluate import check_fits
    from darkbp.network import parse_network

    dataset = load_dataset("mnist")
    if dataset.notice:
        print(f"bench: {dataset.notice} (enough for throughput)", file=sys.stderr)
    pool_size = POOL_BATCHES * args.batch
    if len(dataset.train_labels) < pool_size:
        raise _BenchError(f"--batch {args.batch} needs {pool_size} training images, "
                          f"{dataset.name} has {len(dataset.train_labels)}")
    picked = np.random.default_rng(SEED).permutation(len(dataset.train_labels))[:pool_size]

    machine = _machine()
    if machine["busy_cores"] > 0.3:
        print(f"bench: {machine['busy_cores']:.1f} of {machine['cores']} cores are busy with "
              "other work: alternation keeps the ratios fair, but the figures drop, above "
              "all with several threads", file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory(prefix="darkbp-bench-") as tmp:
        pool_path = Path(tmp) / "pool.npz"
        images = dataset.train_images[picked].astype(np.float32) / np.float32(255)
        np.savez(pool_path,
                 x=images.reshape(POOL_BATCHES, args.batch, 1, *images.shape[1:]),
                 labels=dataset.train_labels[picked].reshape(POOL_BATCHES, args.batch))
        jobs = []                              # every cfg checked before anything runs
        for cfg in cfgs:
            network = parse_network(cfg)
            check_fits(network, dataset)
            network.cost_layer()
            torch_spec, cfg_torch = None, use_torch
            if use_torch:
                try:
                    torch_spec = _torch_spec(network)
                except _Unsupported as error:
                    print(f"bench: {_short(cfg)}: no torch twin ({error}); darkbp only",
                          file=sys.stderr)
                    cfg_torch = False
            jobs.append((cfg, cfg_torch, {
                "cfg": str(cfg), "pool": str(pool_path), "batch": args.batch,
                "windows": args.windows, "window_seconds": args.window_seconds,
                "torch_spec": torch_spec, "hyper": _hyper(network.config), "torch": cfg_torch}))
        for cfg, cfg_torch, job in jobs:
            for n in threads:
                _console().print(f"[bold]{_short(cfg)}[/bold], {_threads(n)}, batch {args.batch}")
                row = {"cfg": _short(cfg), "threads": n, "batch": args.batch}
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
    report = {"mode": "throughput", "machine": machine, "data": str(dataset.source),
              "sample": dataset.is_sample,
              "settings": {"batch": args.batch, "windows": args.windows,
                           "window_seconds": args.window_seconds, "threads": threads,
                           "pool_batches": POOL_BATCHES},
              "results": results}
    _render_throughput(report)
    return report


def _render_throughput(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = _wide(Console(highlight=False))
    settings = report["settings"]
    by_cfg: dict[str, list[dict]] = {}
    for row in report["results"]:
        by_cfg.setdefault(row["cfg"], []).append(row)
    for cfg, rows in by_cfg.items():
        table = Table(title=f"{cfg}, batch {settings['batch']}", title_justify="left",
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
    machine = _machine()
    runs = []
    for cfg in cfgs:
        for n in threads:
            _console().print(f"[bold]{_short(cfg)}[/bold], {_threads(n)}: training to "
                             f"{TARGET_ACCURACY:.0%} (at most {MAX_EPOCHS} epochs)")
            job = {"kind": "accuracy", "cfg": str(cfg)}
            frameworks = ("darkbp", "torch") if use_torch else ("darkbp",)
            for framework in frameworks:
                run = _run({**job, "framework": framework}, n, f"{framework} training")
                runs.append({"cfg": _short(cfg), "threads": n, "framework": framework, **run})
    report = {"mode": "time_to_accuracy", "machine": machine, "data": str(dataset.source),
              "target": TARGET_ACCURACY, "max_epochs": MAX_EPOCHS, "runs": runs}
    _render_accuracy(report)
    return report


def _render_accuracy(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"time to {report['target']:.0%} test accuracy, full MNIST",
                  title_justify="left",
                  caption="wall = training + per-epoch evaluation (+ darkbp's checkpoints); "
                          "train = training alone", caption_justify="left")
    for name, justify in (("cfg", "left"), ("threads", "right"), ("framework", "left"),
                          ("reached", "left"), ("wall s", "right"), ("train s", "right"),
                          ("peak RSS MiB", "right"), ("accuracy per epoch", "left")):
        table.add_column(name, justify=justify)
    for run in report["runs"]:
        epochs = run["epochs"]
        last = epochs[-1]
        reached = (f"epoch {last['epoch']}" if last["accuracy"] >= report["target"]
                   else f"no ({len(epochs)} epochs)")
        table.add_row(run["cfg"], str(run["threads"]), run["framework"], reached,
                      f"{last['wall_s']:.1f}", f"{last['train_s']:.1f}",
                      f"{run['peak_mib']:,.0f}",
                      " ".join(f"{100 * e['accuracy']:.2f}%" for e in epochs))
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
    return (f"{machine['cpu']}, {machine['cores']} cores; Python {machine['python']}, "
            f"numpy {machine['numpy']} ({machine['blas']}){torch}; "
            f"{machine['busy_cores']:.1f} cores busy with other work at the start")


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
               "blas": Path(blas_library()).name}
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


def _child_memory(job: dict, framework: str) -> dict:
    threads = job["threads"]
    if framework == "darkbp":
        np = _import_darkbp(threads)
        import darkbp.network  # noqa: F401  (what the measured loop needs, before the baseline)
        import darkbp.sgd  # noqa: F401
    else:
        _import_torch(threads)
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
        runners["torch"].load_darkbp(runners["darkbp"].network)
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
        self.x = pool["x"].astype(dtype, copy=False)                         # (P, B, 1, 28, 28)
        self.truth = np.eye(self.network.outputs, dtype=dtype)[pool["labels"]]   # (P, B, K)
        self.train_index = self.forward_index = 0
        self.last_loss = None

    def train_step(self) -> None:
        i = self.train_index % len(self.x)
        self.train_index += 1
        with self.np.errstate(over="ignore", invalid="ignore"):     # as Trainer.run
            self.last_loss = self.runner.train_step(self.x[i], self.truth[i])
            self.sgd.step(self.lr)

    def forward_step(self):
        i = self.forward_index % len(self.x)
        self.forward_index += 1
        return self.runner.forward(self.x[i])

    def params(self) -> dict[str, "object"]:
        return {f"{layer.index}.{name}": value for layer in self.network.layers
                for name, value, _ in layer.parameters()}


class _Unsupported(Exception):
    pass


def _torch_spec(network) -> list[dict]:
    """What the torch twin of `network` needs, from the parsed layers (the parent has no torch)."""
    spec = []
    for layer in network.layers:
        entry = {"type": layer.type, "in_shape": layer.in_shape, "out_shape": layer.out_shape}
        if layer.type == "convolutional":
            entry.update(filters=layer.filters, size=layer.size, stride=layer.stride,
                         padding=layer.padding, groups=layer.groups,
                         activation=layer.activation, batch_normalize=layer.batch_normalize)
        elif layer.type == "maxpool":
            entry.update(size=layer.size, stride=layer.stride, padding=layer.padding)
        elif layer.type == "connected":
            entry.update(inputs=layer.inputs, outputs=layer.outputs,
                         activation=layer.activation, batch_normalize=layer.batch_normalize)
        elif layer.type == "softmax":
            if layer is not network.layers[-1] or layer.groups != 1 or layer.temperature != 1:
                raise _Unsupported("a softmax other than one last, plain [softmax]")
        else:
            raise _Unsupported(f"[{layer.type}] layers")
        if entry.get("activation", "linear") not in TORCH_ACTIVATIONS:
            raise _Unsupported(f"activation={entry['activation']}")
        spec.append(entry)
    return spec


def _torch_network(spec: list[dict], torch, dtype):
    """nn.Sequential of `spec` (without the final softmax: the cost takes logits) and, per
    darkbp parameter/state name "layer.name", the torch tensor that holds it."""
    nn = torch.nn
    activations = {"relu": nn.ReLU, "leaky": lambda: nn.LeakyReLU(0.1),
                   "logistic": nn.Sigmoid, "tanh": nn.Tanh, "elu": nn.ELU}
    modules, tensors = [], {}
    for i, layer in enumerate(spec):
        kind, bn = layer["type"], layer.get("batch_normalize", False)
        if kind == "convolutional":
            conv = nn.Conv2d(layer["in_shape"][0], layer["filters"], layer["size"],
                             layer["stride"], layer["padding"], groups=layer["groups"],
                             bias=not bn, dtype=dtype)
            modules.append(conv)
            tensors[f"{i}.weights"] = conv.weight
            if not bn:
                tensors[f"{i}.biases"] = conv.bias
        elif kind == "connected":
            linear = nn.Linear(layer["inputs"], layer["outputs"], bias=not bn, dtype=dtype)
            if i == 0 or spec[i - 1]["type"] != "connected":
                modules.append(nn.Flatten())                 # (N, C, H, W) -> (N, C·H·W)
            modules.append(linear)
            tensors[f"{i}.weights"] = linear.weight
            if not bn:
                tensors[f"{i}.biases"] = linear.bias
        elif kind == "maxpool":
            modules.append(_torch_maxpool(layer, nn))
        if bn:
            # Darknet: normalise, scale, + bias; rolling = .99·rolling + .01·batch.
            norm = _unbiased_batchnorm(torch, 2 if kind == "convolutional" else 1)(
                layer["out_shape"][0], eps=1e-5, momentum=0.01, dtype=dtype)
            modules.append(norm)
            tensors.update({f"{i}.scales": norm.weight, f"{i}.biases": norm.bias,
                            f"{i}.rolling_mean": norm.running_mean,
                            f"{i}.rolling_variance": norm.running_var})
        if layer.get("activation", "linear") != "linear":
            modules.append(activations[layer["activation"]]())
    return nn.Sequential(*modules), tensors


def _unbiased_batchnorm(torch, dims: int):
    """torch's BatchNorm{dims}d normalising a training batch with the unbiased variance, as
    Darknet and darkbp do: with M values per channel and r² = (M − 1)/M,
    (x − μ)/sqrt(v·M/(M − 1) + eps) = r·(x − μ)/sqrt(v + eps·r²), v the biased variance.
    So torch's own kernel does the work, with the weight scaled by r and eps by r²; its
    running variance is already the unbiased one. Evaluation is torch's as it is."""
    base = torch.nn.BatchNorm2d if dims == 2 else torch.nn.BatchNorm1d

    class UnbiasedBatchNorm(base):
        def forward(self, x):
            if not self.training:
                return super().forward(x)
            m = x.numel() // x.shape[1]
            r2 = (m - 1) / m
            return torch.nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight * r2 ** 0.5, self.bias,
                True, self.momentum, self.eps * r2)

    return UnbiasedBatchNorm


def _torch_maxpool(layer: dict, nn):
    """Darknet's window starts at -(padding//2), cells outside count as -inf."""
    (_, h, w), (_, out_h, out_w) = layer["in_shape"], layer["out_shape"]
    size, stride, top = layer["size"], layer["stride"], layer["padding"] // 2
    bottom = max(0, (out_h - 1) * stride + size - h - top)
    right = max(0, (out_w - 1) * stride + size - w - top)
    pool = nn.MaxPool2d(size, stride)
    if top == bottom == right == 0:
        return pool
    return nn.Sequential(nn.ConstantPad2d((top, right, top, bottom), float("-inf")), pool)


class _TorchRunner:
    """The same network, step and batches in PyTorch."""

    def __init__(self, job: dict, pool: dict, dtype: str = "float32"):
        import torch
        self.torch = torch
        spec = job["torch_spec"]
        self.model, self.tensors = _torch_network(spec, torch, getattr(torch, dtype))
        hyper = job["hyper"]
        batch = job["batch"]
        # g summed over the batch. Darknet: v = m·v - g - decay·B·w (weights only); w += (lr/B)·v
        #                          torch:  buf = m·buf + g + wd·w;             w -= lr·buf
        # so wd = decay·B on the weights, 0 elsewhere, lr/B: buf = -v.
        decayed = [t for key, t in self.tensors.items() if key.endswith(".weights")]
        others = [t for key, t in self.tensors.items()
                  if key.endswith((".biases", ".scales"))]
        self.optimizer = torch.optim.SGD(
            [{"params": decayed, "weight_decay": hyper["decay"] * batch},
             {"params": others, "weight_decay": 0.0}],
            lr=hyper["learning_rate"] / batch, momentum=hyper["momentum"])
        self.x = torch.from_numpy(pool["x"].astype(dtype, copy=False))  # float32: the pool's memory
        self.labels = torch.from_numpy(pool["labels"].astype("int64"))
        self.train_index = self.forward_index = 0
        self.last_loss = None

    def load_darkbp(self, network) -> None:
        """Copy darkbp's parameters and state into the twin."""
        with self.torch.no_grad():
            for layer in network.layers:
                for name in (*layer.param_names, *layer.state_names):
                    self.tensors[f"{layer.index}.{name}"].copy_(
                        self.torch.from_numpy(getattr(layer, name)))

    def train_step(self) -> None:
        i = self.train_index % len(self.x)
        self.train_index += 1
        if not self.model.training:
            self.model.train()
        loss = self.torch.nn.functional.cross_entropy(self.model(self.x[i]), self.labels[i],
                                                      reduction="sum")
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.last_loss = loss.item()

    def forward_step(self):
        i = self.forward_index % len(self.x)
        self.forward_index += 1
        if self.model.training:
            self.model.eval()
        with self.torch.inference_mode():
            return self.torch.softmax(self.model(self.x[i]), dim=1)

    def params(self) -> dict[str, "object"]:
        return {key: t.detach().numpy() for key, t in self.tensors.items()
                if not key.endswith((".rolling_mean", ".rolling_variance"))}


def _hyper(config) -> dict:
    """The SGD settings of a cfg's [net] section."""
    return {"learning_rate": config.schedule.learning_rate, "momentum": config.momentum,
            "decay": config.decay}


def _check_twins(job: dict, pool: dict) -> None:
    """The torch twin computes what darkbp computes: forward, and two SGD steps, in float64.

    float64, because in float32 the two legitimately part: on MNIST a batch-normalised
    first layer's bias gradient is a sum of ~50,000 terms that mostly cancel, and
    pooling windows of near-equal values pick their maximum by rounding; in float64
    they agree to ~1e-12.
    """
    import numpy as np

    def close(a, b):
        return np.allclose(a, b, rtol=1e-7, atol=1e-9 * max(1.0, float(np.abs(b).max())))

    ours, theirs = _DarkbpRunner(job, pool, "float64"), _TorchRunner(job, pool, "float64")
    theirs.load_darkbp(ours.network)

    p_ours, p_theirs = ours.forward_step(), theirs.forward_step().numpy()
    if p_ours.shape != p_theirs.shape or not close(p_theirs, p_ours):
        raise SystemExit("bench: the torch network's forward differs from darkbp's: "
                         "the twin is not the same network")
    for _ in range(2):
        ours.train_step()
        theirs.train_step()
    a, b = ours.params(), theirs.params()
    for key in a:
        if not close(b[key], a[key]):
            raise SystemExit(f"bench: after two SGD steps torch's {key} differs from darkbp's "
                             f"(max |diff| {np.abs(a[key] - b[key]).max():.3g})")
    ours.runner.close()


# ---------------------------------------------------------------------- time to accuracy
class _Reached(Exception):
    pass


def _child_accuracy(job: dict, framework: str) -> dict:
    np = _import_darkbp(job["threads"])
    from darkbp.datasets import load_dataset
    from darkbp.network import parse_network
    if framework == "torch":
        _import_torch(job["threads"])
    dataset = load_dataset("mnist")
    network = parse_network(job["cfg"])
    epochs: list[dict] = []
    started = time.perf_counter()
    workers = [0.0]                            # darkbp's worker processes, at their peak
    if framework == "darkbp":
        _train_darkbp(job, network, dataset, epochs, started, workers)
    else:
        _train_torch(job, network, dataset, epochs, started, np)
    return {"epochs": epochs, "peak_mib": _peak_mib() + workers[0]}


def _train_darkbp(job, network, dataset, epochs, started, workers: list[float]) -> None:
    from darkbp.train import Trainer, TrainListener, TrainOptions

    class Listener(TrainListener):
        def start(self, trainer):
            self.runner = trainer.runner

        def epoch(self, report):
            workers[0] = max(workers[0], _workers_peak_mib(self.runner))
            epochs.append({"epoch": report.epoch, "accuracy": report.accuracy,
                           "train_s": report.wall_time, "wall_s": time.perf_counter() - started})
            if report.accuracy >= TARGET_ACCURACY:
                raise _Reached

    options = TrainOptions(out=Path(job["tmp"]) / "backup", epochs=MAX_EPOCHS, seed=SEED,
                           threads=job["threads"])
    try:
        Trainer(network, dataset, options, Listener()).run()
    except _Reached:
        pass


def _train_torch(job, network, dataset, epochs, started, np) -> None:
    """Trainer's loop in PyTorch: same initial weights, data order, schedule, evaluation."""
    import dataclasses

    import torch
    config = network.config
    network.initialize(SEED, np.float32)
    batch = config.mini_batch * config.subdivisions
    twin = _TorchRunner({"torch_spec": _torch_spec(network), "batch": batch,
                         "hyper": _hyper(config)},
                        {"x": np.zeros((1, 1, 1, 1, 1), np.float32),
                         "labels": np.zeros((1, 1), np.int64)})
    twin.load_darkbp(network)
    model, optimizer = twin.model, twin.optimizer
    per_epoch = len(dataset.train_labels) // batch
    schedule = dataclasses.replace(config.schedule, max_batches=MAX_EPOCHS * per_epoch)
    train_x = torch.from_numpy((dataset.train_images.astype(np.float32) / np.float32(255))
                               [:, None])
    train_y = torch.from_numpy(dataset.train_labels.astype(np.int64))
    batch_num, train_s = 0, 0.0
    for epoch in range(1, MAX_EPOCHS + 1):
        tic = time.perf_counter()
        model.train()
        order = np.random.default_rng([SEED, epoch]).permutation(len(train_y))
        for index in range(per_epoch):
            lr = schedule.rate(batch_num, np.random.default_rng([SEED, 1, batch_num]))
            for group in optimizer.param_groups:
                group["lr"] = lr / batch
            optimizer.zero_grad()
            loss = 0.0
            for part in np.split(order[index * batch:(index + 1) * batch], config.subdivisions):
                part = torch.from_numpy(part)
                step_loss = torch.nn.functional.cross_entropy(model(train_x[part]),
                                                              train_y[part], reduction="sum")
                step_loss.backward()
                loss += step_loss.item()
            if not math.isfinite(loss):
                raise SystemExit(f"bench: torch's loss became {loss} at batch {batch_num + 1}")
            optimizer.step()
            batch_num += 1
        train_s += time.perf_counter() - tic
        model.eval()
        correct = 0
        with torch.inference_mode():
            for start in range(0, len(dataset.test_labels), 500):       # as evaluate.predict
                x = torch.from_numpy(dataset.test_images[start:start + 500].astype(np.float32)
                                     / np.float32(255))[:, None]
                predicted = model(x).argmax(dim=1).numpy()
                correct += int((predicted == dataset.test_labels[start:start + 500]).sum())
        accuracy = correct / len(dataset.test_labels)
        epochs.append({"epoch": epoch, "accuracy": accuracy, "train_s": train_s,
                       "wall_s": time.perf_counter() - started})
        if accuracy >= TARGET_ACCURACY:
            return


if __name__ == "__main__":
    sys.exit(main())
