"""`darkbp summary`: the layer table as a rich table, Darknet's or AlexeyAB's text, or JSON."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from darkbp.cli import main
from darkbp.cli.common import human_bytes, load_network, print_rich
from darkbp.summary import alexeyab_table, darknet_text, summary_data


@main.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "darknet", "alexeyab", "json"]),
              default="table", show_default=True,
              help="table: rich table with parameters and totals; darknet: Darknet's "
                   "(pjreddie) text byte for byte; alexeyab: the text AlexeyAB's fork "
                   "prints, byte for byte, with its 'Total BFLOPS' (the sum of the BFLOPs "
                   "it computes: convolutions, maxpools and shortcuts, not connected "
                   "layers) and 'avg_outputs' (the integer mean of the outputs of the "
                   "layers whose l.w and l.h exceed 1: the input's width and height, but 1 "
                   "for connected, 0 for cost and dropout, a route's first input's); where "
                   "AlexeyAB's Darknet cannot parse the cfg, what it prints before it dies, "
                   "and why on stderr; json: the table's data, with notes where the two "
                   "Darknets part.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Batch for the activation-memory total (default: the cfg's batch).")
def summary(cfg: str, fmt: str, batch: int | None) -> None:
    """Print the layer table of a Darknet cfg.

    The numbers (table and json): BFLOPs = 2 x the multiply-adds of one forward pass of
    one image, in billions, bias and activation excluded, as Darknet counts them
    (convolutions, local and connected layers); params = the parameters a layer trains
    (weights, biases, batch-norm scales; not the rolling statistics it also saves);
    activations = 4 bytes (float32) x (the input + every layer's output) x --batch images:
    the memory one forward pass holds. Shapes are width x height x channels. "reads": the
    layers a [route] or [shortcut] reads ("in": the network input); json "inputs": every
    layer's, -1 for the network input. Notes (under the table; json "notes"): where the
    two Darknets part on this cfg, which rule darkbp followed, and whether AlexeyAB's fork
    cannot parse it (its division by zero in avg_outputs, its parse_shortcut assertion).

    \b
    Examples:
      darkbp summary cfg/mnist.cfg
      darkbp summary cfg/mnist.cfg --format darknet
      darkbp summary cfg/mnist.cfg --format alexeyab
      darkbp summary cfg/mnist.cfg --format json --batch 256
    """
    network = load_network(cfg)
    if fmt == "darknet":
        click.echo(darknet_text(network), nl=False)
        return
    if fmt == "alexeyab":
        text, stop = alexeyab_table(network)
        click.echo(text, nl=False)
        if stop:
            click.echo(f"darkbp: note: AlexeyAB's Darknet cannot parse this cfg and stops "
                       f"here, before the end of its table: {stop} (darkbp's table and json "
                       f"formats tabulate the whole cfg)", err=True)
        return
    data = summary_data(network, batch)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    print_rich(_table(data, network))


def _shape(whc) -> str:
    return " x ".join(str(v) for v in whc)


def _reads(row) -> str:
    """The layers a row reads, when not just the one before it ("in": the network input)."""
    sources = row["inputs"]
    if sources == [row["index"] - 1]:
        return ""
    return ", ".join("in" if source < 0 else str(source) for source in sources)


def _table(data, network) -> Table:
    totals = data["totals"]
    table = Table(title=f"{data['file']}  (input {_shape(data['input'])}, batch {data['batch']})",
                  show_footer=True, title_justify="left")
    columns = [("layer", "right"), ("type", "left"), ("filters", "right"), ("size", "left"),
               ("reads", "right"), ("input", "right"), ("output", "right"), ("BFLOPs", "right"),
               ("params", "right")]
    footers = {"type": "total", "BFLOPs": f"{totals['bflops']:.6f}",
               "params": f"{totals['params']:,}"}
    for name, justify in columns:
        table.add_column(name, justify=justify, footer=footers.get(name, ""))
    for row, layer in zip(data["layers"], network.layers):
        kind, filters, size = layer.summary_cells()
        table.add_row(str(row["index"]), kind, filters, size, _reads(row), _shape(row["input"]),
                      _shape(row["output"]), f"{row['bflops']:.6f}" if row["bflops"] else "",
                      f"{row['params']:,}" if row["params"] else "")
    flops = (f"{totals['bflops']:.3f} BFLOPs" if totals["bflops"] >= 1
             else f"{totals['bflops'] * 1e3:.3f} MFLOPs")
    table.caption = (f"{totals['params']:,} parameters · {flops} per image (forward) · "
                     f"activations {human_bytes(totals['activation_bytes'])} "
                     f"at batch {data['batch']} (float32)")
    for note in data["notes"]:
        table.caption += f"\nnote: {escape(note)}"
    table.caption_justify = "left"
    return table
