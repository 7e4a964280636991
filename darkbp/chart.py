"""The training chart, NAME_chart.png, drawn from the metrics log alone.

`read_series(log)` reads NAME_metrics.jsonl (darkbp.train writes it) into a `Series` of
plain lists; `write_chart(series, path)` draws them, as users of AlexeyAB's chart.png
expect: the loss of every batch and its running average, the learning rate, the test
accuracies per epoch, and a title with the cfg, the data and the time left. Training
calls both after each epoch and `darkbp plot` calls them on a finished or running log,
so the two draw the same picture.

matplotlib is optional (`pip install 'darkbp[plot]'`) and imported only to draw, so that
neither `darkbp --help` nor the start of training pays for it.

The log, as read here:
- a "start" record opens each run (`cfg`, `data`, `total_batches`, `batch_num` it starts
  from). `--resume` appends to the log, starting from the last checkpoint, so a start
  record drops every batch and epoch after its `batch_num`: those were logged by a run
  that died before its next checkpoint, and are trained again.
- a "batch" record every 50 batches and an "epoch" record at each epoch's end carry
  `losses`, the loss of each batch since the record before, ending at `batch_num`, and
  `lrs`, their learning rates, where these were not all the record's `lr`. A log written
  before darkbp kept `losses` has only each batch record's mean `loss` over its window,
  and is drawn from those.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from darkbp.atomic import atomic_open
from darkbp.errors import DarkbpError

MISSING = "charts need matplotlib: pip install 'darkbp[plot]'"
LOG_SUFFIX = "_metrics.jsonl"
CHART_SUFFIX = "_chart.png"
WIDTH, HEIGHT, DPI = 12, 8, 100     # inches, inches, pixels per inch: 1200 x 800 pixels


@dataclass
class EpochPoint:
    """One epoch's test accuracies (fractions), at the batch that ended it."""

    epoch: int
    batch_num: int
    accuracy: float
    ema_accuracy: float | None
    top: int | None                 # k of the top-k accuracies, None without them
    top_accuracy: float | None
    ema_top_accuracy: float | None
    metric: str = "accuracy"        # what `accuracy` holds: a detector's "mAP@0.5"


@dataclass
class Series:
    """What the chart draws, read from a metrics log."""

    cfg: str
    data: str
    total_batches: int
    batch_num: int                  # the last batch logged
    per_batch: bool                 # `loss` holds every batch; False: an old log's means
    batches: list[int]              # the x of loss, average and lr
    loss: list[float]               # each batch's; empty for an old log
    average: list[float]            # Darknet's running average (an old log: window means)
    lr: list[float]
    epochs: list[EpochPoint]
    training_seconds: float         # the last record's wall_time: training, no evaluation
    seconds_left: float | None      # at the last record; None when unknown


def available() -> bool:
    """Whether matplotlib can be imported, without importing it."""
    return importlib.util.find_spec("matplotlib") is not None


def find_log(run: Path) -> Path:
    """The metrics log of a run: `run` itself, or the one NAME_metrics.jsonl in the folder."""
    if run.is_file():
        return run
    if not run.is_dir():
        raise DarkbpError(f"{run} does not exist")
    logs = sorted(run.glob("*" + LOG_SUFFIX))
    if not logs:
        raise DarkbpError(f"{run} holds no NAME{LOG_SUFFIX} (the metrics log that "
                          "darkbp train writes in --out)")
    if len(logs) > 1:
        raise DarkbpError(f"{run} holds {len(logs)} metrics logs "
                          f"({', '.join(log.name for log in logs)}): give one of them")
    return logs[0]


def chart_path(log: Path) -> Path:
    """NAME_chart.png beside NAME_metrics.jsonl."""
    name = log.name.removesuffix(LOG_SUFFIX) if log.name.endswith(LOG_SUFFIX) else log.stem
    return log.with_name(name + CHART_SUFFIX)


# ---------------------------------------------------------------------------- the log

