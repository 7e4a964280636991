"""CIFAR-10's binary version, read with NumPy: `load_cifar10(folder)`.

The archive cifar-10-binary.tar.gz unpacks to the folder cifar-10-batches-bin
(https://www.cs.toronto.edu/~kriz/cifar.html):

    data_batch_1.bin ... data_batch_5.bin   the 50,000 training images
    test_batch.bin                          the 10,000 test images
    batches.meta.txt                        the 10 class names, one per line, in label order

Each .bin file is a run of records of 1 label byte and 3072 pixel bytes: the
32x32 red plane, then the green, then the blue, each row by row. The official
files hold 10,000 records each, so each is exactly 30,730,000 bytes; a file of
any other length is truncated or not a CIFAR-10 batch, and an error naming it:
never a silently short dataset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from darkbp.catalogue import ARCHIVES
from darkbp.errors import DarkbpError

ARCHIVE = ARCHIVES["cifar10"]
SIDE = 32
PLANE = SIDE * SIDE
RECORD = 1 + 3 * PLANE   # 3073 bytes: the label, then R, G and B planes
RECORDS = 10_000         # in each .bin file of the official archive
N_CLASSES = 10
META_FILE = "batches.meta.txt"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"


class Cifar10(NamedTuple):
    """CIFAR-10's two splits, in the files' order.

    train_images: (5·RECORDS, 32, 32, 3) uint8, RGB    train_labels: (5·RECORDS,) uint8
    test_images:  (RECORDS, 32, 32, 3) uint8, RGB      test_labels:  (RECORDS,) uint8
    classes: the names in batches.meta.txt, label order
    source: the folder that holds the files
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    source: Path


def batches_folder(folder: str | os.PathLike) -> Path:
    """Where the files are: folder/cifar-10-batches-bin if there is one (the archive
    unpacked into `folder`, which is what `darkbp data fetch` makes), else `folder`."""
    folder = Path(folder)
    inner = folder / ARCHIVE.folder
    return inner if inner.is_dir() else folder


def missing_files(folder: str | os.PathLike) -> list[str]:
    """Which of the seven files batches_folder(folder) lacks; all of them if it does not exist."""
    where = batches_folder(folder)
    return [name for name in ARCHIVE.files if not (where / name).is_file()]


def check_lengths(folder: str | os.PathLike) -> None:
    """Every file is in batches_folder(folder) and each .bin has its exact length.

    Reads no data: tells a complete copy from a missing, partial or truncated one.
    """
    where = batches_folder(folder)
    missing = missing_files(folder)
    if missing:
        raise DarkbpError(f"not a complete CIFAR-10 folder: missing {', '.join(missing)}",
                          file=str(where))
    for name in (*TRAIN_FILES, TEST_FILE):
        _check_length(where / name, (where / name).stat().st_size)


def load_cifar10(folder: str | os.PathLike) -> Cifar10:
    """Read and check the seven files of batches_folder(folder)."""
    check_lengths(folder)
    where = batches_folder(folder)
    classes = read_classes(where / META_FILE)
    train_images = np.empty((len(TRAIN_FILES) * RECORDS, SIDE, SIDE, 3), np.uint8)
    train_labels = np.empty(len(TRAIN_FILES) * RECORDS, np.uint8)
    for i, name in enumerate(TRAIN_FILES):
        part = slice(i * RECORDS, (i + 1) * RECORDS)
        train_images[part], train_labels[part] = read_batch(where / name)
    test_images, test_labels = read_batch(where / TEST_FILE)
    return Cifar10(train_images, train_labels, test_images, test_labels, classes, where)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One .bin file: images (RECORDS, 32, 32, 3) uint8 in RGB order, labels (RECORDS,) uint8."""
    try:
        with open(path, "rb") as file:
            # One byte more than needed, so that a file longer than it should be shows.
            raw = file.read(RECORDS * RECORD + 1)
    except OSError as error:
        raise DarkbpError(f"cannot read: {error.strerror or error}", file=str(path)) from None
    _check_length(path, len(raw))
    records = np.frombuffer(raw, np.uint8).reshape(RECORDS, RECORD)
    labels = records[:, 0].copy()
    # (N, 3·32·32) planes -> (N, 3, 32, 32) -> (N, 32, 32, 3)
    images = np.ascontiguousarray(records[:, 1:].reshape(RECORDS, 3, SIDE, SIDE)
                                  .transpose(0, 2, 3, 1))
    if labels.max() >= N_CLASSES:
        index = int(np.argmax(labels >= N_CLASSES))
        raise DarkbpError(f"label {labels[index]} of record {index} is out of range "
                          f"0..{N_CLASSES - 1}: a corrupt file", file=str(path))
    return images, labels


def read_classes(path: Path) -> tuple[str, ...]:
    """batches.meta.txt: the class names, one per line, in label order (blank lines at the end
    are not names)."""
    try:
        text = path.read_bytes().decode("ascii")
    except OSError as error:
        raise DarkbpError(f"cannot read: {error.strerror or error}", file=str(path)) from None
    except UnicodeDecodeError as error:
        raise DarkbpError(f"not a CIFAR-10 {META_FILE}: byte 0x{error.object[error.start]:02X} "
                          f"at offset {error.start} is not ASCII", file=str(path)) from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if "" in names:
        raise DarkbpError(f"line {names.index('') + 1} is blank; {META_FILE} holds one "
                          "class name per line, in label order", file=str(path))
    if len(names) != N_CLASSES:
        raise DarkbpError(f"{len(names)} class names; CIFAR-10 has {N_CLASSES}, one per line",
                          file=str(path))
    return tuple(names)


def _check_length(path: Path, length: int) -> None:
    expected = RECORDS * RECORD
    if length != expected:
        whole, rest = divmod(length, RECORD)
        over = f" and {rest} bytes" if rest else ""
        raise DarkbpError(
            f"{length:,} bytes ({whole:,} records{over}), expected exactly {expected:,} "
            f"({RECORDS:,} records of 1 label byte + {RECORD - 1} pixel bytes): a truncated "
            "or corrupt CIFAR-10 batch", file=str(path))
