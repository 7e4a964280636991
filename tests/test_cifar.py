"""CIFAR-10's binary version: `darkbp data fetch cifar10` and `load_cifar10`.

The archive is built here in CIFAR-10's exact binary layout from real MNIST
digits (the sample shipped in data/mnist-sample): each image's red, green and
blue planes are three different digits, padded from 28x28 to 32x32, so a
reader that mixes up planes, rows and columns cannot pass. The archive is
served by an HTTP server on 127.0.0.1; no test contacts any other address.
The files hold 20 records each instead of the official 10,000 (cifar.RECORDS
is patched, as the md5 is).
"""

import gzip
import hashlib
import http.server
import io
import socket
import tarfile
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from darkbp import catalogue, cifar
from darkbp.cifar import load_cifar10
from darkbp.cli import main
from darkbp.datasets import load_dataset
from darkbp.errors import DarkbpError

from conftest import ROOT

RECORDS = 20
FOLDER = "cifar-10-batches-bin"
BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck"]
META = "\n".join(CLASSES).encode() + b"\n\n"  # the official file ends with a blank line
README = b"<html><body>CIFAR-10</body></html>\n"


def mnist_sample(n):
    """The first n training digits of the shipped MNIST sample: (n, 28, 28) uint8 and labels."""
    folder = ROOT / "data" / "mnist-sample"
    images = np.frombuffer(gzip.decompress(
        (folder / "train-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8)
    labels = np.frombuffer(gzip.decompress(
        (folder / "train-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8)
    return images[:n * 784].reshape(n, 28, 28), labels[:n]


@pytest.fixture(scope="module")
def dataset():
    """What the test archive holds: images (120, 32, 32, 3) RGB, labels (120,), and the
    bytes of each .bin file, written record by record as CIFAR-10's page describes."""
    n = RECORDS * len(BATCHES)
    digits, digit_labels = mnist_sample(3 * n)
    padded = np.pad(digits, ((0, 0), (2, 2), (2, 2)))          # (3n, 32, 32)
    red, green, blue = padded[0::3], padded[1::3], 255 - padded[2::3]
    labels = digit_labels[0::3]
    images = np.stack([red, green, blue], axis=-1)               # (n, 32, 32, 3)
    files = {}
    for f, name in enumerate(BATCHES):
        records = [bytes([labels[i]]) + red[i].tobytes() + green[i].tobytes() + blue[i].tobytes()
                   for i in range(f * RECORDS, (f + 1) * RECORDS)]
        files[name] = b"".join(records)
    assert len(files["data_batch_1.bin"]) == RECORDS * 3073
    assert len(set(labels.tolist())) == 10
    return images, labels, files


def tar_gz(members):
    """A .tar.gz of `members`: (name, bytes) for a file, (name, None) for a folder, or a
    ready TarInfo (for links and other odd members), in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            name, body = member
            info = tarfile.TarInfo(name)
            info.mtime = 1_240_000_000
            if body is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(body), 0o644
                tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def official_layout(files, meta=META):
    """The members in the official archive's order and layout."""
    order = ["data_batch_1.bin", "batches.meta.txt", "data_batch_3.bin", "data_batch_4.bin",
             "test_batch.bin", "readme.html", "data_batch_5.bin", "data_batch_2.bin"]
    bodies = {**files, "batches.meta.txt": meta, "readme.html": README}
    return [(FOLDER, None)] + [(f"{FOLDER}/{name}", bodies[name]) for name in order]


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DARKBP_DATA", raising=False)
    monkeypatch.setattr(cifar, "RECORDS", RECORDS)


class Server:
    """Serves `archive` (bytes) at /cifar-10-binary.tar.gz on 127.0.0.1; else 404."""

    def __init__(self):
        self.archive = b""
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10  # seconds: a stuck client cannot hold the thread forever

            def do_GET(self):
                server.requests.append(self.path)
                if self.path != "/cifar-10-binary.tar.gz":
                    self.send_error(404, "File not found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.archive)))
                self.end_headers()
                self.wfile.write(server.archive)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def serve(self, archive, monkeypatch, md5=None):
        """Serve `archive`, with the catalogue's md5 patched to its own (or to `md5`)."""
        self.archive = archive
        monkeypatch.setitem(catalogue.MD5, "cifar10", {
            "cifar-10-binary.tar.gz": md5 or hashlib.md5(archive).hexdigest()})
        return self.url

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def run(*args):
    return CliRunner().invoke(main, list(args))


def cache(tmp_path):
    return tmp_path / "xdg" / "darkbp" / "cifar10"


def tree(folder):
    """Every path under `folder`, relative, sorted: [] for an empty or missing folder."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def assert_clean_error(result, words):
    assert result.exit_code == 2, result.output
    assert words in result.stderr, result.stderr
    assert result.stderr.startswith("darkbp: error: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


# --- the download, end to end ---------------------------------------------------------------

def test_fetch_unpacks_into_the_cache_and_loads_the_exact_pixels(tmp_path, server, dataset,
                                                                  monkeypatch):
    images, labels, files = dataset
    url = server.serve(tar_gz(official_layout(files)), monkeypatch)
    result = run("data", "fetch", "cifar10", "--mirror", url)
    assert result.exit_code == 0, result.output
    folder = cache(tmp_path) / FOLDER
    assert (f"cifar10: downloaded cifar-10-binary.tar.gz, which matches its published md5, "
            f"and unpacked it into {folder}") in result.output
    assert server.requests == ["/cifar-10-binary.tar.gz"]
    # The folder, its files and nothing else: the archive and temporary files are gone.
    assert tree(cache(tmp_path)) == [FOLDER] + sorted(
        f"{FOLDER}/{name}" for name in [*BATCHES, "batches.meta.txt", "readme.html"])
    for name, body in files.items():
        assert (folder / name).read_bytes() == body
    assert (folder / "batches.meta.txt").read_bytes() == META
    # Modes as `tar xzf` under the umask would give, not a temporary folder's 0700.
    (tmp_path / "plain").mkdir()
    assert folder.stat().st_mode == (tmp_path / "plain").stat().st_mode

    loaded = load_cifar10(cache(tmp_path))
    assert loaded.source == folder
    assert loaded.classes == tuple(CLASSES)
    train = len(BATCHES[:-1]) * RECORDS
    for got, want in [(loaded.train_images, images[:train]), (loaded.test_images, images[train:]),
                      (loaded.train_labels, labels[:train]), (loaded.test_labels, labels[train:])]:
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
    assert loaded.train_images.shape == (100, 32, 32, 3)
    assert loaded.test_images.shape == (20, 32, 32, 3)
    # One pixel read straight off the record layout: byte 1 + plane·1024 + row·32 + column
    # of record 7 in data_batch_2.bin is image 27's (row, column, plane).
    record = files["data_batch_2.bin"][7 * 3073:8 * 3073]
    for plane in range(3):
        assert loaded.train_images[27, 13, 9, plane] == record[1 + plane * 1024 + 13 * 32 + 9]

    listed = run("data", "list")
    row = [line for line in listed.output.splitlines() if str(cache(tmp_path)) in line]
    assert len(row) == 1 and "cifar10" in row[0] and "found (used)" in row[0]

    server.requests.clear()
    again = run("data", "fetch", "cifar10", "--mirror", url)
    assert again.exit_code == 0, again.output
    assert f"cifar10: already complete in {folder}" in again.output
    assert server.requests == []


def test_a_damaged_copy_is_replaced(tmp_path, server, dataset, monkeypatch):
    _, _, files = dataset
    url = server.serve(tar_gz(official_layout(files)), monkeypatch)
    assert run("data", "fetch", "cifar10", "--mirror", url).exit_code == 0
    damaged = cache(tmp_path) / FOLDER / "data_batch_4.bin"
    damaged.write_bytes(files["data_batch_4.bin"][:-3073])  # one record short
    server.requests.clear()
    result = run("data", "fetch", "cifar10", "--mirror", url)
    assert result.exit_code == 0, result.output
    assert server.requests == ["/cifar-10-binary.tar.gz"]
    assert damaged.read_bytes() == files["data_batch_4.bin"]
    assert [p.name for p in cache(tmp_path).iterdir()] == [FOLDER]


def test_fetch_to_dest(tmp_path, server, dataset, monkeypatch):
    images, _, files = dataset
    url = server.serve(tar_gz(official_layout(files)), monkeypatch)
    result = run("data", "fetch", "cifar10", "--mirror", url, "--dest", str(tmp_path / "mine"))
    assert result.exit_code == 0, result.output
    assert f"darkbp does not look in {tmp_path / 'mine'} by itself" in result.output
    assert not cache(tmp_path).exists()
    np.testing.assert_array_equal(load_cifar10(tmp_path / "mine").test_images, images[100:])


def test_wrong_md5_leaves_nothing(tmp_path, server, dataset, monkeypatch):
    _, _, files = dataset
    archive = tar_gz(official_layout(files))
    published = "c32a1d4ab5d03f1284b67883e8d87530"
    url = server.serve(archive, monkeypatch, md5=published)
    result = run("data", "fetch", "cifar10", "--mirror", url)
    assert_clean_error(result, f"cannot download cifar10: {url}cifar-10-binary.tar.gz: checksum "
                               f"mismatch: md5 {hashlib.md5(archive).hexdigest()}, expected "
                               f"{published}")
    assert tree(cache(tmp_path)) == []


def test_no_network_says_how_to_unpack_by_hand(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("data", "fetch", "cifar10", "--mirror", f"http://127.0.0.1:{port}/")
    assert_clean_error(result, "cannot connect")
    assert (f"Without network, unpack cifar-10-binary.tar.gz by hand (tar xzf "
            f"cifar-10-binary.tar.gz) into one of these folders, e.g. {cache(tmp_path)}, so "
            f"that it holds cifar-10-batches-bin/") in result.stderr
    assert tree(cache(tmp_path)) == []


def test_the_official_archive_is_what_the_catalogue_names():
    # Copied from https://www.cs.toronto.edu/~kriz/cifar.html, "CIFAR-10 binary version
    # (suitable for C programs)": its link and md5sum.
    archive = catalogue.ARCHIVES["cifar10"]
    assert catalogue.MIRRORS["cifar10"][0] + archive.file == \
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    assert catalogue.MD5["cifar10"] == {archive.file: "c32a1d4ab5d03f1284b67883e8d87530"}
    assert archive.folder == FOLDER
    assert catalogue.CLASSES["cifar10"] == tuple(CLASSES)


# --- archives that must not be unpacked -------------------------------------------------------

def link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("member, words", [
    ((f"{FOLDER}/../evil.bin", b"x"), f"it holds the file '{FOLDER}/../evil.bin'"),
    (("../evil.bin", b"x"), "it holds the file '../evil.bin'"),
    (("/tmp/evil.bin", b"x"), "it holds the file '/tmp/evil.bin'"),
    (("elsewhere/evil.bin", b"x"), "it holds the file 'elsewhere/evil.bin'"),
    ((f"{FOLDER}/sub/evil.bin", b"x"), f"it holds the file '{FOLDER}/sub/evil.bin'"),
    ((f"{FOLDER}/sub", None), f"it holds the folder '{FOLDER}/sub'"),
    (link(f"{FOLDER}/evil.bin", "../../evil.bin"), f"it holds the link '{FOLDER}/evil.bin'"),
    (link(f"{FOLDER}/evil.bin", f"{FOLDER}/test_batch.bin", tarfile.LNKTYPE),
     f"it holds the link '{FOLDER}/evil.bin'"),
    (link(f"{FOLDER}/evil.bin", "", tarfile.FIFOTYPE),
     f"it holds the special file '{FOLDER}/evil.bin'"),
])
def test_a_member_outside_the_folder_refuses_the_archive(tmp_path, server, dataset, monkeypatch,
                                                         member, words):
    _, _, files = dataset
    members = official_layout(files)
    members.insert(3, member)  # after some good files: those must not stay either
    url = server.serve(tar_gz(members), monkeypatch)
    result = run("data", "fetch", "cifar10", "--mirror", url)
    assert_clean_error(result, f"refusing to unpack cifar-10-binary.tar.gz: {words}, and darkbp "
                               f"takes only plain files directly inside {FOLDER}/")
    assert tree(cache(tmp_path)) == []
    assert tree(tmp_path / "xdg") == ["darkbp", "darkbp/cifar10"]
    assert not (tmp_path / "xdg" / "darkbp" / "evil.bin").exists()
    assert not (tmp_path / "evil.bin").exists()


def test_a_member_that_comes_twice_refuses_the_archive(tmp_path, server, dataset, monkeypatch):
    _, _, files = dataset
    members = official_layout(files) + [(f"{FOLDER}/test_batch.bin", files["data_batch_1.bin"])]
    url = server.serve(tar_gz(members), monkeypatch)
    result = run("data", "fetch", "cifar10", "--mirror", url)
    assert_clean_error(result, "refusing to unpack cifar-10-binary.tar.gz: test_batch.bin "
                               "comes twice")
    assert tree(cache(tmp_path)) == []


def test_an_archive_with_a_truncated_batch_is_not_installed(tmp_path, server, dataset,
                                                            monkeypatch):
    _, _, files = dataset
    short = dict(files, **{"data_batch_3.bin": files["data_batch_3.bin"][:-100]})
    url = server.serve(tar_gz(official_layout(short)), monkeypatch)
    result = run("data", "fetch", "cifar10", "--mirror", url)
    assert_clean_error(result, f"cifar-10-binary.tar.gz: {FOLDER}/data_batch_3.bin: 61,360 bytes "
                               "(19 records and 2973 bytes), expected exactly 61,460 (20 records "
                               "of 1 label byte + 3072 pixel bytes): a truncated or corrupt "
                               "CIFAR-10 batch")
    assert tree(cache(tmp_path)) == []


def test_an_archive_lacking_a_file_is_not_installed(tmp_path, server, dataset, monkeypatch):
    _, _, files = dataset
    members = [m for m in official_layout(files) if not m[0].endswith("test_batch.bin")]
    url = server.serve(tar_gz(members), monkeypatch)
    result = run("data", "fetch", "cifar10", "--mirror", url)
    assert_clean_error(result, f"cifar-10-binary.tar.gz: {FOLDER}: not a complete CIFAR-10 "
                               "folder: missing test_batch.bin")
    assert tree(cache(tmp_path)) == []


def test_a_corrupt_gzip_is_a_clear_error(tmp_path, server, dataset, monkeypatch):
    _, _, files = dataset
    archive = tar_gz(official_layout(files))
    url = server.serve(archive[:len(archive) // 2], monkeypatch)
    result = run("data", "fetch", "cifar10", "--mirror", url)
    assert_clean_error(result, "cannot unpack cifar-10-binary.tar.gz: ")
    assert tree(cache(tmp_path)) == []


# --- the reader on its own --------------------------------------------------------------------

def write_folder(folder, files, meta=META):
    folder.mkdir(parents=True)
    for name, body in {**files, "batches.meta.txt": meta}.items():
        (folder / name).write_bytes(body)
    return folder


def test_either_folder_can_be_given(tmp_path, dataset):
    images, labels, files = dataset
    inner = write_folder(tmp_path / "here" / FOLDER, files)
    for folder in (tmp_path / "here", inner):
        loaded = load_cifar10(folder)
        assert loaded.source == inner
        np.testing.assert_array_equal(loaded.train_images, images[:100])
        np.testing.assert_array_equal(loaded.test_labels, labels[100:])


@pytest.mark.parametrize("change, message", [
    (lambda body: body[:-1], "61,459 bytes (19 records and 3072 bytes), expected exactly 61,460"),
    (lambda body: body[:-3073], "58,387 bytes (19 records), expected exactly 61,460"),
    (lambda body: body + b"\0", "61,461 bytes (20 records and 1 bytes), expected exactly 61,460"),
    (lambda body: b"", "0 bytes (0 records), expected exactly 61,460"),
])
def test_a_file_of_the_wrong_length_is_named(tmp_path, dataset, change, message):
    _, _, files = dataset
    folder = write_folder(tmp_path / FOLDER, dict(files, **{
        "test_batch.bin": change(files["test_batch.bin"])}))
    with pytest.raises(DarkbpError) as caught:
        load_cifar10(folder)
    assert caught.value.file == str(folder / "test_batch.bin")
    assert message in caught.value.message
    assert caught.value.message.endswith("a truncated or corrupt CIFAR-10 batch")


def test_a_label_out_of_range_is_named(tmp_path, dataset):
    _, _, files = dataset
    body = bytearray(files["data_batch_5.bin"])
    body[4 * 3073] = 10
    folder = write_folder(tmp_path / FOLDER, dict(files, **{"data_batch_5.bin": bytes(body)}))
    with pytest.raises(DarkbpError) as caught:
        load_cifar10(folder)
    assert str(caught.value) == (f"{folder / 'data_batch_5.bin'}: label 10 of record 4 is out "
                                 "of range 0..9: a corrupt file")


@pytest.mark.parametrize("meta, message", [
    ("\n".join(CLASSES[:9]).encode(), "9 class names; CIFAR-10 has 10, one per line"),
    (b"airplane\n\n" + "\n".join(CLASSES[1:]).encode(),
     "line 2 is blank; batches.meta.txt holds one class name per line, in label order"),
    (META.replace(b"deer", b"d\xe9er"),
     "not a CIFAR-10 batches.meta.txt: byte 0xE9 at offset 30 is not ASCII"),
])
def test_a_bad_meta_file_is_named(tmp_path, dataset, meta, message):
    _, _, files = dataset
    folder = write_folder(tmp_path / FOLDER, files, meta=meta)
    with pytest.raises(DarkbpError) as caught:
        load_cifar10(folder)
    assert str(caught.value) == f"{folder / 'batches.meta.txt'}: {message}"


def test_a_missing_file_is_named(tmp_path, dataset):
    _, _, files = dataset
    folder = write_folder(tmp_path / FOLDER, {k: v for k, v in files.items()
                                              if k != "data_batch_2.bin"})
    with pytest.raises(DarkbpError) as caught:
        load_cifar10(folder)
    assert str(caught.value) == \
        f"{folder}: not a complete CIFAR-10 folder: missing data_batch_2.bin"


def test_list_shows_an_incomplete_cifar_folder(tmp_path, dataset):
    _, _, files = dataset
    write_folder(tmp_path / "dd" / "cifar10", {"data_batch_1.bin": files["data_batch_1.bin"]})
    result = run("data", "list", "--data-dir", str(tmp_path / "dd"))
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if str(tmp_path / "dd" / "cifar10") in line]
    assert len(rows) == 1
    assert ("incomplete, lacks data_batch_2.bin, data_batch_3.bin, "
            "data_batch_4.bin, data_batch_5.bin, test_batch.bin") in rows[0]
    cached = [line for line in result.output.splitlines() if str(cache(tmp_path)) in line]
    assert len(cached) == 1 and "missing" in cached[0]


CIFAR_CFG = """
[net]
batch=10
width=32
height=32
channels=3
learning_rate=0.01

[convolutional]
filters=4
size=3
stride=2
pad=1
activation=leaky

[connected]
output=10
activation=linear

[softmax]
"""


def test_data_cifar10_trains_on_the_fetched_copy(tmp_path, server, dataset, monkeypatch):
    images, labels, files = dataset
    url = server.serve(tar_gz(official_layout(files)), monkeypatch)
    assert run("data", "fetch", "cifar10", "--mirror", url).exit_code == 0
    loaded = load_dataset("cifar10")
    train = len(BATCHES[:-1]) * RECORDS
    assert loaded.train_images.shape == (train, 3, 32, 32)        # darkbp's (N, C, H, W)
    np.testing.assert_array_equal(loaded.train_images, images[:train].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(loaded.test_labels, labels[train:])
    cfg = tmp_path / "cifar.cfg"
    cfg.write_text(CIFAR_CFG)
    result = run("train", str(cfg), "--data", "cifar10", "--max-batches", "4", "--out",
                 str(tmp_path / "out"), "--threads", "1")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "cifar_final.weights").exists()


def test_data_cifar10_missing_says_how_to_get_it():
    with pytest.raises(DarkbpError, match=r"cifar10 not found; looked in: .*darkbp data fetch "
                                          r"cifar10"):
        load_dataset("cifar10")
