"""[Gaussian_yolo], [crnn], [lstm], [conv_lstm] and [contrastive]: sections of AlexeyAB's cfg
zoo darkbp parses and tabulates but does not run.

Their AlexeyAB table lines are checked against AlexeyAB's own output where its zoo has one
(tests/test_summary_alexeyab_zoo.py: Gaussian_yolov3_BDD, crnn.train and lstm.train), and
here by hand from the printf formats of AlexeyAB/darknet src/parser.c and its
make_<name>_layer; parameter counts and `.weights` orders from its make_*_layer and
save_weights_upto (and pjreddie's, where the forks differ), written from their source, not
from darkbp's. Training, gradcheck and eval refuse them (tests/test_layer_contract.py).
"""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from darkbp.cli import main
from darkbp.errors import DarkbpError
from darkbp.network import parse_network
from darkbp.summary import alexeyab_text, darknet_text, summary_data
from darkbp.weights import load_weights
from tests.conftest import ROOT, assert_cfg_error
from tests.test_layer_recurrent import _cell as _connected  # save_connected_weights

LAYER_CFGS = ROOT / "tests" / "layer_cfgs"
HEADER = "   layer   filters  size/strd(dil)      input                output\n"


def _cells(prefix: str, lines: list[str]) -> str:
    return "".join(prefix + line for line in lines)


# ------------------------------------------------------------------ AlexeyAB's lines by hand

def test_conv_lstm_line_cells_and_bflops(write_cfg):
    # make_conv_lstm_layer: "CONV_LSTM Layer: %d x %d x %d image, %d filters\n" (h, w, c),
    # then each convolution's line, uf ui ug uo on the input, wf wi wg wo on the state.
    # BFLOPs: u* 2·16·32·9·64·64 = 37748736 (0.038), w* 2·32·32·9·64·64 = 75497472 (0.075),
    # plus 9 per output value, 9·64·64·32 = 1179648: 454164480 -> 0.454.
    # avg_outputs: l.w = l.h = 64: 64·64·32 = 131072.
    path = write_cfg("""
        [net]
        width=64
        height=64
        channels=16
        [conv_lstm]
        size=3
        pad=1
        output=32
    """)
    u = "conv     32       3 x 3/ 1     64 x  64 x  16 ->   64 x  64 x  32 0.038 BF\n"
    w = "conv     32       3 x 3/ 1     64 x  64 x  32 ->   64 x  64 x  32 0.075 BF\n"
    assert alexeyab_text(parse_network(path)) == (
        HEADER + "   0 CONV_LSTM Layer: 64 x 64 x 16 image, 32 filters\n" + u * 4 + w * 4
        + "Total BFLOPS 0.454 \n" + "avg_outputs = 131072 \n")


def test_conv_lstm_peephole_and_bottleneck(write_cfg):
    # bottleneck=1: one wf on state and input together (2·8 channels); peephole=1: vf, vi, vo
    # on the cell. BFLOPs: u* 2·4·8·9·32·32 = 589824, wf 2·16·8·9·1024 = 2359296, v*
    # 2·8·8·9·1024 = 1179648, and 12 per output value: 12·8192 = 98304;
    # 4·589824 + 2359296 + 3·1179648 + 98304 = 8355840 -> 0.008.
    path = write_cfg("""
        [net]
        width=32
        height=32
        channels=4
        [conv_lstm]
        size=3
        pad=1
        output=8
        peephole=1
        bottleneck=1
    """)
    u = "conv      8       3 x 3/ 1     32 x  32 x   4 ->   32 x  32 x   8 0.001 BF\n"
    wf = "conv      8       3 x 3/ 1     32 x  32 x  16 ->   32 x  32 x   8 0.002 BF\n"
    v = "conv      8       3 x 3/ 1     32 x  32 x   8 ->   32 x  32 x   8 0.001 BF\n"
    assert alexeyab_text(parse_network(path)) == (
        HEADER + "   0 CONV_LSTM Layer: 32 x 32 x 4 image, 8 filters\n" + u * 4 + wf + v * 3
        + "Total BFLOPS 0.008 \n" + "avg_outputs = 8192 \n")