def read_series(log: Path) -> Series:
    """The chart's series from a metrics log; DarkbpError naming the line of a bad record."""
    records = list(_records(log))
    per_batch = all("losses" in record for _, record in records
                    if record.get("event") in ("batch", "epoch"))
    # Keyed by batch number. `ends`: (time, wall_time) of each batch and epoch record, by
    # the batch it ends at.
    losses, lrs, means, epochs, ends = {}, {}, {}, {}, {}
    run = None                      # the last start record's (cfg, data, total, time, batch_num)
    for line, record in records:
        event = record.get("event")
        try:
            if event == "start":
                run = (record["cfg"], record["data"], record["total_batches"], record["time"],
                       record["batch_num"])
                for kept in (losses, lrs, means, epochs, ends):
                    for batch in [b for b in kept if b > run[-1]]:
                        del kept[batch]
            elif event in ("batch", "epoch"):
                end = record["batch_num"]
                ends[end] = (record["time"], record["wall_time"])
                if per_batch:
                    count = len(record["losses"])
                    batch_lrs = record.get("lrs", [record["lr"]] * count)
                    for batch, loss, lr in zip(range(end - count + 1, end + 1),
                                               record["losses"], batch_lrs, strict=True):
                        losses[batch], lrs[batch] = float(loss), float(lr)
                elif event == "batch":
                    means[end], lrs[end] = float(record["loss"]), float(record["lr"])
                if event == "epoch":
                    epochs[end] = EpochPoint(record["epoch"], end, record["accuracy"],
                                             record["ema_accuracy"], record.get("top"),
                                             record.get("top_accuracy"),
                                             record.get("ema_top_accuracy"),
                                             record.get("metric", "accuracy"))
        except KeyError as e:
            raise DarkbpError(f"the {event} record has no {e.args[0]!r}",
                              file=str(log), line=line) from None
        except (TypeError, ValueError) as e:
            raise DarkbpError(f"bad {event} record: {e}", file=str(log), line=line) from None
    if run is None:
        raise DarkbpError("not a darkbp metrics log: it has no start record", file=str(log))
    if not ends:
        raise DarkbpError("no batch or epoch record yet: nothing to draw", file=str(log))

    cfg, data, total, started, first = run
    batch_num = max(ends)
    now, wall_time = ends[batch_num]
    batches = sorted(losses if per_batch else means)
    loss = [losses[b] for b in batches] if per_batch else []
    if batch_num >= total:
        left = 0.0
    elif batch_num > first:         # at the speed of the last run, evaluations included
        left = (now - started) / (batch_num - first) * (total - batch_num)
    else:
        left = None
    return Series(cfg=cfg, data=data, total_batches=total, batch_num=batch_num,
                  per_batch=per_batch, batches=batches, loss=loss,
                  average=running_average(loss) if per_batch else [means[b] for b in batches],
                  lr=[lrs[b] for b in batches], epochs=[epochs[b] for b in sorted(epochs)],
                  training_seconds=wall_time, seconds_left=left)


def running_average(losses: list[float]) -> list[float]:
    """Darknet's avg_loss: the first loss, then avg = 0.9·avg + 0.1·loss after each batch."""
    average, out = None, []
    for loss in losses:
        average = loss if average is None else 0.9 * average + 0.1 * loss
        out.append(average)
    return out


def _records(log: Path):
    """(line number, record) of each line of the log."""
    try:
        text = log.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DarkbpError(f"cannot read {log}: {getattr(e, 'strerror', None) or e}") from e
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DarkbpError(f"not a JSON record: {e.msg}", file=str(log), line=number) from None
        if not isinstance(record, dict):
            raise DarkbpError("not a JSON object", file=str(log), line=number)
        yield number, record


# ---------------------------------------------------------------------------- drawing

