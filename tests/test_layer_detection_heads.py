"""[yolo], [region], [detection]: Darknet's detection heads, as parsed and tabulated.

Darknet's own tables of every stock detection cfg that has one (../shared/darknet-summary/),
byte for byte; the four stock detection cfgs without one, against tables rebuilt here from
Darknet's printf rules; each head's shape rule, options and defaults (pjreddie's
parse_yolo, parse_region, parse_detection in src/parser.c); every error of a bad section
through the CLI; the refusal of train, gradcheck and eval; the rich and JSON summaries of
yolov3.cfg against published totals; AlexeyAB's table lines. The heads have no parameters
and darkbp does not train them yet: the contract test checks the .weights round trip and the
refusal on tests/layer_cfgs/{yolo,region,detection}.cfg. Their forwards and boxes, against
Darknet's own inference, are tests/test_detect.py's.
"""

from __future__ import annotations

import json
import math
import re

import pytest
from click.testing import CliRunner

from darkbp.cli import main
from darkbp.layers.detection import DetectionLayer
from darkbp.layers.region import RegionLayer
from darkbp.layers.yolo import ALEXEYAB_OPTIONS, YoloLayer
from darkbp.network import parse_network
from darkbp.summary import darknet_text
from tests.conftest import SHARED, assert_cfg_error

STOCK = SHARED / "darknet-cfg"
TABLES = SHARED / "darknet-summary"
HEADS = ("[yolo]", "[region]", "[detection]")

# The stock cfgs with a detection head: Darknet's table is in ../shared/darknet-summary/ for
# the first nine; the last four must follow the same rules.
GOLDEN = ["yolo9000", "yolov1-tiny", "yolov2-tiny-voc", "yolov2-tiny", "yolov2",
          "yolov3-openimages", "yolov3-tiny", "yolov3-voc", "yolov3"]
NO_GOLDEN = ["yolov1", "yolov2-voc", "yolov3-spp", "t1.test"]


def _table(name: str) -> str:
    return darknet_text(parse_network(STOCK / f"{name}.cfg"))


def test_the_lists_hold_every_stock_cfg_with_a_head():
    with_head = {path.stem for path in STOCK.glob("*.cfg")
                 if any(line.strip() in HEADS for line in path.read_text().splitlines())}
    assert with_head == set(GOLDEN) | set(NO_GOLDEN)
    assert {path.stem for path in TABLES.glob("*.txt")} & set(NO_GOLDEN) == set()


@pytest.mark.parametrize("name", GOLDEN)
def test_stock_table_equals_darknets(name):
    assert _table(name) == (TABLES / f"{name}.txt").read_text()


@pytest.mark.parametrize("name", GOLDEN + NO_GOLDEN)
def test_stock_heads_use_only_options_darknet_reads(name):
    network = parse_network(STOCK / f"{name}.cfg")
    assert [w for w in network.warnings if w.message.startswith(HEADS)] == []


def test_each_heads_line_is_darknets():
    # Literal lines of Darknet's tables: ../shared/darknet-summary/yolov3-tiny.txt line 18,
    # yolov2-tiny.txt line 17 (a [region]: make_region_layer prints "detection") and
    # yolov1-tiny.txt line 17.
    assert _table("yolov3-tiny").splitlines()[17] == "   16 yolo"
    assert _table("yolov2-tiny").splitlines()[16] == "   15 detection"
    assert _table("yolov1-tiny").splitlines()[16] == "   15 Detection Layer"


# --- the stock cfgs without a golden table ------------------------------------------------
# Darknet's printf formats (pjreddie src/convolutional_layer.c, maxpool_layer.c,
# reorg_layer.c, local_layer.c, dropout_layer.c, connected_layer.c, detection_layer.c).
CONV = "conv  %5d %2d x%2d /%2d  %4d x%4d x%4d   ->  %4d x%4d x%4d  %5.3f BFLOPs"
MAX = "max          %d x %d / %d  %4d x%4d x%4d   ->  %4d x%4d x%4d"
REORG = "reorg              /%2d  %4d x%4d x%4d   ->  %4d x%4d x%4d"
LOCAL = "Local Layer: %d x %d x %d image, %d filters -> %d x %d x %d image"
DROPOUT = "dropout       p = %.2f               %4d  ->  %4d"
CONNECTED = "connected                            %4d  ->  %4d"