def test_contrastive_line():
    # make_contrastive_layer "contrastive %4d x%4d x%4d x emb_size %4d x batch: %4d  classes
    # = %4d, step = %4zu \n" (w, h, the [yolo]'s anchors n, inputs/(n·h·w), batch 1, the
    # [yolo]'s classes, batch·n·h·w), then "detection \n": the 4 x 4 x 16 input over 2
    # anchors is 8 values per anchor and cell; the head's classes (2) replace classes=1.
    lines = alexeyab_text(parse_network(LAYER_CFGS / "contrastive.cfg")).splitlines(True)
    assert lines[-4:-2] == [
        "   4 contrastive    4 x   4 x   2 x emb_size    8 x batch:    1  classes =    2, "
        "step =   32 \n", "detection \n"]


def test_crnn_line_with_groups():
    # make_crnn_layer "CRNN Layer: %d x %d x %d image, %d filters\n", then its input
    # (4 -> hidden 4), self (4 -> 4) and output (4 -> 6) convolutions, grouped ("%5d/%4d ").
    lines = alexeyab_text(parse_network(LAYER_CFGS / "crnn.cfg")).splitlines(True)
    assert lines[1:5] == [
        "   0 CRNN Layer: 6 x 6 x 4 image, 6 filters\n",
        "conv      4/   2  3 x 3/ 1      6 x   6 x   4 ->    6 x   6 x   4 0.000 BF\n",
        "conv      4/   2  3 x 3/ 1      6 x   6 x   4 ->    6 x   6 x   4 0.000 BF\n",
        "conv      6/   2  3 x 3/ 1      6 x   6 x   4 ->    6 x   6 x   6 0.000 BF\n"]


def test_gaussian_yolo_line_prints_its_settings(write_cfg):
    # parse_gaussian_yolo: "[Gaussian_yolo] iou loss: %s (%d), iou_norm: %2.2f, obj_norm:
    # %2.2f, cls_norm: %2.2f, delta_norm: %2.2f, scale: %2.2f, point: %d\n"; IOU_LOSS
    # ciou = 4, an unknown name IOU = 0; YOLO_POINT left_top = 2, center = 1.
    base = "[net]\nwidth=4\nheight=4\nchannels=10\n[Gaussian_yolo]\nclasses=1\n"
    first = parse_network(write_cfg(base + "iou_loss=ciou\nobj_normalizer=0.125\n"
                                           "scale_x_y=1.05\nyolo_point=left_top\n"))
    assert alexeyab_text(first).splitlines()[1] == (
        "   0 [Gaussian_yolo] iou loss: ciou (4), iou_norm: 0.75, obj_norm: 0.12, cls_norm: "
        "1.00, delta_norm: 1.00, scale: 1.05, point: 2")
    second = parse_network(write_cfg(base + "iou_loss=l2\n", "other.cfg"))
    assert alexeyab_text(second).splitlines()[1] == (
        "   0 [Gaussian_yolo] iou loss: l2 (0), iou_norm: 0.75, obj_norm: 1.00, cls_norm: "
        "1.00, delta_norm: 1.00, scale: 1.00, point: 1")


def test_lstm_lines_are_the_same_in_both_forks():
    # Both make_lstm_layer print "LSTM Layer: %d inputs, %d outputs\n" and, after "\t\t",
    # make_connected_layer's line for uf, ui, ug, uo (inputs -> output), wf, wi, wg, wo.
    network = parse_network(LAYER_CFGS / "lstm.cfg")
    cells = (["connected                               5  ->     4\n"] * 4
             + ["connected                               4  ->     4\n"] * 4)
    first = "LSTM Layer: 5 inputs, 4 outputs\n" + _cells("\t\t", cells)
    assert network.layers[0].darknet_line() == first
    assert network.layers[0].alexeyab_line() == first
    assert darknet_text(network).splitlines(True)[1] == "    0 " + first.splitlines(True)[0]


# ------------------------------------------------------------------ pjreddie's table refuses