def write_chart(series: Series, path: Path) -> Path:
    """Draw `series` into a WIDTH x HEIGHT PNG at `path`, atomically; DarkbpError without
    matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise DarkbpError(MISSING) from None
    # A Figure of its own with the Agg canvas: no pyplot state, no display, nothing changed
    # for a program that imported darkbp and draws its own figures.
    figure = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI)
    FigureCanvasAgg(figure)
    _draw(figure, series)
    with atomic_open(path) as f:
        figure.savefig(f, format="png", dpi=DPI)
    return path


BLUE, PALE_BLUE, ORANGE, GREEN, PURPLE, GREY = ("#1f5fa8", "#9dbfe3", "#d9731a", "#2e8b57",
                                                "#7b4fb0", "#8c8c8c")


def _draw(figure, series: Series) -> None:
    from matplotlib.ticker import FuncFormatter

    loss_axes, accuracy_axes, lr_axes = figure.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2, 1]})
    figure.set_layout_engine("constrained")
    # Where each epoch ended: the last test of each (a run stopped mid-epoch and resumed
    # tested the same epoch twice).
    ends = list({e.epoch: e for e in series.epochs}.values())
    for axes in (loss_axes, accuracy_axes, lr_axes):
        axes.spines[["top", "right"]].set_visible(False)
        axes.grid(True, color="#e6e6e6", linewidth=0.8)
        axes.set_axisbelow(True)
        for epoch in ends:
            axes.axvline(epoch.batch_num, color="#d0d0d0", linewidth=0.8, zorder=0)
    lr_axes.set_xlim(0, max(series.total_batches, series.batch_num))
    lr_axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    lr_axes.set_xlabel("batch")

    loss_axes.set_title(f"{series.cfg} on {series.data}", loc="left", fontsize=13,
                        fontweight="bold", pad=22)
    loss_axes.set_title(_progress(series), loc="right", fontsize=10, color="#555555", pad=22)
    _draw_loss(loss_axes, series)
    _draw_accuracy(accuracy_axes, series)
    accuracy_axes.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{100 * y:.4g}%"))
    lr_axes.plot(series.batches, series.lr, color=ORANGE, linewidth=1.5)
    lr_axes.set_ylim(bottom=0)
    lr_axes.set_ylabel("learning rate")
    lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    for axes in (loss_axes, accuracy_axes):
        if axes.get_legend_handles_labels()[0]:
            axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)

    if ends:
        # Epoch numbers along the top, at most 20 of them.
        top = loss_axes.secondary_xaxis("top")
        step = -(-len(ends) // 20)
        shown = ends[step - 1::step]
        top.set_xticks([e.batch_num for e in shown], [f"epoch {e.epoch}" for e in shown])
        top.tick_params(labelsize=8, colors="#555555", length=0)
        top.spines["top"].set_visible(False)


def _draw_loss(axes, series: Series) -> None:
    if series.per_batch:
        axes.plot(series.batches, series.loss, color=PALE_BLUE, linewidth=0.6,
                  label="each batch")
        label = "running average"
    else:
        label = "mean of 50 batches"
    axes.plot(series.batches, series.average, color=BLUE, linewidth=2,
              label=f"{label}  {series.average[-1]:.3g}" if series.average else label)
    # A log scale once the average falls by more than ten times, as it does from a fresh
    # start; the loss of single batches then spans decades below it.
    positive = [v for v in series.average if v > 0]
    if positive and max(positive) > 10 * min(positive):
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
        axes.set_yscale("log")
        low, high = axes.get_ylim()
        # Plain numbers at 1, 2, 5 × 10^k over a few decades, at 10^k only over more.
        subs = (1.0, 2.0, 5.0) if high / low < 10 ** 2.5 else (1.0,)
        axes.yaxis.set_major_locator(LogLocator(subs=subs))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        axes.yaxis.set_minor_formatter(NullFormatter())
    else:
        axes.set_ylim(bottom=0)
    axes.set_ylabel("training loss")


def _draw_accuracy(axes, series: Series) -> None:
    metric = series.epochs[-1].metric if series.epochs else "accuracy"
    axes.set_ylabel(f"test {metric}")
    if not series.epochs:
        axes.text(0.5, 0.5, "no epoch has ended yet", transform=axes.transAxes,
                  ha="center", va="center", color=GREY)
        return
    top = series.epochs[-1].top
    name = "top-1" if metric == "accuracy" else metric
    lines = [("accuracy", name, GREEN, "-"), ("ema_accuracy", f"{name} EMA", PURPLE, "-"),
             ("top_accuracy", f"top-{top}", GREEN, "--"),
             ("ema_top_accuracy", f"top-{top} EMA", PURPLE, "--")]
    drawn = []
    for key, label, colour, style in lines:
        points = [(e.batch_num, getattr(e, key)) for e in series.epochs
                  if getattr(e, key) is not None]
        if not points:
            continue
        x, y = zip(*points)
        drawn += y
        axes.plot(x, y, color=colour, linestyle=style, linewidth=1.8, marker="o",
                  markersize=5, label=f"{label}  {100 * y[-1]:.2f}%")
    # Close around the points, so that 98.5% and 99% stay apart, with room for the markers.
    pad = max(0.08 * (max(drawn) - min(drawn)), 0.002)
    axes.set_ylim(max(0.0, min(drawn) - pad), max(drawn) + pad)


def _progress(series: Series) -> str:
    where = f"batch {series.batch_num:,} of {series.total_batches:,}"
    if series.seconds_left == 0:
        return f"{where} · done, {_duration(series.training_seconds)} of training"
    if series.seconds_left is None:
        return f"{where} · time left unknown"
    return f"{where} · about {_duration(series.seconds_left)} left"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"
