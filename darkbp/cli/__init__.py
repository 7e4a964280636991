"""The `darkbp` command: a thin click layer over the library.

Each command lives in its own module and only parses arguments, calls library
functions and renders their results. Bad input (`DarkbpError`) is caught here,
once, and printed as one line on stderr with its exit code.
"""

from __future__ import annotations

import sys

import click

from darkbp import __version__
from darkbp.errors import DarkbpError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DarkbpError as error:
            click.echo(f"darkbp: error: {error}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("darkbp: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="darkbp")
def main() -> None:
    """Darknet-style .cfg networks in NumPy.

    \b
    Examples:
      darkbp summary cfg/mnist.cfg --format darknet
      darkbp train cfg/mnist.cfg --data mnist --epochs 3
      darkbp gradcheck cfg/mnist.cfg
    """


def _register() -> None:
    # Imported here so that each command module can import `main` without a cycle.
    from darkbp.cli import commands  # noqa: F401


_register()
