"""The datasets darkbp knows by name, and the folders it looks for them in (SPEC section 6).

What there is to know about a named dataset, in one place: its name (`NAMES`),
the four IDX files by role (`FILES`), its class names (`CLASSES`), the folders
system packages install it into (`SYSTEM_DIRS`), the public mirrors it is
downloaded from (`MIRRORS`) and the published md5 of each file (`MD5`); for a
dataset published as one archive, the folder it unpacks to and the files
darkbp reads there (`ARCHIVES`); and where darkbp looks for it, in order
(`candidates`, `cache_dir`).

Data only: reading the files is `darkbp.datasets` (and `darkbp.cifar`),
downloading them is `darkbp.fetch`. They build on this module, which imports
none of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from darkbp.errors import DarkbpError

NAMES = ("mnist", "fashion-mnist", "cifar10")

# The four files of an MNIST-style dataset, by role: their names without the optional ".gz".
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

CLASSES = {
    "mnist": tuple(str(digit) for digit in range(10)),
    # zalandoresearch/fashion-mnist README, labels 0-9.
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    # batches.meta.txt of the official archive, labels 0-9.
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"),
}

# Folders that system packages install into (Debian's dataset-fashion-mnist).
SYSTEM_DIRS = {"fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),)}

# Tried in this order; the first is the copy torchvision uses (LeCun's own
# site has asked for a login at times).
MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    # The dataset's home page, https://www.cs.toronto.edu/~kriz/cifar.html.
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}

# The published md5 of each downloaded file: MNIST's official .gz files, the
# ones in zalandoresearch/fashion-mnist's README (Debian's fashion-mnist package
# recompressed its copies, so they differ; the reader accepts any valid IDX),
# and the "binary version" on CIFAR-10's home page.
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
}


@dataclass(frozen=True)
class Archive:
    """A dataset published as one .tar.gz (its only file in MD5[name]).

    Every member lies in `folder`, which is what darkbp unpacks, whole, into
    the destination; `files` are the ones in it that darkbp reads.
    """

    file: str
    folder: str
    files: tuple[str, ...]


ARCHIVES = {
    "cifar10": Archive(
        "cifar-10-binary.tar.gz", "cifar-10-batches-bin",
        ("batches.meta.txt", *(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin")),
}


def cache_dir(name: str) -> Path:
    """The user cache folder of a dataset: $XDG_CACHE_HOME/darkbp/NAME or ~/.cache/darkbp/NAME."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says to ignore a relative path.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "darkbp" / name


def candidates(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders a named dataset is looked for in, in order."""
    _check_name(name)
    folders = []
    if data_dir is not None:
        folders += [Path(data_dir) / name, Path(data_dir)]
    if os.environ.get("DARKBP_DATA"):
        folders.append(Path(os.environ["DARKBP_DATA"]) / name)
    folders.append(cache_dir(name))
    folders += SYSTEM_DIRS.get(name, ())
    unique = []
    for folder in folders:
        if folder not in unique:
            unique.append(folder)
    return unique


def _check_name(name: str) -> None:
    if name not in NAMES:
        raise DarkbpError(f"unknown dataset {name!r} (known: {', '.join(NAMES)})")
