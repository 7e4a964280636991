"""`darkbp summary` on AlexeyAB's whole cfg zoo (issue 20, "Every AlexeyAB table").

../shared/darknet-cfg/alexeyab/ holds 65 cfgs of AlexeyAB/darknet's cfg/ folder (commit
59596d78); ../shared/darknet-summary/alexeyab-own/ the 56 tables AlexeyAB's CPU build printed
for them and, in FAILED.txt, what it printed for the other 9 before it died (a division by
zero in its avg_outputs for the recurrent cfgs, parse_shortcut's assertion for the resnets).

- `--format alexeyab` equals every one of the 56 tables byte for byte, and on the 9 prints
  what AlexeyAB printed before dying, with the reason on stderr.
- The default table and `--format json` work on all 65: as many layers as the cfg has
  sections, each output shape as AlexeyAB's own table prints it (where its line has one),
  and for the 9 a note saying AlexeyAB cannot parse them, why, and what darkbp did.

(While issue 20's other parts were landing, a WAITING map here named the cfgs that failed
only for their features, each checked to fail for exactly that reason; they have all landed
and it is gone.)
"""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from darkbp.cli import main
from tests.conftest import SHARED

ZOO = SHARED / "darknet-cfg" / "alexeyab"
OWN = SHARED / "darknet-summary" / "alexeyab-own"
CFGS = sorted(path.stem for path in ZOO.glob("*.cfg"))
TABLES = sorted(path.stem for path in OWN.glob("*.txt") if path.name != "FAILED.txt")
HEADER = "   layer   filters  size/strd(dil)      input                output"


def _failed() -> dict[str, tuple[str, list[str]]]:
    """FAILED.txt: name -> (reason, the stderr tail's lines, trailing spaces stripped)."""
    found = {}
    text = (OWN / "FAILED.txt").read_text()
    for block in text.split("\n## ")[1:]:
        name = block.splitlines()[0].removesuffix(".cfg")
        reason = re.search(r"^reason: (.*)$", block, re.M).group(1)
        tail = block.split("--- stderr tail ---\n", 1)[1].split("--- stdout tail ---", 1)[0]
        found[name] = (reason, [line.rstrip() for line in tail.strip("\n").splitlines()])
    return found


FAILED = _failed()
DIED = sorted(FAILED)


def _run(*args):
    return CliRunner().invoke(main, ["summary", *map(str, args)])


def test_the_zoo_is_65_cfgs_56_tables_and_9_that_alexeyab_cannot_parse():
    assert len(CFGS) == 65
    assert len(TABLES) == 56
    assert sorted(set(CFGS) - set(TABLES)) == DIED
    assert DIED == ["crnn.train", "gru", "lstm.train", "resnet101", "resnet152", "resnet50",
                    "resnext152-32x4d", "rnn", "rnn.train"]


# ------------------------------------------------------------------ --format alexeyab

@pytest.mark.parametrize("name", TABLES)
def test_alexeyab_table_byte_for_byte(name):
    result = _run(ZOO / f"{name}.cfg", "--format", "alexeyab")
    assert result.exit_code == 0, result.output
    assert result.stdout == (OWN / f"{name}.txt").read_text()
    assert "note:" not in result.stderr


@pytest.mark.parametrize("name", DIED)
def test_where_alexeyab_dies_darkbp_prints_what_it_printed(name):
    reason, tail = FAILED[name]
    result = _run(ZOO / f"{name}.cfg", "--format", "alexeyab")
    assert result.exit_code == 0, result.output
    ours = [line.rstrip() for line in result.stdout.splitlines()]
    if reason == "killed by signal 8 (SIGFPE)":
        # It printed its whole table and Total BFLOPS, then divided by zero.
        assert ours[-1].startswith("Total BFLOPS ")
        assert "avg_outputs divides by zero (SIGFPE)" in result.stderr
    else:
        assert reason == "killed by signal 6 (SIGABRT)"
        assert tail[-1].startswith("summary_ab: ./src/parser.c:979: parse_shortcut: Assertion")
        tail = tail[:-1]              # the assertion's own message, which darkbp does not echo
        index = int(ours[-1].split()[0])
        assert f"layer {index} [shortcut]" in result.stderr
        assert "its parse_shortcut asserts that the 'from' layer" in result.stderr
    assert "AlexeyAB's Darknet cannot parse this cfg and stops here" in result.stderr
    if tail[0] == HEADER.rstrip():
        assert ours == tail           # the whole output
    else:                             # FAILED.txt keeps its last characters only
        assert ours[-len(tail) + 1:] == tail[1:]
        assert ours[-len(tail)].endswith(tail[0])


# ------------------------------------------------------------------ the default table and JSON

def _sections(name: str) -> int:
    """The layer sections of the cfg, counted in its text: every "[" line after [net]."""
    lines = (ZOO / f"{name}.cfg").read_text().splitlines()
    return sum(1 for line in lines if line.strip().startswith("[")) - 1


TRIPLE = re.compile(r"(\d+) x\s*(\d+) x\s*(\d+)")


def _alexeyab_outputs(lines: list[str]) -> dict[int, tuple[int, int, int]]:
    """{layer: (w, h, c)} from AlexeyAB's table lines that print an output shape: the first
    "w x h x c" after the last "->", or after "outputs:" (a shortcut); 1 x 1 x n for a
    connected layer's "-> n" and a recurrent layer's "n outputs"."""
    found = {}
    for line in lines:
        match = re.match(r"\s*(\d+) (.*)", line)
        if not match:
            continue
        index, rest = int(match.group(1)), match.group(2)
        flat = (re.fullmatch(r"connected\s+\d+\s+->\s+(\d+)", rest)
                or re.fullmatch(r"[A-Z]+ Layer: \d+ inputs, (\d+) outputs", rest))
        if flat:
            found[index] = (1, 1, int(flat.group(1)))
            continue
        for mark in ("->", "outputs:"):
            if mark in rest:
                shape = TRIPLE.search(rest.rsplit(mark, 1)[1])
                if shape:
                    found[index] = tuple(map(int, shape.groups()))
                break
    return found


def _expected_outputs(name: str) -> dict[int, tuple[int, int, int]]:
    lines = ((OWN / f"{name}.txt").read_text().splitlines() if name in TABLES
             else FAILED[name][1])
    return _alexeyab_outputs(lines)


@pytest.mark.parametrize("name", CFGS)
def test_json_on_every_cfg(name):
    result = _run(ZOO / f"{name}.cfg", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = data["layers"]
    assert len(rows) == _sections(name)
    expected = _expected_outputs(name)
    assert len(expected) >= 1
    assert {index: tuple(rows[index]["output"]) for index in expected} == expected
    cannot = [note for note in data["notes"] if "AlexeyAB's Darknet cannot parse" in note]
    if name in FAILED:
        assert len(cannot) == 1
        rule = ("darkbp adds them as pjreddie's Darknet does" if name.startswith("res")
                else "darkbp's totals are its own")
        assert rule in cannot[0]
    else:
        assert cannot == []
    assert data["totals"]["params"] == sum(row["params"] for row in rows)


@pytest.mark.parametrize("name", CFGS)
def test_table_on_every_cfg(name):
    result = _run(ZOO / f"{name}.cfg")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines()
            if re.match(r"│\s+\d+ │", line)]
    assert len(rows) == _sections(name)
    noted = "note: AlexeyAB's Darknet cannot parse this cfg" in result.stdout
    assert noted == (name in FAILED)
