"""[route] (darkbp/layers/route.py) against things darkbp did not write.

The kernel against the loop reference tests/naive_layers.py (transcribed from Darknet's
route_layer.c, AlexeyAB's for groups/group_id) on many shapes and layouts; a graph with
outputs read by two and three layers against its torch float64 twin; the table lines
against Darknet's printouts; every layer's output from Darknet's init.weights against
Darknet's own numbers (../shared/darknet-golden/route/: Darknet is right there, darkbp must
match; the whole run is in tests/test_golden.py); every bad `layers`, `groups`, `group_id`
through the CLI. tests/layer_cfgs/route.cfg runs the layer contract (gradcheck, split
passes, .weights).
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from darkbp.cfg import read_cfg_text
from darkbp.errors import DarkbpError
from darkbp.layers.route import RouteLayer
from darkbp.network import build_network, parse_network
from darkbp.ops.layout import as_nchw, layout_of
from darkbp.passes import EVAL, Pass
from darkbp.summary import darknet_text
from tests import naive_layers as nl
from tests.conftest import (SHARED, assert_cfg_error, assert_equals_torch_twin,
                            count_fuzz_builds, torch_twin)
from tests.golden import Golden, relative
from tests.test_golden import FORWARD_TOL


# (per-image shapes of the inputs, groups, group_id)
CASES = [
    ([(3, 4, 5)], 1, 0),
    ([(3, 4, 5), (2, 4, 5)], 1, 0),
    ([(1, 2, 2), (4, 2, 2), (2, 2, 2), (1, 2, 2)], 1, 0),
    ([(4, 3, 3), (2, 3, 3)], 2, 0),
    ([(4, 3, 3), (2, 3, 3)], 2, 1),
    ([(6, 2, 5), (3, 2, 5), (9, 2, 5)], 3, 2),
    ([(8, 4, 4)], 4, 3),                       # one input: YOLOv4-tiny's split
    ([(5, 1, 1), (7, 1, 1)], 1, 0),            # vectors
]


def _ids(case):
    shapes, groups, group_id = case
    _, h, w = shapes[0]
    return "+".join(str(s[0]) for s in shapes) + f"x{h}x{w}g{group_id}of{groups}"


def _stored(x, layout):
    if layout == "NCHW":
        return np.ascontiguousarray(x)
    return as_nchw(np.ascontiguousarray(x.transpose(1, 2, 3, 0)), "CHWN")


def _layer(shapes, groups=1, group_id=0, flat=False):
    return RouteLayer(shapes, tuple(range(len(shapes))), groups, group_id, flat)


# --- the kernel against the loop reference ----------------------------------------------------

@pytest.mark.parametrize("layouts", ["NCHW", "CHWN", "mixed"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_forward_and_backward_equal_the_loop_reference(case, layouts):
    shapes, groups, group_id = case
    rng = np.random.default_rng(len(shapes) * 10 + groups)
    n = 3
    order = itertools.cycle(["CHWN", "NCHW"] if layouts == "mixed" else [layouts])
    xs = [_stored(rng.standard_normal((n,) + shape), next(order)) for shape in shapes]
    copies = [x.copy() for x in xs]
    layer = _layer(shapes, groups, group_id)

    y = layer.forward(xs, Pass.training())
    np.testing.assert_array_equal(y, nl.route_forward(xs, groups, group_id))
    assert y.shape == (n,) + layer.out_shape
    np.testing.assert_array_equal(layer.forward(xs, EVAL), y)
    for x, copy in zip(xs, copies):
        assert not np.shares_memory(y, x)
        np.testing.assert_array_equal(x, copy)
    if layouts == "CHWN" and n > 1:
        assert layout_of(y) == "CHWN"          # concatenated as the inputs are stored

    dy = _stored(rng.standard_normal(y.shape), layouts if layouts != "mixed" else "NCHW")
    dxs = layer.backward(dy.copy())
    for dx, want in zip(dxs, nl.route_backward([(n,) + s for s in shapes], dy, groups, group_id),
                        strict=True):
        np.testing.assert_array_equal(dx, want)
    for a, b in itertools.combinations(dxs, 2):
        assert not np.shares_memory(a, b)


def test_shape_and_flatness():
    assert _layer([(3, 4, 5), (2, 4, 5)]).out_shape == (5, 4, 5)
    assert _layer([(4, 3, 3), (2, 3, 3)], 2, 1).out_shape == (3, 3, 3)
    assert _layer([(3, 4, 5), (2, 4, 5)]).inputs == 100       # Darknet: inputs = outputs


# --- a graph against its torch twin -------------------------------------------------------------

GRAPH = """
[net]
batch=4
width=6
height=6
channels=2

# 0: read by layer 1 and twice by the route 2, and by the route 4
[convolutional]
filters=4
size=3
pad=1
activation=leaky

