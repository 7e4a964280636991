"""`darkbp summary` in its table and JSON forms, and the help texts."""

from __future__ import annotations

import json

import pytest

from click.testing import CliRunner

from darkbp.cli import main
from tests.conftest import CFG_DIR, SHARED

MNIST = str(CFG_DIR / "mnist.cfg")
# LeNet's parameters, counted by hand: conv 20*1*5*5+20, conv 50*20*5*5+50,
# connected 800*500+500, connected 500*10+10.
LENET_PARAMS = 520 + 25_050 + 400_500 + 5_010
# Forward FLOPs of one image: 2*k*k*c_in*c_out*oh*ow per conv, 2*in*out per connected.
LENET_BFLOPS = (2 * 25 * 1 * 20 * 24 * 24 + 2 * 25 * 20 * 50 * 8 * 8 + 2 * 800 * 500
                + 2 * 500 * 10) / 1e9
# Activations: the input and every layer's output, float32, at the cfg's batch of 64.
LENET_ACTIVATION_BYTES = (784 + 11520 + 2880 + 3200 + 800 + 500 + 10 + 10) * 64 * 4


def test_table_is_plain_text_when_not_a_terminal():
    result = CliRunner().invoke(main, ["summary", MNIST])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "\x1b[" not in out
    assert "431,080" in out
    assert "4.586 MFLOPs per image" in out
    assert "activations 4.8 MiB at batch 64" in out
    for line in out.splitlines():
        assert line == line.rstrip()
    assert "conv relu" in out and "24 x 24 x 20" in out


def test_json_has_the_same_data():
    result = CliRunner().invoke(main, ["summary", MNIST, "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["totals"]["params"] == LENET_PARAMS
    assert abs(data["totals"]["bflops"] - LENET_BFLOPS) < 1e-15
    assert data["totals"]["activation_bytes"] == LENET_ACTIVATION_BYTES
    assert [row["type"] for row in data["layers"]] == [
        "convolutional", "maxpool", "convolutional", "maxpool", "connected", "connected",
        "softmax"]
    assert data["layers"][0]["input"] == [28, 28, 1]
    assert data["layers"][0]["output"] == [24, 24, 20]
    assert data["layers"][4]["params"] == 400_500


def test_batch_option_scales_activation_memory():
    result = CliRunner().invoke(main, ["summary", MNIST, "--format", "json", "--batch", "1"])
    assert json.loads(result.stdout)["totals"]["activation_bytes"] == LENET_ACTIVATION_BYTES // 64


def test_warnings_go_to_stderr(write_cfg):
    path = write_cfg("[net]\nwidth=4\nheight=4\nchannels=1\nclip=.1\n[conv]\n")
    result = CliRunner().invoke(main, ["summary", str(path), "--format", "darknet"])
    assert result.exit_code == 0
    assert result.stderr == (f"darkbp: {path}:5: warning: [net] option 'clip' is known to "
                             "Darknet but not used by darkbp\n")
    assert "warning" not in result.stdout


def test_help_texts_have_examples():
    for args in (["--help"], ["summary", "--help"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0
        assert "Examples:" in result.output
        assert "darkbp summary cfg/mnist.cfg" in result.output


def test_route_and_shortcut_sources_are_shown():
    result = CliRunner().invoke(main, ["summary", str(CFG_DIR / "residual.cfg")])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[1:-1]]
            for line in result.stdout.splitlines() if line.startswith("│")}
    assert rows["3"][4] == "2, 0"          # [shortcut] from=-3: the previous layer and layer 0
    assert rows["7"][4] == "6, 5"          # [route] layers=-1,-2
    assert rows["4"][4] == ""              # a plain chain reads the layer before
    data = json.loads(CliRunner().invoke(main, ["summary", str(CFG_DIR / "residual.cfg"),
                                                "--format", "json"]).stdout)
    assert [row["inputs"] for row in data["layers"][:4]] == [[-1], [0], [1], [2, 0]]


def test_a_detection_cfg_in_the_table_and_json_formats():
    yolov3 = str(SHARED / "darknet-cfg" / "yolov3.cfg")
    result = CliRunner().invoke(main, ["summary", yolov3])
    assert result.exit_code == 0, result.output
    assert "· 140.692 BFLOPs per image (forward) ·" in result.stdout     # as published: 140.69
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert rows[-2].split("│")[2].strip() == "yolo"      # the last layer, then the totals
    data = json.loads(CliRunner().invoke(main, ["summary", yolov3, "--format", "json"]).stdout)
    assert len(data["layers"]) == 107
    assert data["layers"][86]["inputs"] == [85, 61]        # [route] layers = -1, 61
    assert data["totals"]["bflops"] == pytest.approx(140.6919, abs=1e-4)
