"""`--format alexeyab` must equal AlexeyAB's Darknet's own output byte for byte.

The nine tables in shared/darknet-summary/alexeyab/ are AlexeyAB's real output (commit
59596d78, CPU build). For the layer types none of them uses, the expected lines below are
written by hand from the printf formats in AlexeyAB/darknet src/parser.c and
src/<name>_layer.c, and the totals from parse_network_cfg_custom's rules: Total BFLOPS sums
l.bflops in float, avg_outputs is the integer mean of l.outputs over the layers with
l.w > 1 and l.h > 1.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from darkbp.cli import main
from darkbp.network import parse_network
from darkbp.summary import alexeyab_table, alexeyab_text, alexeyab_totals
from tests.conftest import SHARED

GOLDEN = SHARED / "darknet-summary" / "alexeyab"
NAMES = sorted(path.stem for path in GOLDEN.glob("*.cfg"))
HEADER = "   layer   filters  size/strd(dil)      input                output\n"


def test_all_nine_golden_tables_are_here():
    assert len(NAMES) == 9


@pytest.mark.parametrize("name", NAMES)
def test_library_matches_alexeyab(name):
    expected = (GOLDEN / f"{name}.txt").read_text()
    assert alexeyab_text(parse_network(GOLDEN / f"{name}.cfg")) == expected


@pytest.mark.parametrize("name", NAMES)
def test_cli_prints_alexeyab_table_on_stdout(name):
    expected = (GOLDEN / f"{name}.txt").read_text()
    result = CliRunner().invoke(main, ["summary", str(GOLDEN / f"{name}.cfg"),
                                       "--format", "alexeyab"])
    assert result.exit_code == 0, result.output
    assert result.stdout == expected


# Shortcut, upsample, downsample, reorg, batchnorm and cost, each line by hand from AlexeyAB's
# printf: make_convolutional_layer "conv  " "%5d      " "%2d x%2d/%2d   "
# "%4d x%4d x%4d -> %4d x%4d x%4d %5.3f BF\n" (2·(c/groups)·n·size²·out_h·out_w/1e9);
# make_shortcut_layer "Shortcut Layer: %d, " " wt = %d, wn = %d, outputs:%4d x%4d x%4d %5.3f BF\n"
# (out_w·out_h·out_c·n/1e9) and parse_shortcut " (%4d x%4d x%4d) + (%4d x%4d x%4d) \n" when
# the `from` layer has other channels (its width and height it asserts are the same: see
# test_shortcut_from_another_size_stops_the_table); make_upsample_layer
# "upsample                %2dx  %4d x%4d x%4d -> %4d x%4d x%4d\n" and its "downsample" twin;
# make_reorg_old_layer (AlexeyAB's [reorg]) "reorg_old              /%2d  %4d x%4d x%4d   ->  "
# "%4d x%4d x%4d\n"; make_batchnorm_layer "Batch Normalization Layer: %d x %d x %d image\n";
# make_cost_layer "cost" + 43 spaces + "%4d\n".
RESIDUAL_CFG = """
    [net]
    width=64
    height=64
    channels=3
    [convolutional]
    filters=16
    size=3
    pad=1
    activation=leaky
    [convolutional]
    filters=32
    size=3
    pad=1
    [shortcut]
    from=-2
    [shortcut]
    from=-2
    [upsample]
    stride=2
    [upsample]
    stride=-2
    [reorg]
    stride=2
    [batchnorm]
    [cost]
"""
# conv 0: 2·3·16·9·64·64 = 3538944 -> 0.004; conv 1: 2·16·32·9·64·64 = 37748736 -> 0.038;
# each shortcut 64·64·32 = 131072 -> 0.000; the sum 0.041549824 -> 0.042.
# avg_outputs: every layer but the cost (l.w = 0) has l.w, l.h > 1:
# (65536 + 131072 + 131072 + 131072 + 524288 + 131072 + 131072 + 131072) / 8 = 172032.
RESIDUAL_TABLE = (
    HEADER
    + "   0 conv     16       3 x 3/ 1     64 x  64 x   3 ->   64 x  64 x  16 0.004 BF\n"
    + "   1 conv     32       3 x 3/ 1     64 x  64 x  16 ->   64 x  64 x  32 0.038 BF\n"
    + "   2 Shortcut Layer: 0,  wt = 0, wn = 0, outputs:  64 x  64 x  32 0.000 BF\n"
    + " (  64 x  64 x  32) + (  64 x  64 x  16) \n"
    + "   3 Shortcut Layer: 1,  wt = 0, wn = 0, outputs:  64 x  64 x  32 0.000 BF\n"
    + "   4 upsample                 2x    64 x  64 x  32 ->  128 x 128 x  32\n"
    + "   5 downsample               2x   128 x 128 x  32 ->   64 x  64 x  32\n"
    + "   6 reorg_old              / 2    64 x  64 x  32   ->    32 x  32 x 128\n"
    + "   7 Batch Normalization Layer: 32 x 32 x 128 image\n"
    + "   8 cost" + " " * 43 + "131072\n"
    + "Total BFLOPS 0.042 \n"
    + "avg_outputs = 172032 \n")


def test_shortcut_upsample_reorg_batchnorm_cost(write_cfg):
    assert alexeyab_text(parse_network(write_cfg(RESIDUAL_CFG))) == RESIDUAL_TABLE


# Routes, maxpool BFLOPs, connected, dropout and an L1 cost. parse_route prints after the
# indexes " \t    " (more than 3 inputs), " \t            " (2 or 3) or " \t\t            " (1),
# then 11 spaces, "%d/%d" of group_id/groups or 3 spaces, and " -> %4d x%4d x%4d \n".
# make_maxpool_layer "max               %2dx%2d/%2d   %4d x%4d x%4d -> %4d x%4d x%4d %5.3f BF\n"
# counts size²·c·out_h·out_w/1e9; make_dropout_layer
# "dropout    p = %.3f        %4d  ->   %4d\n" with parse_dropout's default probability .2;
# get_cost_type knows sse, masked and smooth only and says so for L1.
ROUTES_CFG = """
    [net]
    width=256
    height=256
    channels=8
    [maxpool]
    size=2
    stride=2
    [convolutional]
    filters=4
    size=1
    [route]
    layers=-1,-2
    [route]
    layers=0,1,2,1
    [route]
    layers=-4
    groups=2
    group_id=1
    [connected]
    output=10
    [dropout]
    [cost]
    type=L1