[convolutional]
filters=3
size=3
pad=1
activation=tanh

# 2: 3 + 4 + 4 channels
[route]
layers=-1,-2,0

[convolutional]
filters=4
size=1
activation=leaky

# 4: the second halves of layers 3 and 0
[route]
layers=-1,0
groups=2
group_id=1

[convolutional]
filters=2
size=3
stride=2
pad=1
activation=leaky

# 6
[connected]
output=4
activation=logistic

# 7
[connected]
output=3
activation=linear

# 8: two vectors
[route]
layers=-1,-2

[softmax]
"""


def test_a_graph_of_routes_equals_its_torch_twin(write_cfg):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    network = parse_network(write_cfg(GRAPH)).initialize(1, np.float64)
    x, tx, params = torch_twin(network, np.random.default_rng(8), (4, 2, 6, 6))
    truth = np.eye(7)[[0, 6, 2, 3]]

    def conv(i, a, stride=1, padding=1):
        return F.conv2d(a, params[(i, "weights")], params[(i, "biases")], stride=stride,
                        padding=padding)

    def connected(i, a):
        return F.linear(a.reshape(4, -1), params[(i, "weights")], params[(i, "biases")])

    y0 = F.leaky_relu(conv(0, tx), 0.1)
    y1 = torch.tanh(conv(1, y0))
    y2 = torch.cat([y1, y0, y0], dim=1)
    y3 = F.leaky_relu(conv(3, y2, padding=0), 0.1)
    y4 = torch.cat([y3[:, 2:4], y0[:, 2:4]], dim=1)
    y5 = F.leaky_relu(conv(5, y4, stride=2), 0.1)
    y6 = torch.sigmoid(connected(6, y5))
    y7 = connected(7, y6)
    logits = torch.cat([y7, y6], dim=1)
    assert_equals_torch_twin(network, x, truth, tx, params, logits)


# --- Darknet's table ----------------------------------------------------------------------------

# Copied from ../shared/darknet-golden/route/summary.txt (Darknet's printout of route.cfg).
GOLDEN_TABLE = """\
layer     filters    size              input                output
    0 conv      8  3 x 3 / 2    28 x  28 x   1   ->    14 x  14 x   8  0.000 BFLOPs
    1 conv      8  3 x 3 / 1    14 x  14 x   8   ->    14 x  14 x   8  0.000 BFLOPs
    2 route  0
    3 conv      4  3 x 3 / 1    14 x  14 x   8   ->    14 x  14 x   4  0.000 BFLOPs
    4 route  3 1
    5 conv     16  3 x 3 / 2    14 x  14 x  12   ->     7 x   7 x  16  0.000 BFLOPs
    6 connected                             784  ->    10
    7 softmax                                          10
"""

# Copied from ../shared/darknet-summary/yolov3.txt: each route and the layer reading it.
YOLOV3_ROUTE_LINES = """\
   83 route  79
   84 conv    256  1 x 1 / 1    19 x  19 x 512   ->    19 x  19 x 256  0.095 BFLOPs
   86 route  85 61
   87 conv    256  1 x 1 / 1    38 x  38 x 768   ->    38 x  38 x 256  0.568 BFLOPs
   95 route  91
   96 conv    128  1 x 1 / 1    38 x  38 x 256   ->    38 x  38 x 128  0.095 BFLOPs
   98 route  97 36
   99 conv    128  1 x 1 / 1    76 x  76 x 384   ->    76 x  76 x 128  0.568 BFLOPs
