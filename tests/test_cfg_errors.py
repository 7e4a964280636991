"""Every malformed cfg is one clear DarkbpError naming file, line and problem; the CLI exits 2."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from darkbp.cli import main
from darkbp.errors import DarkbpError
from darkbp.network import parse_network

NET = """\
[net]
width=28
height=28
channels=1
"""

# (name, cfg text, expected line, words the message must contain)
BAD_CFGS = [
    ("empty", "", None, "empty cfg"),
    ("only comments", "# nothing\n; here\n\n", None, "empty cfg"),
    ("no net first", "[convolutional]\nfilters=2\n", 1, "first section must be [net]"),
    ("iseg", NET + "[iseg]\nclasses=2\n", 5, "[iseg] is a Darknet section that darkbp does not support"),
    ("unknown section", NET + "[convolutionl]\n", 5, "did you mean [convolutional]"),
    ("malformed header", NET + "[convolutional\n", 5, "malformed section header"),
    ("key outside section", "batch=1\n[net]\n", 1, "outside any section"),
    ("no equals", NET + "[convolutional]\nfilters\n", 6, "expected key=value"),
    ("empty value", NET + "[convolutional]\nfilters=\n", 6, "'filters' has no value"),
    ("non-numeric", NET + "[convolutional]\nfilters=sixteen\n", 6,
     "'filters' must be a whole number, got 'sixteen'"),
    ("non-numeric float", "[net]\nwidth=28\nheight=28\nchannels=1\nmomentum=high\n", 5,
     "'momentum' must be a number"),
    ("negative", NET + "[convolutional]\nstride=-2\n", 6, "'stride' must be at least 1, got -2"),
    ("negative padding", NET + "[maxpool]\npadding=-1\n", 6, "'padding' must be at least 0"),
    ("size zero", NET + "[convolutional]\nsize=0\n", 6, "'size' must be at least 1, got 0"),
    ("groups vs channels", "[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\n"
     "filters=4\ngroups=2\n", 7, "groups=2 does not divide the 3 input channels"),
    ("groups vs filters", "[net]\nwidth=8\nheight=8\nchannels=4\n[convolutional]\n"
     "filters=6\ngroups=4\n", 7, "groups=4 does not divide filters=6"),
    ("empty conv output", NET + "[convolutional]\nsize=29\n", 5, "no pixels"),
    ("empty maxpool output", "[net]\nwidth=2\nheight=2\nchannels=1\n[maxpool]\nsize=4\n"
     "stride=1\npadding=0\n", 5, "no pixels"),
    ("steps without steps", "[net]\nwidth=2\nheight=2\nchannels=1\npolicy=steps\n", 5,
     "policy=steps needs both 'steps' and 'scales'"),
    ("steps without scales", "[net]\nwidth=2\nheight=2\nchannels=1\npolicy=steps\nsteps=10\n", 5,
     "policy=steps needs both 'steps' and 'scales'"),
    ("steps scales mismatch", "[net]\nwidth=2\nheight=2\nchannels=1\npolicy=steps\n"
     "steps=10,20\nscales=.1\n", 5, "2 steps but 1 scales"),
    ("bad list", "[net]\nwidth=2\nheight=2\nchannels=1\npolicy=steps\nsteps=10,x\nscales=.1,.1\n",
     6, "comma-separated list of whole numbers"),
    ("unknown policy", "[net]\nwidth=2\nheight=2\nchannels=1\npolicy=cosine\n", 5,
     "unknown policy 'cosine'"),
    ("maxpool after connected", NET + "[connected]\noutput=10\n[maxpool]\nsize=2\n", 7,
     "[maxpool] needs an image input, but the layer before it ([connected])"),
    ("no input size", "[net]\nbatch=1\n[connected]\noutput=2\n", 1, "no input size"),
    ("unknown activation", NET + "[convolutional]\nactivation=bogus\n", 6,
     "unknown activation 'bogus'"),
    ("net twice", NET + "[net]\n", 5, "may only be the first section"),
    ("no layers", NET, 1, "no layers"),
    ("subdivisions above batch", "[net]\nwidth=2\nheight=2\nchannels=1\nbatch=2\n"
     "subdivisions=4\n", 6, "subdivisions=4 is larger than batch=2"),
    ("zero temperature", NET + "[softmax]\ntemperature=0\n", 6, "greater than 0"),
]


@pytest.mark.parametrize("name, text, line, words", BAD_CFGS, ids=[c[0] for c in BAD_CFGS])
def test_bad_cfg_is_a_clear_error(tmp_path, name, text, line, words):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    with pytest.raises(DarkbpError) as caught:
        parse_network(path)
    error = caught.value
    assert error.file == str(path)
    assert error.line == line
    assert words in str(error)


@pytest.mark.parametrize("name, text, line, words", BAD_CFGS[:6], ids=[c[0] for c in BAD_CFGS[:6]])
def test_cli_reports_bad_cfg_with_exit_2_and_no_traceback(tmp_path, name, text, line, words):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    result = CliRunner().invoke(main, ["summary", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    expected_where = f"{path}:{line}" if line else str(path)
    assert result.stderr.startswith(f"darkbp: error: {expected_where}")
    assert words in result.stderr
    assert result.stdout == ""


def test_error_names_the_section(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text(NET + "[conv]\nfilters=x\n")
    with pytest.raises(DarkbpError) as caught:
        parse_network(path)
    assert str(caught.value) == (f"{path}:6: [conv]: 'filters' must be a whole number, got 'x'")


def test_missing_file(tmp_path):
    result = CliRunner().invoke(main, ["summary", str(tmp_path / "nope.cfg")])
    assert result.exit_code == 2
    assert "nope.cfg: no such file" in result.stderr
    assert "Traceback" not in result.output


def test_binary_file(tmp_path):
    path = tmp_path / "model.weights"
    path.write_bytes(b"\x00\x00\x00\x00\x02\x00\x00\x00" + bytes(range(256)))
    result = CliRunner().invoke(main, ["summary", str(path)])
    assert result.exit_code == 2
    assert "is a binary file, not a cfg text file" in result.stderr


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.cfg"
    path.write_bytes(b"[net]\nwidth=2\n# caf\xe9\n")
    with pytest.raises(DarkbpError, match="not UTF-8") as caught:
        parse_network(path)
    assert caught.value.line == 3


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(DarkbpError, match="is a folder"):
        parse_network(tmp_path)
