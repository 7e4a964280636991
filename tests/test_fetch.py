"""The downloader, for real, against an HTTP server on 127.0.0.1 serving files made here.

No test contacts any other address: the mirror is always the local server (or
a closed local port for "no network").
"""

import hashlib
import http.server
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from darkbp import catalogue
from darkbp import fetch as fetch_module
from darkbp.datasets import load_dataset
from darkbp.errors import DarkbpError
from darkbp.fetch import fetch
from darkbp.idx import write_idx

SHARED = os.environ.get("DARKBP_DATA")  # read at import, before clean_env clears it

FILENAMES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


class Server:
    """Serves `files[url_path] = (body, how)`; how is "ok", "truncate" or "stall". Else 404."""

    def __init__(self):
        self.files = {}
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                if self.path not in server.files:
                    self.send_error(404, "File not found")
                    return
                body, how = server.files[self.path]
                self.send_response(200)
                # "truncate": promise more than is sent, then close the connection.
                promised = len(body) + (1000 if how == "truncate" else 0)
                self.send_header("Content-Length", str(promised))
                self.end_headers()
                if how == "stall":
                    time.sleep(1.0)  # longer than the test's timeout; bounded
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DARKBP_DATA", raising=False)


@pytest.fixture
def fixture_files(tmp_path, monkeypatch):
    """Four small valid IDX .gz files; the md5 table is patched to theirs."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, 30, dtype=np.uint8),
              rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, 10, dtype=np.uint8)]
    folder = tmp_path / "fixtures"
    folder.mkdir()
    bodies = {}
    for name, array in zip(FILENAMES, arrays):
        write_idx(folder / name, array)
        bodies[name] = (folder / name).read_bytes()
    monkeypatch.setitem(catalogue.MD5, "mnist",
                        {name: hashlib.md5(body).hexdigest() for name, body in bodies.items()})
    return bodies


def serve(server, bodies, prefix="/m", how=None):
    for name, body in bodies.items():
        server.files[f"{prefix}/{name}"] = (body, (how or {}).get(name, "ok"))
    return server.url + prefix + "/"


def cache(tmp_path):
    return tmp_path / "xdg" / "darkbp" / "mnist"


def assert_nothing_left(folder: Path, missing: str):
    assert not (folder / missing).exists()
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".part")]


def test_downloads_into_the_cache_and_is_then_found(tmp_path, server, fixture_files):
    report = fetch("mnist", mirror=serve(server, fixture_files))
    assert report.dest == cache(tmp_path)
    assert report.downloaded == FILENAMES and report.present == []
    for name, body in fixture_files.items():
        assert (cache(tmp_path) / name).read_bytes() == body
    loaded = load_dataset("mnist")
    assert not loaded.is_sample and loaded.source == cache(tmp_path)
    assert len(loaded.train_labels) == 30


def test_progress_is_reported_up_to_the_total(tmp_path, server, fixture_files):
    seen = {}
    fetch("mnist", mirror=serve(server, fixture_files),
          on_progress=lambda name, done, total: seen.setdefault(name, []).append((done, total)))
    for name, body in fixture_files.items():
        assert seen[name][0] == (0, len(body))
        assert seen[name][-1] == (len(body), len(body))


def test_files_already_there_are_kept_and_wrong_ones_replaced(tmp_path, server, fixture_files):
    url = serve(server, fixture_files)
    fetch("mnist", mirror=url)
    (cache(tmp_path) / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not it")
    server.requests.clear()
    report = fetch("mnist", mirror=url)
    assert report.downloaded == ["t10k-labels-idx1-ubyte.gz"]
    assert server.requests == ["/m/t10k-labels-idx1-ubyte.gz"]
    assert (cache(tmp_path) / "t10k-labels-idx1-ubyte.gz").read_bytes() == \
        fixture_files["t10k-labels-idx1-ubyte.gz"]


def test_dest_overrides_the_cache(tmp_path, server, fixture_files):
    report = fetch("mnist", dest=tmp_path / "mine", mirror=serve(server, fixture_files))
    assert report.dest == tmp_path / "mine"
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == sorted(FILENAMES)
    assert not cache(tmp_path).exists()


def test_wrong_checksum(tmp_path, server, fixture_files):
    bodies = dict(fixture_files)
    bodies["train-labels-idx1-ubyte.gz"] = fixture_files["t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(DarkbpError) as caught:
        fetch("mnist", mirror=serve(server, bodies))
    expected = hashlib.md5(fixture_files["train-labels-idx1-ubyte.gz"]).hexdigest()
    got = hashlib.md5(fixture_files["t10k-labels-idx1-ubyte.gz"]).hexdigest()
    assert f"train-labels-idx1-ubyte.gz: checksum mismatch: md5 {got}, expected {expected}" \
        in str(caught.value)
    assert_nothing_left(cache(tmp_path), "train-labels-idx1-ubyte.gz")


def test_truncated_transfer(tmp_path, server, fixture_files):
    body = fixture_files["train-images-idx3-ubyte.gz"]
    url = serve(server, fixture_files, how={"train-images-idx3-ubyte.gz": "truncate"})
    with pytest.raises(DarkbpError) as caught:
        fetch("mnist", mirror=url)
    assert (f"truncated transfer: received {len(body)} of {len(body) + 1000} bytes"
            in str(caught.value))
    assert_nothing_left(cache(tmp_path), "train-images-idx3-ubyte.gz")


def test_not_found(tmp_path, server, fixture_files):
    with pytest.raises(DarkbpError) as caught:
        fetch("mnist", mirror=server.url + "/nothing/")
    assert f"{server.url}/nothing/train-images-idx3-ubyte.gz: HTTP 404" in str(caught.value)
    assert_nothing_left(cache(tmp_path), "train-images-idx3-ubyte.gz")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_says_where_to_put_the_files(tmp_path, fixture_files):
    with pytest.raises(DarkbpError) as caught:
        fetch("mnist", mirror=f"http://127.0.0.1:{closed_port()}/")
    message = str(caught.value)
    assert "cannot connect" in message
    assert f"darkbp looks for mnist in: {cache(tmp_path)}" in message
    assert f"by hand into one of these folders, e.g. {cache(tmp_path)}" in message
    assert "t10k-labels-idx1-ubyte.gz" in message


def test_a_silent_server_times_out(tmp_path, server, fixture_files, monkeypatch):
    monkeypatch.setattr(fetch_module, "TIMEOUT", 0.2)
    url = serve(server, fixture_files, how={"train-images-idx3-ubyte.gz": "stall"})
    with pytest.raises(DarkbpError, match="no answer within 0.2 s"):
        fetch("mnist", mirror=url)
    assert_nothing_left(cache(tmp_path), "train-images-idx3-ubyte.gz")


def test_mirrors_are_tried_in_order(tmp_path, server, fixture_files, monkeypatch):
    good = serve(server, fixture_files, prefix="/second")
    monkeypatch.setitem(catalogue.MIRRORS, "mnist", (server.url + "/first/", good))
    report = fetch("mnist")
    assert report.downloaded == FILENAMES
    assert server.requests[:2] == ["/first/train-images-idx3-ubyte.gz",
                                   "/second/train-images-idx3-ubyte.gz"]


def test_all_mirrors_failing_lists_each(tmp_path, server, fixture_files, monkeypatch):
    monkeypatch.setitem(catalogue.MIRRORS, "mnist", (server.url + "/a/", server.url + "/b/"))
    with pytest.raises(DarkbpError) as caught:
        fetch("mnist")
    assert f"{server.url}/a/train-images-idx3-ubyte.gz: HTTP 404" in str(caught.value)
    assert f"{server.url}/b/train-images-idx3-ubyte.gz: HTTP 404" in str(caught.value)


def test_a_local_folder_as_mirror(tmp_path, fixture_files):
    report = fetch("mnist", mirror=(tmp_path / "fixtures").as_uri())
    assert report.downloaded == FILENAMES


def test_load_dataset_downloads_only_when_asked(tmp_path, server, fixture_files, monkeypatch):
    monkeypatch.setitem(catalogue.MIRRORS, "mnist", (serve(server, fixture_files),))
    assert load_dataset("mnist").is_sample  # not asked: no request at all
    assert server.requests == []
    loaded = load_dataset("mnist", download=True)
    assert not loaded.is_sample and loaded.source == cache(tmp_path)
    assert len(server.requests) == 4


@pytest.mark.parametrize("name, mirror, message", [
    ("cifar", None, "unknown dataset 'cifar'"),
    ("mnist", "/some/folder", "is not a URL"),
])
def test_bad_arguments(name, mirror, message):
    with pytest.raises(DarkbpError, match=message):
        fetch(name, mirror=mirror)


def test_mnist_md5_table_matches_the_official_files():
    if not SHARED:
        pytest.skip("DARKBP_DATA is not set (CI sets it to the shared datasets)")
    folder = Path(SHARED) / "mnist"
    for name, md5 in catalogue.MD5["mnist"].items():
        assert hashlib.md5((folder / name).read_bytes()).hexdigest() == md5

