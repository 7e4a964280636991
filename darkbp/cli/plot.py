"""`darkbp plot`: redraws a training run's chart from its metrics log."""

from __future__ import annotations

from pathlib import Path

import click

from darkbp import chart
from darkbp.cli import main


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the chart here (default: NAME_chart.png beside the log).")
def plot(run: Path, out: Path | None) -> None:
    """Draw the chart of a training run from its metrics log, and print its path.

    RUN is the --out folder of `darkbp train` (it must hold one NAME_metrics.jsonl) or a
    metrics log. The chart is the one training writes after each epoch: the loss of each
    batch and its running average, the learning rate, the test accuracies per epoch (raw
    and EMA weights, top-1 and top-k), and the time left. A running log can be drawn at any
    moment. Needs matplotlib: pip install 'darkbp[plot]'.

    \b
    Examples:
      darkbp plot backup
      darkbp plot runs/fashion/mnist_metrics.jsonl --out fashion.png
    """
    log = chart.find_log(run)
    path = chart.write_chart(chart.read_series(log), out or chart.chart_path(log))
    click.echo(str(path))
