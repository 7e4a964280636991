"""`darkbp data list` and `darkbp data fetch`, through click's CliRunner."""

import functools
import hashlib
import http.server
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from darkbp import catalogue
from darkbp.cli import main
from darkbp.datasets import SAMPLE_DIR
from darkbp.idx import write_idx

SHARED = os.environ.get("DARKBP_DATA")  # read at import, before clean_env clears it

FILENAMES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DARKBP_DATA", raising=False)


def run(*args):
    return CliRunner().invoke(main, list(args))


def line_with(output: str, text: str) -> str:
    lines = [line for line in output.splitlines() if text in line]
    assert len(lines) == 1, (text, output)
    return lines[0]


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving four small IDX files; md5 table patched."""
    folder = tmp_path / "served"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in zip(FILENAMES, [(12, 28, 28), (12,), (5, 28, 28), (5,)]):
        write_idx(folder / name, rng.integers(0, 10, shape, dtype=np.uint8))
    monkeypatch.setitem(catalogue.MD5, "mnist", {
        name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in FILENAMES})

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("command", [["data"], ["data", "list"], ["data", "fetch"]])
def test_every_command_has_help_with_an_example(command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output and "darkbp data" in result.output


def test_list_with_nothing_installed(tmp_path):
    result = run("data", "list")
    assert result.exit_code == 0, result.output
    cache = tmp_path / "xdg" / "darkbp"
    assert "missing" in line_with(result.output, str(cache / "mnist"))
    assert "missing" in line_with(result.output, str(cache / "fashion-mnist"))
    assert "fallback (used)" in line_with(result.output, str(SAMPLE_DIR))
    assert "/usr/share/datasets/fashion-mnist" in result.output


def test_list_with_the_shared_datasets(tmp_path, monkeypatch):
    if not SHARED:
        pytest.skip("DARKBP_DATA is not set (CI sets it to the shared datasets)")
    monkeypatch.setenv("DARKBP_DATA", SHARED)
    result = run("data", "list")
    assert result.exit_code == 0, result.output
    assert "found (used)" in line_with(result.output, str(Path(SHARED) / "mnist"))
    assert "found (used)" in line_with(result.output, str(Path(SHARED) / "fashion-mnist"))
    sample = line_with(result.output, str(SAMPLE_DIR))
    assert "fallback" in sample and "used" not in sample


def test_list_shows_an_incomplete_folder(tmp_path):
    folder = tmp_path / "dd" / "mnist"
    folder.mkdir(parents=True)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    result = run("data", "list", "--data-dir", str(tmp_path / "dd"))
    assert result.exit_code == 0, result.output
    row = line_with(result.output, str(folder))
    assert "incomplete, lacks train-images-idx3-ubyte[.gz], t10k-images-idx3-ubyte[.gz]" in row


def test_fetch_into_the_cache(tmp_path, mirror):
    result = run("data", "fetch", "mnist", "--mirror", mirror)
    assert result.exit_code == 0, result.output
    cache = tmp_path / "xdg" / "darkbp" / "mnist"
    assert f"mnist: downloaded 4 file(s) into {cache}" in result.output
    assert "does not look in" not in result.output
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILENAMES)

    again = run("data", "fetch", "mnist", "--mirror", mirror)
    assert again.exit_code == 0
    assert f"mnist: 4 file(s) already in {cache} with the right md5" in again.output
    assert "downloaded" not in again.output


def test_fetch_to_a_folder_darkbp_does_not_search(tmp_path, mirror):
    result = run("data", "fetch", "mnist", "--mirror", mirror, "--dest", str(tmp_path / "mine"))
    assert result.exit_code == 0, result.output
    assert f"darkbp does not look in {tmp_path / 'mine'} by itself: pass --data" in result.output
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == sorted(FILENAMES)


def test_fetch_without_network_is_a_clean_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("data", "fetch", "mnist", "--mirror", f"http://127.0.0.1:{port}/")
    assert result.exit_code == 2
    assert result.output.startswith("darkbp: error: cannot download mnist:")
    assert "put the four files" in result.output
    assert "Traceback" not in result.output


def test_fetch_unknown_dataset_is_a_usage_error():
    result = run("data", "fetch", "cifar")
    assert result.exit_code == 2
    assert "'cifar' is not one of 'mnist', 'fashion-mnist'" in result.output
