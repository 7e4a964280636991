"""Click options shared by several commands."""

from __future__ import annotations

import click

from darkbp.threads import set_threads


def _apply_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:
        set_threads(value)


def threads_option(command):
    """`--threads N`: the number of BLAS threads, set before the command's work starts.

    Without it, BLAS keeps what it chose at start-up (OMP_NUM_THREADS or all cores).
    """
    return click.option(
        "--threads", type=click.IntRange(min=1), default=None, metavar="N",
        expose_value=False, callback=_apply_threads,
        help="BLAS threads for NumPy's matrix products (default: OMP_NUM_THREADS or "
             "all cores).")(command)
