"""Click options shared by several commands."""

from __future__ import annotations

import click

from darkbp.threads import default_threads


def threads_option(command):
    """`--threads N` (default: every core this process may use), passed as `threads`."""
    return click.option(
        "--threads", type=click.IntRange(min=1), default=default_threads, metavar="N",
        show_default="all cores",
        help="CPU threads. Each batch is split across them (a network with batch "
             "normalisation uses them inside the matrix products instead).")(command)
