"""IDX reader and writer: files built byte by byte here, and the real MNIST files."""

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from darkbp.errors import DarkbpError
from darkbp.idx import read_idx, write_idx


def images_bytes(images: np.ndarray) -> bytes:
    """An IDX image file as the format describes it: magic 0x803, N, rows, cols, pixels."""
    n, rows, cols = images.shape
    return struct.pack(">IIII", 0x00000803, n, rows, cols) + images.tobytes()


def labels_bytes(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x00000801, len(labels)) + labels.tobytes()


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)


def test_reads_plain_image_file(tmp_path, images):
    path = tmp_path / "imgs"
    path.write_bytes(images_bytes(images))
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (3, 28, 28)
    np.testing.assert_array_equal(out, images)


def test_reads_gzipped_label_file(tmp_path):
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(labels_bytes(labels)))
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (5,)
    np.testing.assert_array_equal(out, labels)


def test_gzip_is_decided_by_content_not_name(tmp_path, images):
    gz_without_suffix = tmp_path / "imgs"
    gz_without_suffix.write_bytes(gzip.compress(images_bytes(images)))
    plain_with_suffix = tmp_path / "imgs.gz"
    plain_with_suffix.write_bytes(images_bytes(images))
    np.testing.assert_array_equal(read_idx(gz_without_suffix), images)
    np.testing.assert_array_equal(read_idx(plain_with_suffix), images)


def test_result_is_writable(tmp_path, images):
    path = tmp_path / "imgs"
    path.write_bytes(images_bytes(images))
    out = read_idx(path)
    out[0, 0, 0] = 1  # raises if it were a read-only view of the file's bytes


def test_writer_produces_the_format_bytes(tmp_path, images):
    write_idx(tmp_path / "a.gz", images)
    write_idx(tmp_path / "b", images, gzip=False)
    labels = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "c.gz", labels)
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == images_bytes(images)
    assert (tmp_path / "b").read_bytes() == images_bytes(images)
    assert gzip.decompress((tmp_path / "c.gz").read_bytes()) == labels_bytes(labels)


def test_writer_gzip_has_no_timestamp(tmp_path, images):
    # RFC 1952: bytes 4-7 of a gzip header are MTIME; zero keeps the sample reproducible.
    write_idx(tmp_path / "a.gz", images)
    assert (tmp_path / "a.gz").read_bytes()[4:8] == b"\0\0\0\0"


@pytest.mark.parametrize("array", [np.zeros((2, 28, 28), np.float32), np.zeros((2, 28), np.uint8)])
def test_writer_refuses_other_arrays(tmp_path, array):
    with pytest.raises(ValueError):
        write_idx(tmp_path / "x.gz", array)


def error_for(tmp_path, content: bytes, name: str = "bad-idx") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DarkbpError) as caught:
        read_idx(path)
    assert caught.value.file == str(path)
    assert str(path) in str(caught.value)
    return caught.value.message


def test_truncated_data_says_how_much(tmp_path, images):
    message = error_for(tmp_path, images_bytes(images)[:16 + 1000])
    assert message == "truncated: expected 2352 bytes of data (3 x 28 x 28), found 1000"


def test_truncated_inside_gzip_too(tmp_path, images):
    message = error_for(tmp_path, gzip.compress(images_bytes(images)[:-5]), "x.gz")
    assert message == "truncated: expected 2352 bytes of data (3 x 28 x 28), found 2347"


def test_over_long_file(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    message = error_for(tmp_path, labels_bytes(labels) + b"\0\0\0")
    assert message == "too long: expected 10 bytes of data (10), found 13 (3 extra)"


def test_truncated_header(tmp_path):
    message = error_for(tmp_path, struct.pack(">II", 0x803, 5))
    assert message == "truncated: the header needs 16 bytes, the file has 8"


def test_empty_file(tmp_path):
    assert "too short" in error_for(tmp_path, b"")


def test_wrong_magic_is_not_idx(tmp_path):
    message = error_for(tmp_path, b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert message.startswith("not an IDX file: magic number 0x89504E47")
    assert "0x00000801" in message and "0x00000803" in message


def test_float_idx_is_refused(tmp_path):
    message = error_for(tmp_path, struct.pack(">II", 0x00000D01, 1) + bytes(4))
    assert "type code 0x0D (float32) is not supported" in message


def test_two_dimensional_idx_is_refused(tmp_path):
    message = error_for(tmp_path, struct.pack(">III", 0x00000802, 2, 2) + bytes(4))
    assert "2 dimensions" in message


def test_gzip_stream_cut_short(tmp_path, images):
    compressed = gzip.compress(images_bytes(images))
    message = error_for(tmp_path, compressed[: len(compressed) // 2], "x.gz")
    assert message.startswith("corrupt gzip stream")
    assert "ends early" in message


def test_gzip_stream_with_flipped_bytes(tmp_path, images):
    compressed = bytearray(gzip.compress(images_bytes(images)))
    compressed[-6] ^= 0xFF  # inside the CRC32 trailer
    message = error_for(tmp_path, bytes(compressed), "x.gz")
    assert message.startswith("corrupt gzip stream")


def test_missing_file(tmp_path):
    with pytest.raises(DarkbpError, match="cannot read"):
        read_idx(tmp_path / "nope.gz")


def shared_mnist() -> Path:
    if not os.environ.get("DARKBP_DATA"):
        pytest.skip("DARKBP_DATA is not set (CI sets it to the shared datasets)")
    return Path(os.environ["DARKBP_DATA"]) / "mnist"


def test_real_mnist_test_labels():
    labels = read_idx(shared_mnist() / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,)
    # Per-digit counts published with MNIST (shared/data/mnist/README.md).
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist_train_images():
    images = read_idx(shared_mnist() / "train-images-idx3-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    # md5 of the decompressed official file, from shared/data/mnist/README.md.
    assert hashlib.md5(images_bytes(images)).hexdigest() == "6bbc9ace898e44ae57da46a324031adb"
