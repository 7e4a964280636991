"""Time to mAP of a detector: darkbp's training beside its torch twin's, epoch by epoch.

    python bench/bench.py --time-to-accuracy --cfg yolo-digits [--threads 2] [--json F]

Both train the cfg (cfg/yolo-digits.cfg) on mnist-det for the cfg's max_batches, from the
same initial weights (darkbp's `initialize(seed)`, copied into the twin), on the same
batches (DetectionAugment.batch of each (seed, batch number) in darkbp's epoch order, each
side making them identically, in a background thread that overlaps the step before, as
darkbp's Trainer does), with the same schedule and Darknet's update rule (Twin.sgd). The
twin's loss is darkbp's [yolo] loss at targets assigned from the twin's OWN outputs (the
heads' `train_targets` on them, numpy), so the assignment and the ignore mask follow its
own training. After each epoch both score the whole valid split, mAP@0.5 as
DetectionTrainer scores it (thresh .005, NMS .45), the twin's head outputs decoded by
darkbp's own decoding (darkbp.detector.network_boxes): only the training differs.

Fairness on a shared machine: each framework is one long-lived child process, with its
thread settings as the throughput bench sets them (OMP/OPENBLAS/MKL_NUM_THREADS,
darkbp.threads.set_threads, torch.set_num_threads); the parent advances them one epoch at a
time, alternately (who goes first alternating each epoch), so both see the same load.
Each times its own steps (learning rate to SGD update; the batch's data and the
evaluations excluded) and reports its mAP per epoch.

The child protocol: the parent writes "epoch\\n" on a child's stdin, the child answers one
JSON line on its stdout; "stop\\n" ends it. `python bench/tta_detect.py FRAMEWORK CFG`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

SEED = 0
DATA = "mnist-det"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
SETTLE_SECONDS = 0.25      # idle OpenBLAS workers spin ~0.1 s before they sleep (bench.py)


# ====================================================================== parent
def time_to_map(cfg: Path, threads: int, use_torch: bool, console) -> dict:
    """Train `cfg` in darkbp and (with use_torch) its twin, interleaved epoch by epoch, at
    `threads` threads; the report (per epoch: batches, each one's training seconds so far
    and mAP@0.5)."""
    frameworks = ("darkbp", "torch") if use_torch else ("darkbp",)
    children = {name: _Child(name, cfg, threads) for name in frameworks}
    try:
        ready = {name: child.receive() for name, child in children.items()}
        plan = ready["darkbp"]
        console.print(f"[bold]{cfg.name}[/bold], {threads} thread(s): {plan['total_batches']} "
                      f"batches of {plan['batch']}, {plan['batches_per_epoch']} per epoch, "
                      f"mAP@0.5 on {plan['valid']} valid images after each epoch; "
                      + " and ".join(frameworks) + " interleaved epoch by epoch")
        epochs = {name: [] for name in frameworks}
        order = list(frameworks)
        batch_num = 0
        while batch_num < plan["total_batches"]:
            for name in order:
                time.sleep(SETTLE_SECONDS)
                epochs[name].append(children[name].request("epoch"))
            batch_num = epochs["darkbp"][-1]["batches"]
            if use_torch and epochs["torch"][-1]["batches"] != batch_num:
                raise RuntimeError("the two trainings are at different batches")
            console.print("  " + _epoch_line(epochs, len(epochs["darkbp"]) - 1))
            order.reverse()
    finally:
        for child in children.values():
            child.stop()
    return {"mode": "time_to_map", "cfg": str(cfg), "threads": threads, "data": DATA,
            "seed": SEED, **{k: plan[k] for k in ("batch", "batches_per_epoch",
                                                   "total_batches", "valid")},
            "epochs": epochs, "summary": _summary(epochs)}


def _epoch_line(epochs: dict, i: int) -> str:
    parts = [f"epoch {i + 1}: batch {epochs['darkbp'][i]['batches']}"]
    for name, runs in epochs.items():
        e = runs[i]
        ema = f" (EMA {e['ema_map']:.3f})" if e.get("ema_map") is not None else ""
        parts.append(f"{name} mAP {e['map']:.3f}{ema} at {e['train_s']:.0f} s")
    return ", ".join(parts)


def _summary(epochs: dict) -> dict:
    last = {name: runs[-1] for name, runs in epochs.items()}
    summary = {f"{name}_map": e["map"] for name, e in last.items()}
    summary.update({f"{name}_train_s": e["train_s"] for name, e in last.items()})
    if "torch" in last:
        summary["map_difference"] = last["darkbp"]["map"] - last["torch"]["map"]
        summary["time_ratio"] = last["darkbp"]["train_s"] / last["torch"]["train_s"]
    return summary


def render(report: dict) -> None:
    """The per-epoch table and the final line, on stdout."""
    from rich.console import Console
    from rich.table import Table

    epochs = report["epochs"]
    table = Table(title=f"{Path(report['cfg']).name} on mnist-det, {report['threads']} "
                        "thread(s), interleaved epoch by epoch", title_justify="left",
                  caption="train s: the steps alone, cumulative (data and evaluation "
                          "excluded); mAP@0.5 on the whole valid split, raw weights "
                          "(darkbp's EMA beside)", caption_justify="left")
    table.add_column("epoch", justify="right")
    table.add_column("batches", justify="right")
    for name in epochs:
        table.add_column(f"{name} train s", justify="right")
    for name in epochs:
        table.add_column(f"{name} mAP", justify="right")
    table.add_column("darkbp EMA mAP", justify="right")
    for i, e in enumerate(epochs["darkbp"]):
        table.add_row(str(i + 1), str(e["batches"]),
                      *(f"{epochs[n][i]['train_s']:.1f}" for n in epochs),
                      *(f"{epochs[n][i]['map']:.3f}" for n in epochs),
                      f"{e['ema_map']:.3f}" if e.get("ema_map") is not None else "")
    console = Console(highlight=False, width=132)
    console.print(table)
    s = report["summary"]
    if "time_ratio" in s:
        console.print(f"final mAP@0.5: darkbp {s['darkbp_map']:.4f}, torch {s['torch_map']:.4f}"
                      f" (darkbp − torch {s['map_difference']:+.4f}); training time: darkbp "
                      f"{s['darkbp_train_s']:.0f} s, torch {s['torch_train_s']:.0f} s, ratio "
                      f"{s['time_ratio']:.2f} (< 1: darkbp faster)")
    else:
        console.print(f"final mAP@0.5: darkbp {s['darkbp_map']:.4f} in "
                      f"{s['darkbp_train_s']:.0f} s of training")


class _Child:
    """One framework's long-lived training process."""

    def __init__(self, framework: str, cfg: Path, threads: int):
        env = {**os.environ, **{var: str(threads) for var in THREAD_VARS}}
        self.framework = framework
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), framework, str(cfg)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.framework} training stopped (exit code "
                               f"{self.process.wait()}; its errors are above)")
        return json.loads(line)

    def request(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.receive()

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("stop\n")
                self.process.stdin.close()
            except OSError:
                pass
            self.process.wait()


# ====================================================================== children
def _serve(framework: str, cfg: str) -> None:
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    from darkbp.threads import set_threads
    set_threads(threads)
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
    protocol, sys.stdout = sys.stdout, sys.stderr      # anything printed goes to stderr

    import tempfile
    with tempfile.TemporaryDirectory(prefix="darkbp-tta-") as tmp:
        trainer = _trainer(cfg, Path(tmp), threads)

        def send(record):
            protocol.write(json.dumps(record) + "\n")
            protocol.flush()

        def asked() -> bool:
            """Wait for the parent: True when it asks for an epoch."""
            return sys.stdin.readline().strip() == "epoch"

        send({"batch": trainer.batch, "batches_per_epoch": trainer.batches_per_epoch,
              "total_batches": trainer.total_batches, "valid": len(trainer.valid_paths)})
        if framework == "darkbp":
            DarkbpSide(trainer, send, asked).run()
        else:
            side = TwinSide(trainer)
            while asked():
                send(side.epoch())


def _trainer(cfg: str, out: Path, threads: int):
    """`darkbp train CFG --data mnist-det --seed 0` as a DetectionTrainer: the darkbp side
    trains with it; the twin's side takes its data, batches, schedule and valid list."""
    from darkbp.detection_train import DetectionTrainer, open_detection_data
    from darkbp.network import parse_network
    from darkbp.train import TrainOptions

    network = parse_network(cfg)
    trainer = DetectionTrainer(network, open_detection_data(DATA), TrainOptions(
        out=out, seed=SEED, threads=threads, checkpoint_every=float("inf")))
    if trainer.scales:
        raise SystemExit("bench: a multi-scale (random=1) cfg has no time-to-mAP twin here")
    return trainer


class DarkbpSide:
    """darkbp's own training: DetectionTrainer.run, paused by its listener before the first
    epoch and after each until the parent asks for the next (its checkpoints, log and
    chart run outside the timed steps); each step timed as Trainer times it."""

    def __init__(self, trainer, send, asked):
        from darkbp.train import TrainListener
        self.trainer = trainer
        train_s = [0.0]

        class Listener(TrainListener):
            def start(self, trainer):
                if not asked():
                    trainer.request_stop()

            def batch(self, report):
                train_s[0] += trainer.batch / report.images_per_s

            def epoch(self, report):
                send({"batches": report.batch_num, "train_s": train_s[0],
                      "map": report.accuracy, "ema_map": report.ema_accuracy,
                      "loss": report.loss})
                if not asked():
                    trainer.request_stop()
        trainer.listener = Listener()

    def run(self) -> None:
        self.trainer.run()


class TwinSide:
    """The torch twin trained as DetectionTrainer trains darkbp: its batches, the same
    order, the cfg's schedule, Darknet's SGD, targets from the twin's own outputs."""

    def __init__(self, trainer):
        import numpy as np
        twin = _twin()
        self.np = np
        self.trainer = trainer
        network = trainer.network                  # initialize(seed) ran in the Trainer
        self.model = twin.Twin(network)
        self.optimizer = self.model.sgd(network.config, trainer.batch)
        self.batch_num, self.train_s = 0, 0.0

    def epoch(self) -> dict:
        np, trainer = self.np, self.trainer
        done_epochs = self.batch_num // trainer.batches_per_epoch
        order = np.random.default_rng([trainer.options.seed, done_epochs + 1]).permutation(
            trainer.train_size)
        last = min(trainer.batches_per_epoch,
                   trainer.total_batches - done_epochs * trainer.batches_per_epoch)
        trainer.batch_num = self.batch_num         # where Trainer._batches numbers from
        losses = []
        for x, truth in trainer._batches(order, 0, last):
            tic = time.perf_counter()
            lr = trainer.schedule.rate(self.batch_num, np.random.default_rng(
                [trainer.options.seed, 1, self.batch_num]))
            losses.append(self.step(x, truth, lr) / trainer.batch)
            self.train_s += time.perf_counter() - tic
            self.batch_num += 1
            trainer.batch_num = self.batch_num
            if not np.isfinite(losses[-1]):
                raise SystemExit(f"bench: the twin's loss became {losses[-1]} at batch "
                                 f"{self.batch_num}")
        return {"batches": self.batch_num, "train_s": self.train_s,
                "map": twin_map(self.model, trainer), "ema_map": None,
                "loss": float(np.mean(losses))}

    def step(self, x, truth, lr: float) -> float:
        """One update on batch (x, truth) at rate lr: the summed loss of its images."""
        return twin_step(self.model, self.optimizer, self.trainer.network, x, truth, lr,
                         self.trainer.batch)


def twin_step(model, optimizer, network, x, truth, lr: float, batch: int) -> float:
    """One Darknet update of the twin on x (B, C, H, W) with Truth `truth`, subdivision by
    subdivision: each pass's targets assigned by darkbp's heads (`train_targets`) on the
    twin's own outputs of that pass, the loss and its gradient in torch. The summed loss."""
    import torch
    twin = _twin()
    model.train()
    for group in optimizer.param_groups:
        group["lr"] = lr / batch
    optimizer.zero_grad()
    size = len(x) // network.config.subdivisions
    total = 0.0
    for sub in range(network.config.subdivisions):
        part = truth[sub * size:(sub + 1) * size]
        zs = model(torch.from_numpy(x[sub * size:(sub + 1) * size]))
        found = [_targets(twin, head, z, part) for head, z in zip(network.heads, zs)]
        loss = model.loss(zs, found)
        loss.backward()
        total += loss.item()
    optimizer.step()
    return total


def _targets(twin, head, z, truth) -> list:
    """A [yolo] head's targets for the twin's input z to it: train_targets on the head's
    output (the logistic on x, y, objectness and classes), as the head's forward makes it,
    in sparse form for Twin.loss."""
    import torch
    with torch.no_grad():
        y = z.detach().view(len(z), len(head.mask), head.classes + 5, *z.shape[2:]).clone()
        y[:, :, 0:2] = torch.sigmoid(y[:, :, 0:2])
        y[:, :, 4:] = torch.sigmoid(y[:, :, 4:])
    found = head.train_targets(y.view_as(z).numpy(), truth)
    index, scale, target = twin.sparse_targets(found)
    return [torch.from_numpy(index.astype("int64")), torch.from_numpy(scale).to(z.dtype),
            torch.from_numpy(target).to(z.dtype)]


def twin_forward(model):
    """The twin's heads' outputs of a batch (float32 numpy in, numpy out), for
    darkbp.detector.detect_files' `forward`."""
    import torch

    def forward(x):
        return [y.numpy() for y in model.predict(torch.from_numpy(x).to(_dtype(model)))]
    return forward


def twin_detect(model, network, paths, thresh: float, nms: float) -> list[list[dict]]:
    """detect_files' detections of `paths` with the twin's forward in place of darkbp's:
    the same letterboxed inputs and passes, darkbp's decoding."""
    import torch

    from darkbp.detector import detect_files
    found = [image["detections"] for image in
             detect_files(network, paths, thresh, hier=0, nms=nms,
                          threads=torch.get_num_threads(), forward=twin_forward(model))]
    model.train()
    return found


def twin_map(model, trainer) -> float:
    """mAP@0.5 of the twin on the trainer's valid list, as DetectionTrainer scores darkbp."""
    import numpy as np
    with np.errstate(over="ignore", invalid="ignore"):      # as Trainer.run: early weights
        result = trainer.valid_scores(forward=twin_forward(model))
    model.train()
    return result.map50


def _twin():
    """bench/twin.py: as bench.twin under pytest, as twin where bench/ is on sys.path
    (this file or bench/bench.py run as a script)."""
    try:
        from bench import twin
    except ImportError:
        import twin
    return twin


def _dtype(model):
    return next(iter(model.tensors.values())).dtype


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _serve(sys.argv[1], sys.argv[2])