@pytest.mark.parametrize("name, section, line, words", [
    ("Gaussian_yolo", "Gaussian_yolo", 17, "pjreddie's Darknet has no [Gaussian_yolo] layer"),
    ("crnn", "crnn", 10, "pjreddie's [crnn] reads other options (output_filters, "
                         "hidden_filters, always 3 x 3 convolutions)"),
    ("conv_lstm", "conv_lstm", 10, "pjreddie's Darknet has no [conv_lstm] layer"),
    ("contrastive", "contrastive", 30, "pjreddie's Darknet has no [contrastive] layer"),
])
def test_pjreddies_table_is_refused_with_the_line(name, section, line, words):
    path = LAYER_CFGS / f"{name}.cfg"
    with pytest.raises(DarkbpError, match=re.escape(words)) as caught:
        darknet_text(parse_network(path))
    assert (caught.value.file, caught.value.line, caught.value.section) == (str(path), line,
                                                                            section)
    result = CliRunner().invoke(main, ["summary", str(path), "--format", "darknet"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert f"{path}:{line}: [{section}]: darkbp cannot print pjreddie's table" in result.stderr


# ------------------------------------------------------------------ parameters and .weights

@pytest.mark.parametrize("name, params", [
    # [lstm] bn 5 -> 4: u* 4·(20 + 4 + 4), w* 4·(16 + 4 + 4) = 208; 4 -> 3: 4·(12 + 3),
    # 4·(9 + 3) = 108; connected 3·3 + 3 = 12.
    ("lstm", [208, 108, 12, 0]),
    # [crnn] bn, groups 2, 3 x 3: input 4·2·9 + 4 + 4, self the same, output 6·2·9 + 6 + 6
    # = 280; connected 216·5 + 5; [crnn] 1 x 1 on 5: 2·5 + 2, 2·2 + 2, 3·2 + 3 = 27; 3·3 + 3.
    ("crnn", [280, 1085, 27, 12, 0]),
    # [conv_lstm] bn, 3 x 3, 3 -> 4: u* 4·(4·3·9 + 4 + 4), w* 4·(4·4·9 + 4 + 4) = 1072;
    # 4 -> 2 with bottleneck and peephole: u* 4·(2·4·9 + 2), wf 2·4·9 + 2, v* 3·(2·2·9 + 2)
    # = 484.
    ("conv_lstm", [1072, 484]),
    ("Gaussian_yolo", [22 * 3 * 9 + 22, 0]),
    ("contrastive", [14 * 3 * 9 + 14, 0, 0, 16 * 14 + 16, 0]),
])
def test_parameter_counts_worked_out_by_hand(name, params):
    data = summary_data(parse_network(LAYER_CFGS / f"{name}.cfg"))
    assert [row["params"] for row in data["layers"]] == params


def _header() -> bytes:
    return struct.pack("<iiiQ", 0, 2, 0, 0)


def _conv(layer, name, filters, per_filter, bn):
    """save_convolutional_weights: biases, [scales, rolling_mean, rolling_variance], weights."""
    arrays = [(layer, f"{name}_biases", (filters,))]
    if bn:
        arrays += [(layer, f"{name}_{array}", (filters,))
                   for array in ("scales", "rolling_mean", "rolling_variance")]
    return arrays + [(layer, f"{name}_weights", (filters, *per_filter))]


# The arrays in file order, from save_weights_upto: [lstm] in pjreddie's order (wi wf wo wg
# ui uf uo ug; AlexeyAB's is wf wi wg wo uf ui ug uo), [crnn] input, self, output, and
# [conv_lstm] (AlexeyAB's) vf vi vo (peephole), wf, wi wg wo (no bottleneck), uf ui ug uo.
FILE_ORDER = {
    "lstm": [*[a for g in ("wi", "wf", "wo", "wg") for a in _connected(0, g, 4, 4, True)],
             *[a for g in ("ui", "uf", "uo", "ug") for a in _connected(0, g, 5, 4, True)],
             *[a for g in ("wi", "wf", "wo", "wg") for a in _connected(1, g, 3, 3, False)],
             *[a for g in ("ui", "uf", "uo", "ug") for a in _connected(1, g, 4, 3, False)],
             (2, "biases", (3,)), (2, "weights", (3, 3))],
    "crnn": [*_conv(0, "input", 4, (2, 3, 3), True), *_conv(0, "self", 4, (2, 3, 3), True),
             *_conv(0, "output", 6, (2, 3, 3), True),
             (1, "biases", (5,)), (1, "weights", (5, 216)),
             *_conv(2, "input", 2, (5, 1, 1), False), *_conv(2, "self", 2, (2, 1, 1), False),
             *_conv(2, "output", 3, (2, 1, 1), False),
             (3, "biases", (3,)), (3, "weights", (3, 3))],
    "conv_lstm": [*[a for g in ("wf", "wi", "wg", "wo") for a in _conv(0, g, 4, (4, 3, 3), True)],
                  *[a for g in ("uf", "ui", "ug", "uo") for a in _conv(0, g, 4, (3, 3, 3), True)],
                  *[a for g in ("vf", "vi", "vo") for a in _conv(1, g, 2, (2, 3, 3), False)],
                  *_conv(1, "wf", 2, (4, 3, 3), False),
                  *[a for g in ("uf", "ui", "ug", "uo") for a in _conv(1, g, 2, (4, 3, 3), False)]],
}


@pytest.mark.parametrize("name", sorted(FILE_ORDER))
def test_every_array_reads_its_place_in_the_file(tmp_path, name):
    order = FILE_ORDER[name]
    floats = sum(int(np.prod(shape)) for _, _, shape in order)
    values = np.arange(floats, dtype="<f4")
    path = tmp_path / "net.weights"
    path.write_bytes(_header() + values.tobytes())
    network = parse_network(LAYER_CFGS / f"{name}.cfg").initialize(0, np.float32)
    load_weights(path, network.layers)
    start = 0
    for index, array, shape in order:
        size = int(np.prod(shape))
        np.testing.assert_array_equal(getattr(network.layers[index], array),
                                      values[start:start + size].reshape(shape),
                                      err_msg=f"layer {index} {array}")
        start += size
    path.write_bytes(_header() + values[:-1].tobytes())
    with pytest.raises(DarkbpError, match=f"expected {floats} floats"):
        load_weights(path, network.layers)


# ------------------------------------------------------------------ bad sections

NET = "[net]\nwidth=8\nheight=8\nchannels=4\n"


@pytest.mark.parametrize("body, line, section, words", [
    ("[crnn]\noutput_filters=4\n", 6, "crnn", "'output_filters' is pjreddie's [crnn]"),
    ("[crnn]\nsize=3\nstride=2\npad=1\n", 5, "crnn", "its convolutions make a 4 x 4 state "
                                                     "from the 8 x 8 input"),
    ("[crnn]\ndilation=2\n", 6, "crnn", "dilation=1 only"),
    ("[crnn]\ngroups=3\n", 6, "crnn", "groups=3 does not divide"),
    ("[conv_lstm]\nsize=9\n", 5, "conv_lstm", "does not fit the 8 x 8 input"),
    ("[Gaussian_yolo]\nclasses=2\nnum=2\n", 5, "Gaussian_yolo",
     "reads 2 anchor(s) (mask=0,1) x (classes=2 + 4 means + 4 uncertainties + 1 objectness) "
     "= 22 channels, but the network input gives 8 x 8 x 4"),
    ("[Gaussian_yolo]\nmask=0,3\nnum=3\n", 6, "Gaussian_yolo",
     "mask entry 3 is not one of the num=3 anchors"),
    ("[conv]\nfilters=4\n[contrastive]\n", 7, "contrastive", "needs yolo_layer="),
    ("[conv]\nfilters=4\n[contrastive]\nyolo_layer=-1\n", 8, "contrastive",
     "yolo_layer=-1 is layer 0 ([conv]), not a [yolo] head"),
    ("[conv]\nfilters=4\n[contrastive]\nyolo_layer=3\n", 8, "contrastive",
     "yolo_layer=3 is layer 3, after this one (layer 1)"),
])
def test_bad_sections_are_one_clear_error(write_cfg, body, line, section, words):
    assert_cfg_error(write_cfg(NET + body), line, section, words)


def test_gaussian_yolo_is_only_alexeyabs_spelling(write_cfg):
    # AlexeyAB's string_to_layer_type compares "[Gaussian_yolo]" exactly.
    path = write_cfg(NET + "[gaussian_yolo]\n")
    with pytest.raises(DarkbpError, match=r"unknown section \[gaussian_yolo\].*did you mean "
                                          r"\[Gaussian_yolo\]"):
        parse_network(path)