"""


def test_the_golden_cfgs_table_equals_darknets():
    assert darknet_text(parse_network(Golden("route").cfg)) == GOLDEN_TABLE


def test_yolov3s_routes_equal_darknets():
    # Without a [yolo] layer type in darkbp, each [yolo] section becomes a [route] of the layer
    # before it: the same layer count and the same shape (a [yolo]'s output is its input's).
    sections = re.split(r"(?m)^(?=\[)", (SHARED / "darknet-cfg" / "yolov3.cfg").read_text())
    text = "".join("[route]\nlayers=-1\n\n" if section.startswith("[yolo]") else section
                   for section in sections)
    lines = darknet_text(build_network(read_cfg_text(text, "yolov3"), "yolov3")).splitlines()
    after_route = [line for before, line in zip(lines, lines[1:]) if " route " in before]
    ours = [line for line in lines if re.match(r" *(83|86|95|98) ", line)
            or line in after_route and re.match(r" *(84|87|96|99) ", line)]
    assert ours == YOLOV3_ROUTE_LINES.splitlines()


# --- Darknet's own numbers ------------------------------------------------------------------------
# The run (forward, losses, weights, .weights files) is tests/test_golden.py's; here the output
# of every layer, each route's among them.

def test_every_layers_output_equals_darknets():
    fixture = Golden("route")
    outputs = fixture.network().run(fixture.input, keep=True)
    for index, output in enumerate(outputs):
        assert relative(output.reshape(fixture.batch, -1),
                        fixture.layer_output("forward", index)) < FORWARD_TOL, index


# --- bad input -----------------------------------------------------------------------------------

NET = "[net]\nwidth=8\nheight=8\nchannels=1\n"
CONV = "[convolutional]\nfilters=2\nsize=3\npad=1\n"                    # 4 lines
HALF = "[convolutional]\nfilters=4\nsize=3\nstride=2\npad=1\n"          # 5 lines: 4 x 4 x 4

# (name, cfg text, line of the error, words the message must contain)
BAD = [
    ("no layers", NET + CONV + "[route]\ngroups=1\n", 9, "[route] needs 'layers'"),
    ("itself", NET + CONV + "[route]\nlayers=1\n", 10,
     "'layers' entry 1 is this layer itself (layer 1)"),
    ("later", NET + CONV + "[route]\nlayers=-1,4\n", 10,
     "'layers' entry 4 is layer 4, after this one (layer 1)"),
    ("before the first", NET + CONV + CONV + "[route]\nlayers=-1,-7\n", 14,
     "'layers' entry -7 points before the first layer (2 - 7 = -5)"),
    ("the net input", NET + CONV + "[route]\nlayers=-2\n", 10,
     "'layers' entry -2 points before the first layer (1 - 2 = -1)"),
    ("first layer", NET + "[route]\nlayers=-1\n", 6,
     "'layers' entry -1 points before the first layer (0 - 1 = -1)"),
    ("not a number", NET + CONV + "[route]\nlayers=a\n", 10,
     "'layers' must be a comma-separated list of whole numbers, got 'a'"),
    ("empty entry", NET + CONV + CONV + "[route]\nlayers=1,,0\n", 14,
     "'layers' must be a comma-separated list of whole numbers, got '1,,0'"),
    ("different sizes", NET + CONV + HALF + "[route]\nlayers=-1,-2\n", 15,
     "[route] inputs differ in width x height: layer 1 is 4 x 4, layer 0 is 8 x 8 (Darknet "
     "would make a flat 0 x 0 x 0 route, which darkbp does not support)"),
    ("groups do not divide", NET + HALF + CONV + "[route]\nlayers=0,1\ngroups=4\n", 16,
     "groups=4 does not divide the 2 channels of layer 1"),
    ("group_id too large", NET + CONV + "[route]\nlayers=0\ngroups=2\ngroup_id=2\n", 12,
     "group_id=2 is not one of the 2 groups (0 to 1)"),
    ("group_id negative", NET + CONV + "[route]\nlayers=0\ngroup_id=-1\n", 11,
     "'group_id' must be at least 0, got -1"),
    ("groups zero", NET + CONV + "[route]\nlayers=0\ngroups=0\n", 11,
     "'groups' must be at least 1, got 0"),
]


@pytest.mark.parametrize("name, text, line, words", BAD, ids=[case[0] for case in BAD])
def test_bad_route_is_one_clear_error_and_exit_2(tmp_path, name, text, line, words):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    assert_cfg_error(path, line, "route", words)


def test_a_route_of_vectors_is_a_vector(tmp_path):
    path = tmp_path / "net.cfg"
    path.write_text(NET + "[connected]\noutput=3\n[connected]\noutput=2\n[route]\nlayers=0,1\n"
                    "[convolutional]\nfilters=2\n")
    with pytest.raises(DarkbpError, match=r"\[convolutional\] needs an image input, but the "
                                          r"layer before it \(\[route\]\) outputs a flat "
                                          r"vector of 5"):
        parse_network(path)


# Layers of two sizes for `layers` to point at (layer 4 reads them).
FUZZ_NET = """
[net]
batch=2
width=8
height=8
channels=2
[convolutional]
filters=4
size=3
pad=1
[convolutional]
filters=2
size=3
stride=2
pad=1
[convolutional]
filters=6
size=1
[maxpool]
size=2
stride=1
[route]
layers={value}
groups=2
[connected]
output=3
[softmax]
"""
TOKENS = [str(v) for v in range(-100, 101)] + ["a", "", "1.5", "+2", "-0", " 3", "2147483648"]
NEAR = [str(v) for v in range(-6, 7)] + ["a", "", "+2", "-0"]        # for lists: mostly in range


def test_any_layers_builds_and_runs_or_is_a_darkbp_error():
    rng = np.random.default_rng(0)
    values = TOKENS + [",".join(rng.choice(NEAR, size=int(rng.integers(2, 5))))
                       for _ in range(300)] + ["1,,2", ",", "1,", ",1", "-1,-1,-1"]
    assert count_fuzz_builds(FUZZ_NET, values, rng) > 20
