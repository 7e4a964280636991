"""`--format darknet` must equal Darknet's own output byte for byte.

The expected tables are literal text taken from the specification (SPEC section 4)
and the foundation issue, which come from Darknet, not from darkbp.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from darkbp.cli import main
from darkbp.network import parse_network
from darkbp.summary import darknet_text
from tests.conftest import CFG_DIR, SHARED

NOTES_TABLE = """\
layer     filters    size              input                output
    0 conv      4  3 x 3 / 1    48 x  48 x   3   ->    48 x  48 x   4  0.000 BFLOPs
    1 max          2 x 2 / 2    48 x  48 x   4   ->    24 x  24 x   4
    2 conv      8  3 x 3 / 2    24 x  24 x   4   ->    12 x  12 x   8  0.000 BFLOPs
    3 max          2 x 2 / 2    12 x  12 x   8   ->     6 x   6 x   8
    4 conv     16  1 x 1 / 1     6 x   6 x   8   ->     6 x   6 x  16  0.000 BFLOPs
    5 softmax                                         576
"""

MNIST_TABLE = """\
layer     filters    size              input                output
    0 conv     20  5 x 5 / 1    28 x  28 x   1   ->    24 x  24 x  20  0.001 BFLOPs
    1 max          2 x 2 / 2    24 x  24 x  20   ->    12 x  12 x  20
    2 conv     50  5 x 5 / 1    12 x  12 x  20   ->     8 x   8 x  50  0.003 BFLOPs
    3 max          2 x 2 / 2     8 x   8 x  50   ->     4 x   4 x  50
    4 connected                             800  ->   500
    5 connected                             500  ->    10
    6 softmax                                          10
"""


def test_notes_example_matches_darknet():
    assert darknet_text(parse_network(CFG_DIR / "notes.cfg")) == NOTES_TABLE


def test_mnist_lenet_matches_darknet():
    assert darknet_text(parse_network(CFG_DIR / "mnist.cfg")) == MNIST_TABLE


def test_cli_prints_the_darknet_table_on_stdout():
    result = CliRunner().invoke(main, ["summary", str(CFG_DIR / "mnist.cfg"),
                                       "--format", "darknet"])
    assert result.exit_code == 0, result.output
    assert result.stdout == MNIST_TABLE


def test_grouped_conv_bflops_divide_by_groups(write_cfg):
    # 2 * filters * size * size * (channels / groups) * out_h * out_w / 1e9, from SPEC section 4:
    # 2 * 64 * 3 * 3 * (64 / 4) * 100 * 100 / 1e9 = 0.18432 -> "0.184"
    # and the depthwise layer: 2 * 64 * 3 * 3 * 1 * 100 * 100 / 1e9 = 0.01152 -> "0.012"
    path = write_cfg("""
        [net]
        width=100
        height=100
        channels=64
        [convolutional]
        filters=64
        size=3
        pad=1
        groups=4
        [convolutional]
        filters=64
        size=3
        pad=1
        groups=64
    """)
    lines = darknet_text(parse_network(path)).splitlines()
    assert lines[1] == ("    0 conv     64  3 x 3 / 1   100 x 100 x  64   ->   100 x 100 x  64"
                        "  0.184 BFLOPs")
    assert lines[2] == ("    1 conv     64  3 x 3 / 1   100 x 100 x  64   ->   100 x 100 x  64"
                        "  0.012 BFLOPs")


def test_maxpool_default_padding_rounds_up(write_cfg):
    # Darknet: padding = size - 1 by default, out = (w + padding - size) / stride + 1,
    # so 2x2/2 on 7x5 gives ceil: 4 x 3.  size 3 stride 2 on 7: (7 + 2 - 3) / 2 + 1 = 4.
    path = write_cfg("""
        [net]
        width=7
        height=5
        channels=2
        [maxpool]
        size=2
        stride=2
        [maxpool]
        size=3
        stride=2
    """)
    lines = darknet_text(parse_network(path)).splitlines()
    assert lines[1] == "    0 max          2 x 2 / 2     7 x   5 x   2   ->     4 x   3 x   2"
    assert lines[2] == "    1 max          3 x 3 / 2     4 x   3 x   2   ->     2 x   2 x   2"


# Darknet's own tables (../shared/darknet-summary/, printed by Darknet) of its stock cfgs:
# one case per file there.
DARKNET_TABLES = sorted(path.stem for path in (SHARED / "darknet-summary").glob("*.txt"))
STOCK_CFGS = sorted((SHARED / "darknet-cfg").glob("*.cfg"))


def test_darknets_tables_and_cfgs_are_beside_the_project():
    assert len(DARKNET_TABLES) == 28 and len(STOCK_CFGS) == 45


@pytest.mark.parametrize("name", DARKNET_TABLES)
def test_stock_cfg_table_equals_darknets_output(name):
    expected = (SHARED / "darknet-summary" / f"{name}.txt").read_text()
    network = parse_network(SHARED / "darknet-cfg" / f"{name}.cfg")
    assert darknet_text(network) == expected


@pytest.mark.parametrize("path", STOCK_CFGS, ids=[path.stem for path in STOCK_CFGS])
def test_every_stock_cfg_tabulates_in_every_format(path):
    """The 16 cfgs without a table of Darknet's must tabulate by the same rules (the layer
    tests check those rules line by line); here: every format works on every cfg."""
    for fmt in ("darknet", "table", "json"):
        result = CliRunner().invoke(main, ["summary", str(path), "--format", fmt])
        assert result.exit_code == 0, (fmt, result.output)
        assert result.stdout.strip()