"""
# maxpool 2·2·8·128·128 = 524288 -> 0.001; conv 2·8·4·128·128 = 1048576 -> 0.001;
# the sum 0.001572864 -> 0.002. avg_outputs: a route takes l.w, l.h of its first input layer
# (all > 1 here); connected has l.w = l.h = 1, dropout and cost 0:
# (131072 + 65536 + 196608 + 458752 + 65536) / 5 = 183500.8 -> 183500.
ROUTES_TABLE = (
    HEADER
    + "   0 max                2x 2/ 2    256 x 256 x   8 ->  128 x 128 x   8 0.001 BF\n"
    + "   1 conv      4       1 x 1/ 1    128 x 128 x   8 ->  128 x 128 x   4 0.001 BF\n"
    + "   2 route  1 0 \t" + " " * 12 + " " * 11 + " " * 3 + " ->  128 x 128 x  12 \n"
    + "   3 route  0 1 2 1 \t" + " " * 4 + " " * 11 + " " * 3 + " ->  128 x 128 x  28 \n"
    + "   4 route  0 \t\t" + " " * 12 + " " * 11 + "1/2" + " ->  128 x 128 x   4 \n"
    + "   5 connected" + " " * 28 + "65536  ->    10\n"
    + "   6 dropout    p = 0.200          10  ->     10\n"
    + "   7 Couldn't find cost type L1, going with SSE\n"
    + "cost" + " " * 43 + "  10\n"
    + "Total BFLOPS 0.002 \n"
    + "avg_outputs = 183500 \n")


def test_shortcut_from_another_size_stops_the_table(write_cfg):
    # parse_shortcut asserts that the `from` layer has the shortcut's width and height, after
    # make_shortcut_layer printed its line: AlexeyAB's Darknet aborts there (as on its own
    # resnet50.cfg, FAILED.txt of alexeyab-own). darkbp prints the table up to that line.
    path = write_cfg("""
        [net]
        width=64
        height=64
        channels=3
        [convolutional]
        filters=16
        size=3
        pad=1
        [convolutional]
        filters=16
        size=3
        stride=2
        pad=1
        [shortcut]
        from=-2
        [cost]
    """)
    table = (HEADER
             + "   0 conv     16       3 x 3/ 1     64 x  64 x   3 ->   64 x  64 x  16 0.004 BF\n"
             + "   1 conv     16       3 x 3/ 2     64 x  64 x  16 ->   32 x  32 x  16 0.005 BF\n"
             + "   2 Shortcut Layer: 0,  wt = 0, wn = 0, outputs:  32 x  32 x  16 0.000 BF\n")
    assert alexeyab_text(parse_network(path)) == table
    result = CliRunner().invoke(main, ["summary", str(path), "--format", "alexeyab"])
    assert result.exit_code == 0
    assert result.stdout == table
    assert ("cannot parse this cfg and stops here, before the end of its table: layer 2 "
            "[shortcut] (line 14): its parse_shortcut asserts that the 'from' layer 0 "
            "(64 x 64 x 16) has the width and height of this layer's input (32 x 32 x 16)"
            in result.stderr)


def test_routes_maxpool_connected_dropout_l1_cost(write_cfg):
    assert alexeyab_text(parse_network(write_cfg(ROUTES_CFG))) == ROUTES_TABLE


def test_no_layer_wider_than_one_has_no_avg_outputs(write_cfg):
    # Connected layers have l.w = l.h = 1, and the softmax after them takes its input's 1 x 1:
    # avg_counter stays 0 and AlexeyAB's integer division by it dies (SIGFPE) after its Total
    # BFLOPS line and before avg_outputs, as FAILED.txt of alexeyab-own shows for its rnn.cfg.
    path = write_cfg("""
        [net]
        width=1
        height=1
        channels=6
        [connected]
        output=4
        [softmax]
    """)
    table = (HEADER
             + "   0 connected" + " " * 28 + "   6  ->     4\n"
             + "   1 softmax" + " " * 40 + "   4\n"
             + "Total BFLOPS 0.000 \n")
    assert alexeyab_text(parse_network(path)) == table
    result = CliRunner().invoke(main, ["summary", str(path), "--format", "alexeyab"])
    assert result.exit_code == 0
    assert result.stdout == table
    assert "divides by zero" in result.stderr


def test_reorg_extra_is_refused_with_its_line():
    # go.cfg's [reorg] extra=1 appends a value; AlexeyAB's [reorg] reads no extra, so every
    # shape after it would differ from darkbp's network.
    cfg = SHARED / "darknet-cfg" / "go.cfg"
    result = CliRunner().invoke(main, ["summary", str(cfg), "--format", "alexeyab"])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"{cfg}:127: [reorg]: " in result.stderr
    assert "extra=1" in result.stderr
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- totals of resnet18

DARKNET_LINE = re.compile(r"\s*(\d+) (conv|max|res|avg|softmax|cost)\s+(.*)")
DIMS = re.compile(r"(\d+) x\s*(\d+) x\s*(\d+)")


def _resnet18_layers():
    """(kind, numbers) of every layer, read from pjreddie's own table of resnet18 (not from
    darkbp): conv (filters, size, in w, h, c, out w, h, c), max (size, in ..., out ...),
    res (from w, h, c, out w, h, c), avg (in w, h, c), softmax (inputs)."""
    layers = []
    for line in (SHARED / "darknet-summary" / "resnet18.txt").read_text().splitlines()[1:]:
        match = DARKNET_LINE.fullmatch(line)
        assert match, line
        _, kind, rest = match.groups()
        dims = [tuple(map(int, d)) for d in DIMS.findall(rest)]
        if kind == "conv":
            filters, size = map(int, re.match(r"(\d+)\s+(\d+) x", rest).groups())
            layers.append((kind, filters, size, *dims[0], *dims[1]))
        elif kind == "max":
            size = int(re.match(r"(\d+) x", rest).group(1))
            layers.append((kind, size, *dims[0], *dims[1]))
        elif kind == "res":
            layers.append((kind, *dims[0], *dims[1]))
        elif kind == "avg":
            layers.append((kind, *dims[0]))
        else:
            layers.append((kind, int(rest)))
    return layers


def test_resnet18_totals_follow_alexeyab_rules_but_it_aborts_before_them():
    layers = _resnet18_layers()
    assert len(layers) == 29
    bflops = np.float32(0)                          # `float bflops` in parse_network_cfg_custom
    counted = []                                    # l.outputs of layers with l.w, l.h > 1
    for kind, *v in layers:
        if kind == "conv":
            filters, size, w, h, c, ow, oh, oc = v
            bflops += np.float32(2.0 * c * filters * size * size * oh * ow / 1e9)
            wh, outputs = (w, h), ow * oh * oc
        elif kind == "max":
            size, w, h, c, ow, oh, oc = v
            bflops += np.float32(size * size * c * oh * ow / 1e9)
            wh, outputs = (w, h), ow * oh * oc
        elif kind == "res":
            _, _, _, ow, oh, oc = v                 # l.w, l.h: the previous layer's output
            bflops += np.float32(ow * oh * oc / 1e9)
            wh, outputs = (ow, oh), ow * oh * oc
        elif kind == "avg":
            w, h, c = v
            wh, outputs = (w, h), c
        else:                                       # softmax after the 1 x 1 conv: l.w = 1
            wh, outputs = (1, 1), v[0]
        if wh[0] > 1 and wh[1] > 1:
            counted.append(outputs)
    expected = ["Total BFLOPS %5.3f " % bflops, "avg_outputs = %d " % (sum(counted)
                                                                       // len(counted))]
    network = parse_network(SHARED / "darknet-cfg" / "resnet18.cfg")
    totals = alexeyab_totals(network)
    assert ["Total BFLOPS %5.3f " % totals[0], "avg_outputs = %d " % totals[1]] == expected
    assert len(counted) == 27            # all but the 1 x 1 conv and the softmax after it
    # AlexeyAB's Darknet never reaches them on resnet18: parse_shortcut asserts that the
    # `from` layer has the shortcut's width and height and aborts at the first one that has
    # not (as on its own resnet50.cfg: FAILED.txt of alexeyab-own). Before it, a shortcut
    # from a layer of other channels adds a line.
    first = next(index for index, (kind, *v) in enumerate(layers)
                 if kind == "res" and v[:2] != v[3:5])
    channels_only = sum(1 for kind, *v in layers[:first] if kind == "res" and v[:3] != v[3:])
    text, stop = alexeyab_table(network)
    lines = text.splitlines()
    assert lines[0] + "\n" == HEADER
    assert len(lines) == 1 + first + 1 + channels_only
    assert lines[-1].startswith("%4d Shortcut Layer: " % first)
    assert f"layer {first} [shortcut]" in str(stop)
