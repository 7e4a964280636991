"""[rnn] and [gru], the recurrent heads darkbp tabulates but does not run.

Against Darknet's own tables of its stock rnn.cfg and gru.cfg (../shared/darknet-summary/,
read as literal text), parameter and `.weights` float counts worked out by hand from
pjreddie's make_rnn_layer / make_gru_layer / save_weights_upto, `.weights` files built by
hand in Darknet's order, AlexeyAB's lines from its printf formats, the errors bad sections
give and the refusal of train, gradcheck and eval. No fixture of ../shared/darknet-golden/
uses a recurrent layer, and darkbp runs none: there is no forward to compare.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from darkbp.cfg import read_cfg
from darkbp.cli import main
from darkbp.errors import DarkbpError
from darkbp.network import parse_network
from darkbp.summary import darknet_text
from darkbp.weights import load_weights
from tests.conftest import ROOT, SHARED, assert_cfg_error

STOCK = SHARED / "darknet-cfg"
TABLES = SHARED / "darknet-summary"
LAYER_CFGS = ROOT / "tests" / "layer_cfgs"

NET = "[net]\nbatch=2\ninputs=5\n"


def _header(major=0, minor=2, revision=0, seen=0) -> bytes:
    """A .weights header as Darknet writes it: uint64 seen for 0.2, int32 past 1000."""
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    return struct.pack("<iii", major, minor, revision) + struct.pack("<Q" if wide else "<i", seen)


# ------------------------------------------------------------------ Darknet's tables

@pytest.mark.parametrize("name", ["rnn", "gru"])
def test_stock_table_equals_darknets_output(name):
    # Darknet's bytes, read from ../shared/darknet-summary/{name}.txt: the cells' lines start
    # with two tabs where the layers' lines have their "%5d " index.
    expected = (TABLES / f"{name}.txt").read_text()
    assert "\n\t\tconnected " in expected
    assert darknet_text(parse_network(STOCK / f"{name}.cfg")) == expected
    result = CliRunner().invoke(main, ["summary", str(STOCK / f"{name}.cfg"), "--format",
                                       "darknet"])
    assert result.exit_code == 0, result.output
    assert result.stdout == expected


def test_rnn_train_cfg_tabulates_as_rnn_cfg():
    # rnn.train.cfg has no table of Darknet's. It is rnn.cfg with another batch and
    # time_steps, and neither is printed: make_rnn_layer prints only inputs and outputs and
    # uses batch (divided by steps) for buffers only; make_connected_layer likewise. So
    # Darknet's table of it is the one it printed for rnn.cfg.
    train, plain = ([{key: value for key, (value, _) in s.options.items()} for s in
                     read_cfg(STOCK / f"{name}.cfg")] for name in ("rnn.train", "rnn"))
    assert [s.header for s in read_cfg(STOCK / "rnn.train.cfg")] == \
        [s.header for s in read_cfg(STOCK / "rnn.cfg")]
    assert {key for key in train[0].keys() | plain[0].keys()
            if train[0].get(key) != plain[0].get(key)} == {"batch", "time_steps"}
    assert train[1:] == plain[1:]
    network = parse_network(STOCK / "rnn.train.cfg")
    assert darknet_text(network) == (TABLES / "rnn.txt").read_text()
    assert [layer.parameter_count() for layer in network.layers] == \
        [layer.parameter_count() for layer in parse_network(STOCK / "rnn.cfg").layers]


def test_the_cells_follow_the_input_and_output():
    # Darknet's rule: the recurrent layer reads the previous layer's outputs flattened (8 from
    # the 2 x 2 x 2 convolution), and its output is a vector of `output`.
    network = parse_network(LAYER_CFGS / "gru.cfg")
    gru = network.layers[1]
    assert (gru.in_shape, gru.out_shape, gru.flat) == ((2, 2, 2), (4, 1, 1), True)
    assert gru.darknet_line() == (
        "GRU Layer: 8 inputs, 4 outputs\n"
        "\t\tconnected                               8  ->     4\n"
        "\t\tconnected                               4  ->     4\n"
        "\t\tconnected                               8  ->     4\n"
        "\t\tconnected                               4  ->     4\n"
        "\t\tconnected                               8  ->     4\n"
        "\t\tconnected                               4  ->     4\n")
    rnn = parse_network(LAYER_CFGS / "rnn.cfg").layers[0]
    assert rnn.darknet_line() == (
        "RNN Layer: 5 inputs, 4 outputs\n"
        "\t\tconnected                               5  ->     4\n"
        "\t\tconnected                               4  ->     4\n"
        "\t\tconnected                               4  ->     4\n")


# ------------------------------------------------------------------ AlexeyAB's lines

def test_alexeyab_lines():
    # From AlexeyAB's printf formats: make_rnn_layer / make_gru_layer print
    # "RNN Layer: %d inputs, %d outputs\n" ("GRU Layer: ..."), then per cell "\t\t" and
    # make_connected_layer's "connected                            %4d  ->  %4d\n". Its
    # parse_rnn reads hidden = option_find_int(options, "hidden", 1), and its cells are
    # inputs -> hidden, hidden -> hidden, hidden -> output; its GRU's cells are pjreddie's.
    stock = parse_network(STOCK / "rnn.cfg").layers
    assert stock[0].alexeyab_line() == (
        "RNN Layer: 256 inputs, 1024 outputs\n"
        "\t\tconnected                             256  ->  1024\n"
        "\t\tconnected                            1024  ->  1024\n"
        "\t\tconnected                            1024  ->  1024\n")
    no_hidden = parse_network(LAYER_CFGS / "rnn.cfg").layers[1]       # output=3, no hidden
    assert no_hidden.alexeyab_line() == (
        "RNN Layer: 4 inputs, 3 outputs\n"
        "\t\tconnected                               4  ->     1\n"
        "\t\tconnected                               1  ->     1\n"
        "\t\tconnected                               1  ->     3\n")
    gru = parse_network(STOCK / "gru.cfg").layers[0]
    assert gru.alexeyab_line() == "GRU Layer: 256 inputs, 256 outputs\n" + 6 * (
        "\t\tconnected                             256  ->   256\n")
    # Neither sets l.w or l.h (0): AlexeyAB's avg_outputs leaves them out; nor l.bflops.
    for layer in (stock[0], gru):
        assert layer.alexeyab_size([]) == (0, 0)
        assert layer.alexeyab_bflops == 0


# ------------------------------------------------------------------ parameters and .weights

def test_parameter_counts_worked_out_by_hand():
    # rnn.cfg, every cell with batch norm (biases, scales and weights are parameters):
    #   layer 0: input 256 -> 1024: 256·1024 + 2·1024 = 264,192; self and output
    #            1024 -> 1024: 1024·1024 + 2·1024 = 1,050,624 each -> 2,365,440
    #   layers 1, 2: three 1024 -> 1024 cells: 3 · 1,050,624 = 3,151,872
    #   layer 3 [connected] 1024 -> 256: 1024·256 + 256 = 262,400
    #   total 2,365,440 + 2 · 3,151,872 + 262,400 = 8,931,584
    rnn = parse_network(STOCK / "rnn.cfg")
    assert [layer.parameter_count() for layer in rnn.layers] == \
        [2_365_440, 3_151_872, 3_151_872, 262_400, 0]
    # gru.cfg, no batch norm: six 256 -> 256 cells of 256·256 + 256 = 65,792 per [gru],
    #   394,752, three of them 1,184,256, + [connected] 256 -> 256 65,792 = 1,250,048.
    gru = parse_network(STOCK / "gru.cfg")
    assert [layer.parameter_count() for layer in gru.layers] == \
        [394_752, 394_752, 394_752, 65_792, 0]
    # FLOPs per input vector, every cell's product once per step: 2·(256·1024 + 2·1024·1024)
    # = 4,718,592; 2·3·1024·1024 = 6,291,456; 2·6·256·256 = 786,432
    assert rnn.layers[0].bflops == pytest.approx(0.004718592, rel=1e-12)
    assert rnn.layers[1].bflops == pytest.approx(0.006291456, rel=1e-12)
    assert gru.layers[0].bflops == pytest.approx(0.000786432, rel=1e-12)


@pytest.mark.parametrize("name, floats", [
    # rnn.cfg: the parameters above and each of its nine cells' rolling mean and variance
    # (2·1024): 8,931,584 + 9 · 2,048 = 8,950,016. gru.cfg has no batch norm: 1,250,048.
    ("rnn", 8_950_016),
    ("gru", 1_250_048),
])
def test_a_weights_file_of_darknets_size_loads(tmp_path, name, floats):
    network = parse_network(STOCK / f"{name}.cfg").initialize(0, np.float32)
    path = tmp_path / f"{name}.weights"
    path.write_bytes(_header(seen=64) + np.ones(floats, "<f4").tobytes())
    assert load_weights(path, network.layers) == 64
    assert all(np.all(getattr(layer, array) == 1) for layer in network.layers
               for array in layer.weights_order())
    path.write_bytes(_header(seen=64) + np.ones(floats - 1, "<f4").tobytes())
    with pytest.raises(DarkbpError, match=f"expected {floats} floats after the header, "
                                          f"found {floats - 1}"):
        load_weights(path, network.layers)


# The arrays of tests/layer_cfgs/*.cfg in Darknet's file order (save_weights_upto: an [rnn]
# writes its input, self and output cells, a [gru] wz, wr, wh, uz, ur, uh; each cell as
# save_connected_weights: biases, weights (outputs, inputs), [scales, rolling_mean,
# rolling_variance]), written from Darknet's source, not from darkbp's.
def _cell(layer, name, inputs, outputs, bn):
    arrays = [(layer, f"{name}_biases", (outputs,)),
              (layer, f"{name}_weights", (outputs, inputs))]
    if bn:
        arrays += [(layer, f"{name}_{array}", (outputs,))
                   for array in ("scales", "rolling_mean", "rolling_variance")]
    return arrays


FILE_ORDER = {
    "rnn": [*_cell(0, "input", 5, 4, True), *_cell(0, "self", 4, 4, True),
            *_cell(0, "output", 4, 4, True),
            *_cell(1, "input", 4, 3, False), *_cell(1, "self", 3, 3, False),
            *_cell(1, "output", 3, 3, False),
            (2, "biases", (3,)), (2, "weights", (3, 3))],
    "gru": [(0, "biases", (2,)), (0, "weights", (2, 1, 3, 3)),
            *[array for name in ("wz", "wr", "wh") for array in _cell(1, name, 4, 4, True)],
            *[array for name in ("uz", "ur", "uh") for array in _cell(1, name, 8, 4, True)],
            *[array for name in ("wz", "wr", "wh") for array in _cell(2, name, 3, 3, False)],
            *[array for name in ("uz", "ur", "uh") for array in _cell(2, name, 4, 3, False)],
            (3, "biases", (3,)), (3, "weights", (3, 3))],
}


@pytest.mark.parametrize("name, floats", [
    # rnn: 4 + 20 + 12 = 36, 4 + 16 + 12 = 32 twice; 3 + 12, 3 + 9 twice; 3 + 9: 100 + 39 + 12
    ("rnn", 151),
    # gru: conv 2 + 18; wz, wr, wh 4 + 16 + 12 = 32 and uz, ur, uh 4 + 32 + 12 = 48 each;
    # 3 · (3 + 9) + 3 · (3 + 12); connected 3 + 9: 20 + 240 + 81 + 12
    ("gru", 353),
])
def test_every_array_reads_its_place_in_darknets_order(tmp_path, name, floats):
    order = FILE_ORDER[name]
    assert sum(int(np.prod(shape)) for _, _, shape in order) == floats
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


def test_files_with_a_major_above_1000_hold_every_cell_transposed(tmp_path):
    # load_weights_upto passes `transpose` to load_connected_weights for every cell.
    order = FILE_ORDER["rnn"]
    values = np.arange(151, dtype="<f4")
    path = tmp_path / "net.weights"
    path.write_bytes(_header(major=1001) + values.tobytes())
    network = parse_network(LAYER_CFGS / "rnn.cfg").initialize(0, np.float32)
    load_weights(path, network.layers)
    start = 0
    for index, array, shape in order:
        size = int(np.prod(shape))
        chunk = values[start:start + size]
        start += size
        expected = chunk.reshape(shape[::-1]).T if array.endswith("weights") else chunk
        np.testing.assert_array_equal(getattr(network.layers[index], array), expected,
                                      err_msg=f"layer {index} {array}")


# ------------------------------------------------------------------ options

def _warnings(path):
    return [warning.message for warning in parse_network(path).warnings]


def test_no_false_warnings_on_the_stock_recurrent_cfgs():
    # Every option of their [rnn] and [gru] sections is one Darknet reads (rnn.cfg's hidden is
    # AlexeyAB's, equal to output); time_steps and adam are [net] options darkbp knows.
    for name in ("rnn", "rnn.train", "gru"):
        for message in _warnings(STOCK / f"{name}.cfg"):
            assert message.startswith("[net] option ") and "known to Darknet" in message, message


def test_options_only_alexeyab_or_nobody_reads_are_warnings(write_cfg):
    path = write_cfg(NET + "[rnn]\noutput=3\nlogistic=1\n[gru]\noutput=3\nhidden=3\n")
    assert _warnings(path) == [
        "[rnn] option 'logistic' is known to Darknet but not used by darkbp",
        "[gru] unknown option 'hidden' (Darknet: Unused field)"]


def test_darknets_defaults():
    # parse_rnn: output 1, activation logistic, batch_normalize 0, shortcut 0;
    # parse_gru: output 1, batch_normalize 0, tanh 0.
    rnn = parse_network(LAYER_CFGS / "rnn.cfg").layers[1]
    assert (rnn.outputs, rnn.activation, rnn.batch_normalize, rnn.shortcut) == \
        (3, "logistic", False, True)
    path = LAYER_CFGS / "gru.cfg"
    gru = parse_network(path).layers[1]
    assert (gru.batch_normalize, gru.tanh) == (True, False)
    assert parse_network(path).layers[2].tanh is True


@pytest.mark.parametrize("body, line, section, words", [
    ("[rnn]\noutput=0\n", 5, "rnn", "'output' must be at least 1, got 0"),
    ("[rnn]\noutput=4\nhidden=8\n", 6, "rnn",
     "hidden=8 differs from output=4: pjreddie's Darknet, which darkbp follows, ignores "
     "'hidden'"),
    ("[rnn]\nhidden=0\n", 5, "rnn", "'hidden' must be at least 1, got 0"),
    ("[rnn]\nactivation=bogus\n", 5, "rnn", "unknown activation 'bogus'"),
    ("[rnn]\nbatch_normalize=-1\n", 5, "rnn", "'batch_normalize' must be at least 0, got -1"),
    ("[rnn]\nshortcut=yes\n", 5, "rnn", "'shortcut' must be a whole number, got 'yes'"),
    ("[gru]\noutput=many\n", 5, "gru", "'output' must be a whole number, got 'many'"),
    ("[gru]\ntanh=-1\n", 5, "gru", "'tanh' must be at least 0, got -1"),
    ("[rnn]\noutput=4\n[maxpool]\n", 6, "maxpool",
     "[maxpool] needs an image input, but the layer before it ([rnn]) outputs a flat vector"),
])
def test_bad_sections_are_one_clear_error(write_cfg, body, line, section, words):
    assert_cfg_error(write_cfg(NET + body), line, section, words)


# ------------------------------------------------------------------ refusals

def _refusal(result, path, line, section):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [text for text in result.stderr.splitlines() if text.startswith("darkbp: error:")]
    assert errors == [f"darkbp: error: {path}:{line}: [{section}] can only be tabulated: "
                      "darkbp does not run this section"]
    assert result.stderr.endswith(errors[0] + "\n")


def test_train_gradcheck_and_eval_refuse_a_recurrent_cfg(tmp_path):
    runner = CliRunner()
    rnn, gru = STOCK / "rnn.cfg", STOCK / "gru.cfg"
    out = tmp_path / "backup"
    _refusal(runner.invoke(main, ["train", str(rnn), "--data", "mnist", "--out", str(out)]),
             rnn, 14, "rnn")
    assert not out.exists()
    _refusal(runner.invoke(main, ["gradcheck", str(rnn)]), rnn, 14, "rnn")
    _refusal(runner.invoke(main, ["gradcheck", str(gru)]), gru, 15, "gru")
    weights = tmp_path / "gru.weights"
    weights.write_bytes(_header())
    _refusal(runner.invoke(main, ["eval", str(gru), str(weights), "--data", "mnist"]),
             gru, 15, "gru")


def test_rich_and_json_summaries_show_the_cells():
    result = CliRunner().invoke(main, ["summary", str(STOCK / "rnn.cfg"), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    first = data["layers"][0]
    assert (first["type"], first["params"], first["output"]) == ("rnn", 2_365_440, [1, 1, 1024])
    assert first["connected"] == [{"name": "input", "inputs": 256, "outputs": 1024},
                                  {"name": "self", "inputs": 1024, "outputs": 1024},
                                  {"name": "output", "inputs": 1024, "outputs": 1024}]
    assert data["totals"]["params"] == 8_931_584
    result = CliRunner().invoke(main, ["summary", str(STOCK / "gru.cfg")])
    assert result.exit_code == 0, result.output
    assert "1,250,048 parameters" in result.stdout
