"""Helpers shared by the commands: loading a cfg with its warnings, consoles, number formats."""

from __future__ import annotations

import io

import click
from rich.console import Console

from darkbp.network import Network, parse_network


def print_rich(renderable) -> None:
    """Print on stdout: with colour on a terminal; as plain text, unwrapped, otherwise."""
    console = Console(highlight=False)
    if console.is_terminal:
        console.print(renderable)
        return
    plain = Console(highlight=False, width=200, no_color=True, record=True, file=io.StringIO())
    plain.print(renderable)
    for line in plain.export_text().splitlines():
        click.echo(line.rstrip())


def load_network(cfg: str) -> Network:
    """Parse a cfg and print its warnings (one line each) on stderr."""
    network = parse_network(cfg)
    for warning in network.warnings:
        click.echo(f"darkbp: {warning}", err=True)
    return network


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
