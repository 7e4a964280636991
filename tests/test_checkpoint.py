"""The training state and the .weights a run resumes or starts from: a state of another run
(cfg, batch, seed, EMA, darkbp version) and a damaged file are refused in one line, never a
traceback, and a finished run says so."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner

from darkbp.cli import main
from darkbp.errors import DarkbpError
from darkbp.network import parse_network
from darkbp.train import Trainer, TrainOptions
from tests.conftest import SAMPLE

CFG = """
[net]
batch=16
subdivisions=1
width=28
height=28
channels=1
learning_rate=0.05
momentum=0.9

[convolutional]
batch_normalize=1
filters=3
size=5
stride=2
activation=leaky

[connected]
output=10
activation=linear

[softmax]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, sample):
    """A finished run of 6 batches with EMA: (cfg path, its --out folder)."""
    folder = tmp_path_factory.mktemp("run")
    cfg = folder / "net.cfg"
    cfg.write_text(CFG)
    Trainer(parse_network(cfg), sample,
            TrainOptions(out=folder / "out", max_batches=6, ema=0.9, seed=2)).run()
    return cfg, folder / "out"


def _resume(cfg, out, sample, **options):
    """A Trainer resuming the run in `out` for 8 batches (options: as the run's, or others)."""
    options = {"max_batches": 8, "ema": 0.9, "seed": 2, **options}
    return Trainer(parse_network(cfg), sample, TrainOptions(out=out, resume=True, **options))