def conv_text(filters, size, stride, w, h, c, ow, oh):
    """Darknet's conv line; BFLOPs = 2·filters·size²·c·oh·ow / 1e9 (SPEC section 4)."""
    return CONV % (filters, size, size, stride, w, h, c, ow, oh, filters,
                   2 * filters * size * size * c * oh * ow / 1e9)


def chain_table(side, channels, layers):
    """Darknet's table of a chain of layers on a side x side x channels input, each given as
    transcribed by hand from its cfg: ("conv", filters, size, stride) and ("local", filters,
    size, stride) with pad=1, ("max", size, stride), ("dropout", p), ("connected", outputs),
    ("detection",). Shapes by Darknet's rules: conv padding size/2, maxpool padding size − 1,
    local with pad=1 (w − 1)/stride + 1."""
    w, c = side, channels
    lines = ["layer     filters    size              input                output"]
    for index, (kind, *args) in enumerate(layers):
        if kind == "conv":
            filters, size, stride = args
            ow = (w + 2 * (size // 2) - size) // stride + 1
            text, (w, c) = conv_text(filters, size, stride, w, w, c, ow, ow), (ow, filters)
        elif kind == "max":
            size, stride = args
            ow = (w + size - 1 - size) // stride + 1
            text, w = MAX % (size, size, stride, w, w, c, ow, ow, c), ow
        elif kind == "local":
            filters, size, stride = args
            ow = (w - 1) // stride + 1
            text, (w, c) = LOCAL % (w, w, c, filters, ow, ow, filters), (ow, filters)
        elif kind == "dropout":
            text = DROPOUT % (args[0], w * w * c, w * w * c)
        elif kind == "connected":
            text, (w, c) = CONNECTED % (w * w * c, args[0]), (1, args[0])
        else:
            text = "Detection Layer"
        lines.append("%5d " % index + text)
    return "\n".join(lines) + "\n"


def test_chain_table_gives_darknets_own_yolov1_tiny_table():
    # The rebuilding below, checked on a chain whose table Darknet printed.
    layers = [("conv", 16, 3, 1), ("max", 2, 2), ("conv", 32, 3, 1), ("max", 2, 2),
              ("conv", 64, 3, 1), ("max", 2, 2), ("conv", 128, 3, 1), ("max", 2, 2),
              ("conv", 256, 3, 1), ("max", 2, 2), ("conv", 512, 3, 1), ("max", 2, 2),
              ("conv", 1024, 3, 1), ("conv", 256, 3, 1), ("connected", 1470), ("detection",)]
    assert chain_table(448, 3, layers) == (TABLES / "yolov1-tiny.txt").read_text()


def test_yolov1_follows_darknets_rules():
    # No golden table: checked against Darknet's printf formats applied by hand to the cfg's
    # 32 sections (chain_table). The [detection] reads 7²·((1 + 4)·3 + 20) = 1715 inputs,
    # the [connected] before it outputs 1715.
    pair = [("conv", 256, 1, 1), ("conv", 512, 3, 1)]
    layers = [("conv", 64, 7, 2), ("max", 2, 2), ("conv", 192, 3, 1), ("max", 2, 2),
              ("conv", 128, 1, 1), ("conv", 256, 3, 1), ("conv", 256, 1, 1),
              ("conv", 512, 3, 1), ("max", 2, 2), *pair * 4, ("conv", 512, 1, 1),
              ("conv", 1024, 3, 1), ("max", 2, 2), *[("conv", 512, 1, 1),
                                                     ("conv", 1024, 3, 1)] * 2,
              ("conv", 1024, 3, 1), ("conv", 1024, 3, 2), ("conv", 1024, 3, 1),
              ("conv", 1024, 3, 1), ("local", 256, 3, 1), ("dropout", 0.5),
              ("connected", 1715), ("detection",)]
    assert _table("yolov1") == chain_table(448, 3, layers)


def test_t1_test_follows_darknets_rules():
    # No golden table: as yolov1, Darknet's printf formats applied by hand to its sections.
    layers = [("conv", 16, 3, 1), ("max", 2, 2), ("conv", 32, 3, 1), ("max", 2, 2),
              ("conv", 64, 3, 1), ("max", 2, 2), ("conv", 128, 3, 1), ("max", 2, 2),
              ("conv", 256, 3, 1), ("max", 2, 2), ("conv", 512, 3, 1), ("conv", 1024, 3, 1),
              ("conv", 1024, 3, 1), ("conv", 256, 3, 1), ("connected", 1470), ("detection",)]
    assert _table("t1.test") == chain_table(224, 3, layers)


def yolov2_table(side, last_filters):
    """Darknet's yolov2.txt (608 x 608, 80 classes) with every width and height times
    side/608, the last convolution's filters `last_filters` and each conv line's BFLOPs
    recomputed from its own numbers, reprinted with Darknet's formats; route and [region]
    lines unchanged."""
    lines = []
    for line in (TABLES / "yolov2.txt").read_text().splitlines():
        index, body = line[:6], line[6:]
        numbers = [int(v) for v in re.findall(r"\d+", body.split("BFLOPs")[0])]
        if body.startswith("conv"):
            filters, size, _, stride, w, h, c, ow, oh, _, _, _ = numbers   # BFLOPs: 2 ints
            if ow == 19 and filters == 425:
                filters = last_filters
            body = conv_text(filters, size, stride, w * side // 608, h * side // 608, c,
                             ow * side // 608, oh * side // 608)
        elif body.startswith(("max", "reorg")):
            *_, stride, w, h, c, ow, oh, oc = numbers          # max: size, size first
            scaled = (w * side // 608, h * side // 608, c, ow * side // 608,
                      oh * side // 608, oc)
            body = (MAX % (numbers[0], numbers[1], stride, *scaled) if body.startswith("max")
                    else REORG % (stride, *scaled))
        lines.append(index + body if line[:5].strip().isdigit() else line)
    return "\n".join(lines) + "\n"


def test_yolov2_voc_is_darknets_yolov2_at_416_with_20_classes():
    # No golden table: yolov2-voc.cfg is yolov2.cfg at 416 x 416 instead of 608 x 608 with
    # 20 classes instead of 80 (diff the two cfgs): its last convolution has 5·(20 + 5) = 125
    # filters, not 425. Every size of yolov2 is a multiple of 19, so times 416/608 = 13/19.
    # The reprinting, unscaled, gives back Darknet's yolov2.txt itself.
    assert yolov2_table(608, 425) == (TABLES / "yolov2.txt").read_text()
    assert _table("yolov2-voc") == yolov2_table(416, 125)


def test_yolov3_spp_is_darknets_yolov3_with_the_spp_block():
    # No golden table: yolov3-spp.cfg is yolov3.cfg with 7 sections inserted after layer 77
    # (diff the two cfgs). Their lines, written here by hand from Darknet's printf formats:
    # a maxpool of size 5, 9 or 13 and stride 1 keeps 19 x 19 (padding = size − 1:
    # (19 + size − 1 − size)/1 + 1), printed with "%d x %d / %d" (so 13 shifts the line);
    # "route" then " %d" per source (layers=-1,-3,-5,-6 from layer 83: 82 80 78 77); the
    # route's 4 x 512 channels into a 1 x 1 conv of 512: 2·512·2048·19·19/1e9 = 0.757
    # BFLOPs. Every later line is yolov3.txt's, its index and its route sources after 77
    # (79, 85, 91, 97; not 61 or 36) moved by 7.
    spp = ["   78 max          5 x 5 / 1    19 x  19 x 512   ->    19 x  19 x 512",
           "   79 route  77",
           "   80 max          9 x 9 / 1    19 x  19 x 512   ->    19 x  19 x 512",
           "   81 route  77",
           "   82 max          13 x 13 / 1    19 x  19 x 512   ->    19 x  19 x 512",
           "   83 route  82 80 78 77",
           "   84 conv    512  1 x 1 / 1    19 x  19 x2048   ->    19 x  19 x 512  0.757 BFLOPs"]
    yolov3 = (TABLES / "yolov3.txt").read_text().splitlines()
    head, tail = yolov3[:1 + 78], yolov3[1 + 78:]

    def moved(line):
        index, body = int(line[:5]), line[6:]
        if body.startswith("route"):
            sources = [int(v) for v in body.split()[1:]]
            body = "route " + "".join(" %d" % (s + 7 if s > 77 else s) for s in sources)
        return "%5d " % (index + 7) + body

    assert _table("yolov3-spp") == "\n".join(head + spp + [moved(line) for line in tail]) + "\n"


# --- shape rules, options, defaults ------------------------------------------------------

def _net(text, write_cfg):
    return parse_network(write_cfg(text))


def test_yolo_output_is_its_input_with_mask_times_classes_plus_5_channels(write_cfg):
    network = _net("""
        [net]
        width=13
        height=9
        channels=3
        [convolutional]
        filters=21
        size=1
        [yolo]
        mask=0,4,5
        num=6
        classes=2
    """, write_cfg)
    yolo = network.layers[1]
    assert yolo.in_shape == yolo.out_shape == (3 * (2 + 5), 9, 13)
    assert not yolo.flat and yolo.trainable and yolo.parameter_count() == 0
    assert yolo.mask == (0, 4, 5) and yolo.param_shapes() == {} and yolo.bflops == 0


def test_yolo_without_mask_uses_every_anchor(write_cfg):
    # parse_yolo: num = total without a mask, and make_yolo_layer's mask is 0..num-1.
    network = _net("[net]\nwidth=2\nheight=2\nchannels=12\n[yolo]\nnum=2\nclasses=1\n",
                   write_cfg)
    assert network.layers[0].mask == (0, 1)
    assert network.layers[0].out_shape == (2 * (1 + 5), 2, 2)


def test_yolo_reads_a_connected_output_as_1_x_1(write_cfg):
    # Darknet's [connected] is 1 x 1 x outputs: a [yolo] after it reads those as channels.
    network = _net("[net]\nwidth=2\nheight=2\nchannels=1\n[connected]\noutput=6\n"
                   "[yolo]\nclasses=1\n", write_cfg)
    assert network.layers[1].out_shape == (6, 1, 1)


def test_region_output_is_its_input_with_num_times_classes_coords_1(write_cfg):
    network = _net("[net]\nwidth=5\nheight=3\nchannels=16\n[region]\nnum=2\nclasses=3\n"
                   "coords=4\n", write_cfg)
    region = network.layers[0]
    assert region.in_shape == region.out_shape == (2 * (3 + 4 + 1), 3, 5)
    assert region.trainable and region.parameter_count() == 0


def test_detection_output_is_its_inputs_flat(write_cfg):
    # make_detection_layer: outputs = inputs = side²·((1 + coords)·num + classes), read flat
    # from an image too; Darknet leaves its out_w/out_h/out_c at 0: a vector.
    network = _net("[net]\nwidth=2\nheight=2\nchannels=13\n[detection]\nside=2\nnum=2\n"
                   "coords=4\nclasses=3\n", write_cfg)
    detection = network.layers[0]
    assert detection.in_shape == (13, 2, 2)
    assert detection.out_shape == (2 * 2 * ((1 + 4) * 2 + 3), 1, 1)
    assert detection.flat and detection.trainable and detection.parameter_count() == 0


# Every option pjreddie's parser reads for the section (src/parser.c parse_yolo,
# parse_region, parse_detection), with the default it gives when the cfg does not.
YOLO_DEFAULTS = {"classes": 20, "num": 1, "mask": [0], "anchors": [[0.5, 0.5]], "max": 90,
                 "jitter": 0.2, "ignore_thresh": 0.5, "truth_thresh": 1.0, "random": 0.0,
                 "map": None}
REGION_DEFAULTS = {"coords": 4, "classes": 20, "num": 1, "anchors": [[0.5, 0.5]], "log": 0,
                   "sqrt": 0, "softmax": 0, "background": 0, "max": 30, "jitter": 0.2,
                   "rescore": 0, "thresh": 0.5, "classfix": 0, "absolute": 0, "random": 0.0,
                   "coord_scale": 1.0, "object_scale": 1.0, "noobject_scale": 1.0,
                   "mask_scale": 1.0, "class_scale": 1.0, "bias_match": 0, "tree": None,
                   "map": None}
DETECTION_DEFAULTS = {"coords": 1, "classes": 1, "rescore": 0, "num": 1, "side": 7,
                      "softmax": 0, "sqrt": 0, "max": 90, "coord_scale": 1.0, "forced": 0,
                      "object_scale": 1.0, "noobject_scale": 1.0, "class_scale": 1.0,
                      "jitter": 0.2, "random": 0.0, "reorg": 0}


@pytest.mark.parametrize("cls, net, defaults", [
    (YoloLayer, "width=3\nheight=3\nchannels=25", YOLO_DEFAULTS),         # 1·(20 + 5)
    (RegionLayer, "width=3\nheight=3\nchannels=25", REGION_DEFAULTS),     # 1·(20 + 4 + 1)
    (DetectionLayer, "inputs=147", DETECTION_DEFAULTS),                  # 7²·((1 + 1)·1 + 1)
], ids=["yolo", "region", "detection"])
def test_options_and_defaults_are_darknets(write_cfg, cls, net, defaults):
    # [yolo] also reads AlexeyAB's options (tests/test_yolo_alexeyab.py); naming none of
    # them leaves pjreddie's head
    alexeyab = ALEXEYAB_OPTIONS if cls is YoloLayer else set()
    assert cls.options == set(defaults) | alexeyab
    network = _net(f"[net]\n{net}\n[{cls.sections[0]}]\n", write_cfg)
    assert network.layers[0].describe() == defaults


def test_every_option_is_read_without_a_warning(write_cfg):
    path = write_cfg("""
        [net]
        width=2
        height=2
        channels=14
        [yolo]
        mask=1,0
        anchors=10,13, 16,30
        classes=2
        num=2
        max=50
        jitter=.3
        ignore_thresh=.7
        truth_thresh=1
        random=1
        map=data/coco.map
        [region]
        anchors=1,2
        coords=4
        classes=9
        num=1
        log=1
        sqrt=1
        softmax=1
        background=1
        max=20
        jitter=.1
        rescore=1
        thresh=.6
        classfix=1
        absolute=1
        random=1
        coord_scale=2
        object_scale=5
        noobject_scale=.5
        mask_scale=2
        class_scale=3
        bias_match=1
        tree=data/9k.tree
        map=data/coco9k.map
        [detection]
        coords=4
        classes=4
        rescore=1
        num=2
        side=2
        softmax=1
        sqrt=1
        max=10
        coord_scale=5
        forced=1
        object_scale=2
        noobject_scale=.5
        class_scale=2
        jitter=.1
        random=1
        reorg=1
    """)
    network = parse_network(path)
    assert network.warnings == []
    yolo, region, detection = network.layers
    assert yolo.mask == (1, 0) and yolo.anchors == ((10, 13), (16, 30))
    assert yolo.describe()["map"] == "data/coco.map"
    assert region.describe()["tree"] == "data/9k.tree" and region.describe()["thresh"] == 0.6
    assert detection.describe()["forced"] == 1 and detection.out_shape == (2 * 2 * 14, 1, 1)


# --- errors --------------------------------------------------------------------------------
NET = "[net]\nwidth=4\nheight=4\nchannels=3\n"          # lines 1-4
CONV20 = "[convolutional]\nfilters=20\nsize=1\n"        # lines 5-7: layer 0, 4 x 4 x 20


@pytest.mark.parametrize("text, line, section, words", [
    # pjreddie's parse_yolo asserts l.outputs == params.inputs: the channel count
    (NET + CONV20 + "[yolo]\nmask=0,1,2\nnum=3\nclasses=2\n", 8, "yolo",
     "reads 3 anchors (mask=0,1,2) x (classes=2 + 5) = 21 channels, but layer 0 "
     "([convolutional]) gives 4 x 4 x 20: set filters=21 there"),
    (NET + "[yolo]\nclasses=2\n", 5, "yolo",
     "reads 1 anchor (mask=0) x (classes=2 + 5) = 7 channels, but the network input "
     "gives 4 x 4 x 3"),
    # a mask entry outside the anchors: Darknet reads past its biases
    (NET + CONV20 + "[yolo]\nmask=1,3\nnum=3\nclasses=5\n", 9, "yolo",
     "mask entry 3 is not one of the num=3 anchors (0 to 2): Darknet would read past its "
     "anchors"),
    (NET + CONV20 + "[yolo]\nnum=3\nmask=-1\nclasses=15\n", 10, "yolo",
     "mask entry -1 is not one of the num=3 anchors (0 to 2): Darknet would read past its "
     "anchors"),
    (NET + CONV20 + "[yolo]\nanchors=1,x\n", 9, "yolo",
     "'anchors' must be a comma-separated list of numbers, got '1,x'"),
    (NET + CONV20 + "[yolo]\nnum=0\n", 9, "yolo", "'num' must be at least 1, got 0"),
    (NET + CONV20 + "[yolo]\nclasses=-5\n", 9, "yolo", "'classes' must be at least 0, got -5"),
    (NET + CONV20 + "[yolo]\nmask=0,1\nnum=2\nclasses=5\njitter=much\n", 12, "yolo",
     "'jitter' must be a number, got 'much'"),
    # parse_region asserts the channel count too
    (NET + CONV20 + "[region]\nnum=5\nclasses=20\n", 8, "region",
     "reads num=5 x (classes=20 + coords=4 + 1) = 125 channels, but layer 0 "
     "([convolutional]) gives 4 x 4 x 20: set filters=125 there"),
    (NET + CONV20 + "[region]\nnum=2\nclasses=5\ncoords=-1\n", 11, "region",
     "'coords' must be at least 0, got -1"),
    # make_detection_layer asserts side²·((1 + coords)·num + classes) == inputs
    (NET + CONV20 + "[connected]\noutput=1460\n[detection]\nside=7\nnum=2\ncoords=4\n"
     "classes=20\n", 10, "detection",
     "reads side²·((1 + coords)·num + classes) = 7²·((1 + 4)·2 + 20) = 1470 "
     "inputs, but layer 1 ([connected]) gives 1460 (1 x 1 x 1460)"),
    (NET + "[detection]\nside=0\n", 6, "detection", "'side' must be at least 1, got 0"),
], ids=["yolo channels", "yolo on the input", "mask too large", "mask negative",
        "anchors not numbers", "num 0", "classes negative", "jitter not a number",
        "region channels", "region coords", "detection inputs", "detection side"])
def test_bad_head_is_a_clear_error(write_cfg, text, line, section, words):
    assert_cfg_error(write_cfg(text), line, section, words, match="equals")


def test_a_mask_beyond_num_reads_the_listed_anchors(write_cfg):
    # AlexeyAB's cspx-p7-mish.cfg: mask = 16,17,18,19, num=16 and 20 anchors listed. pjreddie's
    # Darknet wrote all 20 and reads the last 4 past its 16; darkbp uses them for the boxes.
    network = parse_network(write_cfg(NET + CONV20 + "[yolo]\nmask=1,2\nnum=2\n"
                                      "anchors=1,2,3,4,5,6\nclasses=5\n"))
    head = network.layers[1]
    assert head.anchors == ((1, 2), (3, 4), (5, 6))
    assert head._anchors().tolist() == [[3, 4], [5, 6]]
    assert [(w.line, w.message) for w in network.warnings if "mask" in w.message] == [(9, (
        "[yolo] mask entries 2 are beyond the num=2 anchors: Darknet reads them past its "
        "anchors (pjreddie's finds the cfg's values there, AlexeyAB's memory it never "
        "wrote); darkbp uses the cfg's anchors 2 to 2 for them, and only the first 2 for "
        "training's best anchor"))]


@pytest.mark.parametrize("text, anchors, warning", [
    # Both Darknets read the values into 2·num floats made 0.5 first: fewer leave 0.5
    # (AlexeyAB's cspx-p7-mish_hp.cfg: 31 for 16 anchors); of more (its cspx-p7-mish.cfg: 40),
    # AlexeyAB's reads 2·num and pjreddie's writes the rest past them.
    (NET + CONV20 + "[yolo]\nmask=0\nnum=2\nanchors=1,2,3,4,5,6\nclasses=15\n",
     ((1, 2), (3, 4)), "[yolo] anchors has 6 values, but num=2 anchors need 4, a width,height "
                       "pair each: darkbp reads the first 4 (AlexeyAB's Darknet reads no more, "
                       "pjreddie's writes the other 2 past its anchors)"),
    (NET + CONV20 + "[yolo]\nmask=0\nnum=2\nanchors=1,2,3\nclasses=15\n",
     ((1, 2), (3, 0.5)), "[yolo] anchors has 3 values, but num=2 anchors need 4, a "
                         "width,height pair each: the missing 1 are 0.5, as in Darknet"),
    (NET + CONV20 + "[region]\nnum=2\nclasses=5\nanchors=1,1,2\n",
     ((1, 1), (2, 0.5)), "[region] anchors has 3 values, but num=2 anchors need 4, a "
                         "width,height pair each: the missing 1 are 0.5, as in Darknet"),
], ids=["too many anchors", "too few anchors", "region anchors"])
def test_anchors_of_another_count_are_read_as_darknet_reads_them(write_cfg, text, anchors,
                                                                 warning):
    network = parse_network(write_cfg(text))
    assert network.layers[1].anchors == anchors
    assert [(w.line, w.message) for w in network.warnings if "anchors" in w.message] == [
        (11, warning)]


# --- what a user runs on yolov3.cfg ----------------------------------------------------------
YOLOV3 = STOCK / "yolov3.cfg"
# The line of yolov3.cfg's first [yolo], found in the file's text (layer 82).
FIRST_YOLO_LINE = YOLOV3.read_text().splitlines().index("[yolo]") + 1


def test_eval_refuses_yolov3_before_any_work(tmp_path):
    # The dataset named does not exist: were it read before the cfg is refused, that would
    # be the error. The weights file exists (empty: never read).
    weights = tmp_path / "yolov3.weights"
    weights.write_bytes(b"")
    result = CliRunner().invoke(main, ["eval", str(YOLOV3), str(weights), "--data",
                                       str(tmp_path / "no-such-dataset")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if ": warning: " not in line]
    assert len(errors) == 1
    assert errors[0].startswith(f"darkbp: error: {YOLOV3}:{FIRST_YOLO_LINE}: [yolo] ")
    assert "use darkbp detect (or darkbp map)" in errors[0]


def test_train_of_yolov3_wants_detection_data_before_any_work(tmp_path):
    result = CliRunner().invoke(main, ["train", str(YOLOV3), "--data", "mnist", "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if ": warning: " not in line]
    assert errors == ["darkbp: error: mnist: a detector trains on a Darknet .data file "
                      "(train=, valid=, names=) or on mnist-det"]
    assert not (tmp_path / "out").exists()


def test_summary_table_of_yolov3():
    result = CliRunner().invoke(main, ["summary", str(YOLOV3)])
    assert result.exit_code == 0, result.output
    rows = {cells[0]: cells for cells in
            ([cell.strip() for cell in line.split("│")[1:-1]]
             for line in result.stdout.splitlines() if line.startswith("│"))}
    assert rows["82"][1:4] == ["yolo", "", "mask 6,7,8"]
    assert rows["82"][5:7] == ["19 x 19 x 255", "19 x 19 x 255"]
    assert rows["106"][3] == "mask 0,1,2" and rows["106"][6] == "76 x 76 x 255"
    assert rows["82"][7:] == ["", ""]                   # no BFLOPs, no parameters


def test_summary_json_of_yolov3_has_the_heads_and_published_totals():
    result = CliRunner().invoke(main, ["summary", str(YOLOV3), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    heads = [row for row in data["layers"] if row["type"] == "yolo"]
    assert [row["index"] for row in heads] == [82, 94, 106]
    assert [row["line"] for row in heads][0] == FIRST_YOLO_LINE
    assert [row["output"] for row in heads] == [[19, 19, 255], [38, 38, 255], [76, 76, 255]]
    assert [row["mask"] for row in heads] == [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
    assert all(row["input"] == row["output"] and row["params"] == 0 and row["bflops"] == 0
               and row["classes"] == 80 and row["num"] == 9 for row in heads)
    assert heads[0]["anchors"][8] == [373, 326] and heads[0]["ignore_thresh"] == 0.7
    assert round(data["totals"]["bflops"], 2) == 140.69       # as published: see below


# Published by Darknet's author (pjreddie.com/darknet/yolo, the table of YOLOv3 on COCO; its
# YOLOv3-416 row, 65.86 Bn, is quoted in pjreddie/darknet#1039): YOLOv3-608 140.69 Bn FLOPs,
# YOLOv3-spp (608) 141.45 Bn, YOLOv3-tiny (416) 5.56 Bn. yolov3-spp has no golden table.
@pytest.mark.parametrize("name, published", [("yolov3", 140.69), ("yolov3-spp", 141.45),
                                             ("yolov3-tiny", 5.56)])
def test_total_bflops_are_the_published_ones(name, published):
    network = parse_network(STOCK / f"{name}.cfg")
    assert round(sum(layer.bflops for layer in network.layers), 2) == published


@pytest.mark.parametrize("name, header, published", [("yolov3", 20, 248_007_048),
                                                     ("yolov2", 16, 203_934_260)])
def test_weights_file_sizes_are_the_published_ones(name, header, published):
    # yolov3.weights is 248,007,048 bytes, yolov2.weights 203,934,260 (AlexeyAB/darknet#1910):
    # a header (20 bytes for a major 0 minor 2 file, whose `seen` is 64-bit; 16 for minor 1),
    # then 4 bytes per value of every layer's arrays in file order (the heads hold none).
    network = parse_network(STOCK / f"{name}.cfg")
    values = sum(math.prod(layer.param_shapes()[array]) for layer in network.layers
                 for array in layer.weights_order())
    assert header + 4 * values == published


# --- AlexeyAB's table -----------------------------------------------------------------------
# AlexeyAB/darknet: make_yolo_layer prints "yolo\n"; parse_yolo then prints
#   "[yolo] params: iou loss: %s (%d), iou_norm: %2.2f, obj_norm: %2.2f, cls_norm: %2.2f,
#    delta_norm: %2.2f, scale_x_y: %2.2f\n"
# with the iou_loss text, its IOU_LOSS enum value (IOU 0, GIOU 1, MSE 2, DIOU 3, CIOU 4;
# a name it does not know is IOU) and the float settings, defaults mse, 0.75, 1, 1, 1, 1.
# make_region_layer prints "detection\n", make_detection_layer "Detection Layer\n".

def test_alexeyab_yolo_line_with_defaults():
    yolo = parse_network(YOLOV3).layers[82]
    assert yolo.alexeyab_line() == (
        "yolo\n[yolo] params: iou loss: mse (2), iou_norm: 0.75, obj_norm: 1.00, "
        "cls_norm: 1.00, delta_norm: 1.00, scale_x_y: 1.00\n")


def test_alexeyab_yolo_line_with_yolov4s_settings(write_cfg):
    # YOLOv4's settings: ciou is 4; 0.075 is a C float (0.07500000298...), so "%2.2f" gives
    # 0.08 where a double would give 0.07; "giou" is 1, an unknown name 0.
    def line(options):
        path = write_cfg(f"[net]\nwidth=2\nheight=2\nchannels=25\n[yolo]\n{options}\n")
        return parse_network(path).layers[0].alexeyab_line()

    assert line("iou_loss=ciou\niou_normalizer=0.07\ncls_normalizer=1.0\nscale_x_y=1.2") == (
        "yolo\n[yolo] params: iou loss: ciou (4), iou_norm: 0.07, obj_norm: 1.00, "
        "cls_norm: 1.00, delta_norm: 1.00, scale_x_y: 1.20\n")
    assert line("iou_loss=giou\niou_normalizer=0.075\nobj_normalizer=4\n"
                "delta_normalizer=0.5") == (
        "yolo\n[yolo] params: iou loss: giou (1), iou_norm: 0.08, obj_norm: 4.00, "
        "cls_norm: 1.00, delta_norm: 0.50, scale_x_y: 1.00\n")
    assert "iou loss: l1 (0)," in line("iou_loss=l1")


def test_alexeyab_region_and_detection_lines():
    assert parse_network(STOCK / "yolov2.cfg").layers[-1].alexeyab_line() == "detection\n"
    detection = parse_network(STOCK / "yolov1.cfg").layers[-1]
    assert detection.alexeyab_line() == "Detection Layer\n"
    # AlexeyAB's avg_outputs counts the layers whose l.w and l.h exceed 1: its
    # make_detection_layer sets both to side (7 here), though its input is a [connected]'s.
    assert detection.in_shape == (1715, 1, 1) and detection.alexeyab_size([]) == (7, 7)
