"""Click options shared by several commands."""

from __future__ import annotations

import click

from darkbp.threads import default_threads


def threads_option(command):
    """`--threads N` (default: every core this process may use), passed as `threads`."""
    return click.option(
        "--threads", type=click.IntRange(min=1), default=default_threads, metavar="N",
        show_default="all cores",
        help="CPU threads. Each batch is split across them, one process each (where "
             "worker processes are not available, a network with batch normalisation "
             "uses them inside the matrix products instead).")(command)


def names_options(data_also: str = ""):
    """`--names FILE` and `--data FILE.data`, passed as `names_file` and `data_file`: where
    the class names come from. data_also: what else the command reads from the .data file
    (", and its top=")."""
    def decorate(command):
        command = click.option(
            "--data", "data_file", type=click.Path(exists=True, dir_okay=False),
            metavar="FILE.data", help="A Darknet .data file: the names from its names= "
                                      f"(else labels=) file{data_also}.")(command)
        return click.option(
            "--names", "names_file", type=click.Path(exists=True, dir_okay=False),
            metavar="FILE", help="The class names, one per line (default: the class "
                                 "numbers).")(command)
    return decorate
