"""`darkbp gradcheck`: finite differences against backprop, per layer and tensor."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from darkbp.cli import main
from darkbp.cli.common import load_network, print_rich
from darkbp.gradcheck import gradcheck as run_gradcheck


@main.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.option("--batch", type=click.IntRange(min=1), default=2, show_default=True,
              help="Images in the random batch.")
@click.option("--eps", type=click.FloatRange(min=0, min_open=True), default=1e-6,
              show_default=True, help="Step of the central differences.")
@click.option("--tol", type=click.FloatRange(min=0, min_open=True), default=1e-6,
              show_default=True, help="Largest relative error that passes.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for the weights, the input, the truth and the sampled elements.")
@click.option("--max-elements", type=click.IntRange(min=1), default=64, show_default=True,
              help="Tensors up to this size are checked in full, larger ones on a random "
                   "sample of this many elements.")
def gradcheck(cfg: str, batch: int, eps: float, tol: float, seed: int, max_elements: int) -> None:
    """Check every gradient of a network against finite differences (float64).

    Exit code 0 when every parameter tensor and the input gradient pass, 1 when any fails.

    \b
    Examples:
      darkbp gradcheck cfg/mnist.cfg
      darkbp gradcheck cfg/grouped.cfg --batch 4 --seed 7 --max-elements 200
    """
    network = load_network(cfg)
    report = run_gradcheck(network, batch=batch, eps=eps, tol=tol, seed=seed,
                           max_elements=max_elements)
    print_rich(_table(report, cfg))
    verdict = "all gradients pass" if report.passed else "GRADIENT CHECK FAILED"
    click.echo(f"{verdict}: relative error |a - n| / max(|a|, |n|, {report.floor / tol:g}) "
               f"<= {tol:g}")
    if not report.passed:
        sys.exit(1)


def _table(report, cfg: str) -> Table:
    table = Table(title=(f"gradcheck {cfg}: batch {report.batch}, eps {report.eps:g}, "
                         f"seed {report.seed} (input seed {report.input_seed}), "
                         f"loss {report.loss:.6f}"), title_justify="left")
    for name, justify in [("layer", "right"), ("type", "left"), ("tensor", "left"),
                          ("checked", "right"), ("max abs error", "right"),
                          ("max rel error", "right"), ("", "left")]:
        table.add_column(name, justify=justify)
    for row in report.rows:
        checked = f"{row.checked}" if row.checked == row.size else f"{row.checked} of {row.size}"
        table.add_row("" if row.layer is None else str(row.layer), row.layer_type, row.tensor,
                      checked, f"{row.max_abs:.2e}", f"{row.max_rel:.2e}",
                      "ok" if row.passed else "FAIL",
                      style=None if row.passed else "bold red")
    return table