def _cli(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def _one_line_error(result, code=2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("darkbp: error: "), result.stderr
    return lines[0]


def test_the_state_of_the_same_run_resumes(run, sample):
    cfg, out = run
    trainer = _resume(cfg, out, sample)
    assert (trainer.batch_num, trainer.complete) == (6, False)
    assert len(trainer.losses) == 6         # the epoch under way: 250 batches of 16


def test_resuming_a_finished_run_says_so_and_changes_nothing(run):
    cfg, out = run
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    result = _cli("train", cfg, "--data", SAMPLE, "--max-batches", 6, "--ema", 0.9,
                  "--seed", 2, "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"the run in {out} is complete (6 of 6 batches): nothing to "
                             "train. Give a larger --epochs or --max-batches to train on.\n"
                             f"final weights: {out / 'net_final.weights'}\n")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


@pytest.mark.parametrize("change, words", [
    ("filters=3", "its layer 0 is 'conv 3 5 x 5 / 2 28 x 28 x 1 -> 12 x 12 x 3"),
    ("output=10\nactivation=linear", "its layer 1 is 'connected 432 -> 10, linear', {cfg}'s "
                                     "is 'connected 432 -> 10, logistic'"),
    ("batch=16", "trained with batch=16, {cfg} has batch=32"),
])
def test_a_state_of_another_cfg_is_refused_naming_the_difference(run, sample, tmp_path,
                                                                change, words):
    cfg, out = run
    other = tmp_path / "net.cfg"
    replacement = {"filters=3": "filters=4", "batch=16": "batch=32"}.get(change, "output=10")
    other.write_text(CFG.replace(change, replacement))
    with pytest.raises(DarkbpError) as caught:
        _resume(other, out, sample)
    assert words.format(cfg=other) in str(caught.value)
    assert str(caught.value).startswith(f"{out / 'net_last.state.npz'}: ")
    assert str(caught.value).endswith("; resume with what the run used, or train in another --out")


@pytest.mark.parametrize("options, words", [
    ({"seed": 3}, "trained with --seed 2, not 3"),
    ({"ema": 0.5}, "trained with --ema 0.9, not 0.5"),
])
def test_a_state_of_other_options_is_refused(run, sample, options, words):
    with pytest.raises(DarkbpError, match=words):
        _resume(*run, sample, **options)


def test_a_state_of_other_data_is_refused(run, tmp_path):
    # The run trained on the sample's IDX copy; another data set (a folder of 20 PNG digits
    # per class) under the same --out would otherwise look like a longer or shorter run.
    cfg, out = run
    folder = tmp_path / "digits"
    for split in ("train", "val"):
        for digit in range(10):
            (folder / split / str(digit)).mkdir(parents=True)
            for k in range(20 if split == "train" else 2):
                Image.fromarray(np.full((28, 28), 25 * digit, np.uint8)).save(
                    folder / split / str(digit) / f"{k}.png")
    line = _one_line_error(_cli("train", cfg, "--data", folder, "--max-batches", 8, "--ema",
                                0.9, "--seed", 2, "--out", out, "--resume"))
    assert "(200 images); resume with what the run used" in line
    assert line.startswith(f"darkbp: error: {out / 'net_last.state.npz'}: trained on ")


def _rewritten(state_path, target, **changes):
    """Copy the state at `state_path` to `target` with some arrays changed (None: dropped)."""
    with np.load(state_path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = np.array(value)
    np.savez(target, **arrays)


@pytest.mark.parametrize("changes, words", [
    ({"darkbp": "0.0.9"}, "written by darkbp 0.0.9, this is darkbp 0.1.0"),
    ({"darkbp": None, "format": None, "version": 1}, "written by an earlier darkbp (state "
                                                      "format 1)"),
    ({"darkbp": None}, "not a darkbp training state"),
])
def test_a_state_of_another_darkbp_is_refused(run, sample, tmp_path, changes, words):
    cfg, out = run
    _rewritten(out / "net_last.state.npz", tmp_path / "net_last.state.npz", **changes)
    result = _cli("train", cfg, "--data", SAMPLE, "--max-batches", 8, "--ema", 0.9,
                  "--seed", 2, "--out", tmp_path, "--resume")
    assert words in _one_line_error(result)


def _damaged_copies(data: bytes, count: int):
    """(what, bytes): `data` cut short at `count` places, and with one bit flipped at
    `count` places, drawn with a fixed seed."""
    rng = np.random.default_rng(5)
    for end in sorted(rng.integers(0, len(data), count)):
        yield f"cut at {end}", data[:end]
    for position in sorted(rng.integers(0, len(data), count)):
        flipped = bytearray(data)
        flipped[position] ^= 1 << int(rng.integers(8))
        yield f"bit flipped at {position}", bytes(flipped)


def test_a_truncated_or_bit_flipped_state_is_refused_or_reads_the_same(run, sample, tmp_path):
    cfg, out = run
    good = (out / "net_last.state.npz").read_bytes()
    expected = _resume(cfg, out, sample).network.layers[0].weights.copy()
    refused = 0
    for what, data in _damaged_copies(good, 40):
        (tmp_path / "net_last.state.npz").write_bytes(data)
        try:
            trainer = _resume(cfg, tmp_path, sample)
        except DarkbpError as error:
            assert "\n" not in str(error), what
            refused += 1
            continue
        # A bit of the zip's bookkeeping that no reader checks (a timestamp, a flag).
        np.testing.assert_array_equal(trainer.network.layers[0].weights, expected, what)
    assert refused >= 70                    # every cut, nearly every flip
    with pytest.raises(DarkbpError, match=r"truncated or corrupt \(Bad CRC-32"):
        flipped = bytearray(good)
        flipped[len(good) // 2] ^= 0x10     # in the middle of an array
        (tmp_path / "net_last.state.npz").write_bytes(bytes(flipped))
        _resume(cfg, tmp_path, sample)


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_the_cli_refuses_a_damaged_state_in_one_line(run, tmp_path, damage):
    cfg, out = run
    data = (out / "net_last.state.npz").read_bytes()
    if damage == "cut":
        data = data[:len(data) * 2 // 3]
    else:
        data = bytearray(data)
        data[len(data) // 2] ^= 0x10
    state = tmp_path / "net_last.state.npz"
    state.write_bytes(bytes(data))
    result = _cli("train", cfg, "--data", SAMPLE, "--max-batches", 8, "--ema", 0.9,
                  "--seed", 2, "--out", tmp_path, "--resume")
    line = _one_line_error(result)
    assert line.startswith(f"darkbp: error: {state}: the training state is truncated or corrupt")
    assert state.read_bytes() == bytes(data)        # nothing was changed


def test_a_truncated_or_corrupt_weights_file_is_refused_in_one_line(run, tmp_path):
    cfg, out = run
    good = (out / "net_final.weights").read_bytes()
    damaged = tmp_path / "damaged.weights"
    for data, words in [
        (good[:-6], "expected 4417 floats after the header, found 4415 and 2 stray bytes"),
        (good[:10], "too short for a .weights header (10 bytes)"),
        # A damaged byte that makes a float infinite (an exponent of all ones).
        (good[:20] + np.array([np.inf], "<f4").tobytes() + good[24:],
         "1 values are NaN or infinite, the first in layer 0 biases: the file is corrupt"),
    ]:
        damaged.write_bytes(data)
        for args in (["train", cfg, "--data", SAMPLE, "--max-batches", 1, "--weights", damaged,
                      "--out", tmp_path / "out"],
                     ["eval", cfg, damaged, "--data", SAMPLE]):
            assert _one_line_error(_cli(*args)) == f"darkbp: error: {damaged}: {words}"
