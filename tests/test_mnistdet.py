"""mnist-det (darkbp/mnistdet.py, `darkbp data make mnist-det`) against issue 22's
specification: the files equal a slow reference written from the spec and the module doc's
order of draws (tests/naive_mnistdet.py), and the labels are checked against the pixels of
the written PNGs, read with darkbp's own .data and label file readers."""

import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from darkbp.cli import main
from darkbp.errors import DarkbpError
from darkbp.idx import read_idx, write_idx
from darkbp.imagedata import read_data_file, read_lines
from darkbp.labels import find_label_file, read_label_file
from darkbp.mnistdet import draw_images, make_mnist_det
from naive_mnistdet import iou, naive_split

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "mnist-sample"      # four complete IDX files: used as "full" MNIST
LINE = re.compile(r"\d \d\.\d{6} \d\.\d{6} \d\.\d{6} \d\.\d{6}\n")


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    """No full MNIST anywhere but where a test points (data_dir); the cache in tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DARKBP_DATA", raising=False)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """40 train and 20 valid images, seed 3, from the sample's files as if they were MNIST."""
    out = tmp_path_factory.mktemp("made")
    return make_mnist_det(out, train=40, valid=20, seed=3, data_dir=SAMPLE)


def split_files(data_file: Path, split: str):
    """[(pixels (128, 128, 3) uint8, label file text, boxes (n, 4) relative, classes)] of a
    split, found as a detector finds them: the .data file's list, then each label file."""
    options, warnings = read_data_file(data_file)
    assert warnings == []
    listed = Path(options[split].value)
    files = []
    for image in read_lines(listed):
        found = find_label_file(image, str(listed.parent))
        assert found == image.replace("/images/", "/labels/").replace(".png", ".txt")
        with Image.open(image) as picture:
            assert (picture.format, picture.mode, picture.size) == ("PNG", "RGB", (128, 128))
            pixels = np.asarray(picture)
        boxes, classes = read_label_file(found, classes=10)
        files.append((pixels, Path(found).read_text(), boxes, classes))
    return files


def test_the_files_equal_the_slow_reference(made):
    rng = np.random.default_rng(3)
    for split, images, labels, count in (
            ("valid", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 20),
            ("train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 40)):
        expected = naive_split(rng, read_idx(SAMPLE / images), read_idx(SAMPLE / labels), count)
        found = split_files(made.data_file, split)
        assert len(found) == count
        for (pixels, text, _, _), (naive_pixels, naive_text, used) in zip(found, expected):
            np.testing.assert_array_equal(pixels, naive_pixels)
            assert text == naive_text


def test_the_layout_and_the_data_file(made):
    folder = made.data_file.parent
    assert (made.train, made.valid, made.notice) == (40, 20, None)
    assert folder.name == "mnist-det" and made.data_file.name == "mnist-det.data"
    options, _ = read_data_file(made.data_file)
    assert {key: option.value for key, option in options.items()} == {
        "classes": "10", "train": str(folder / "train.txt"), "valid": str(folder / "valid.txt"),
        "names": str(folder / "mnist-det.names"), "backup": "backup/"}
    assert (folder / "mnist-det.names").read_text() == "".join(f"{k}\n" for k in range(10))
    for split, count in (("train", 40), ("valid", 20)):
        names = [f"{k:06d}" for k in range(count)]
        assert read_lines(folder / f"{split}.txt") == [
            str(folder / "images" / split / f"{name}.png") for name in names]
        assert sorted(os.listdir(folder / "images" / split)) == [f"{n}.png" for n in names]
        assert sorted(os.listdir(folder / "labels" / split)) == [f"{n}.txt" for n in names]
    assert [p.name for p in folder.parent.iterdir()] == ["mnist-det"]   # no staging left


def test_the_labels_agree_with_the_pixels(made):
    counts, greys, sigmas = [], [], []
    for split in ("train", "valid"):
        for pixels, text, boxes, classes in split_files(made.data_file, split):
            assert all(LINE.fullmatch(line) for line in text.splitlines(keepends=True))
            counts.append(len(boxes))
            # Whole pixels: left, top, right, bottom, right and bottom exclusive.
            edges = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2,
                                    boxes[:, :2] + boxes[:, 2:] / 2], axis=1) * 128
            pixel_edges = np.rint(edges).astype(int)
            np.testing.assert_allclose(edges, pixel_edges, atol=1e-3)
            sizes = pixel_edges[:, 2:] - pixel_edges[:, :2]
            assert sizes.min() >= 1 and sizes.max() <= 48
            assert pixel_edges.min() >= 0 and pixel_edges.max() <= 128
            for i in range(len(boxes)):
                for j in range(i):
                    assert iou(pixel_edges[i], pixel_edges[j]) <= 0.1
            inside = np.zeros((128, 128), bool)
            for left, top, right, bottom in pixel_edges:
                box = pixels[top:bottom, left:right]
                # A digit is coloured: the background has one value on all three channels.
                assert (box.min(axis=2) != box.max(axis=2)).any()
                inside[top:bottom, left:right] = True
            # A pixel of unequal channels with one above 32 is ink of a digit pixel above
            # 32 (colour <= 255), so it lies in that digit's box.
            ink = (pixels.min(axis=2) != pixels.max(axis=2)) & (pixels.max(axis=2) > 32)
            assert not (ink & ~inside).any()
            grey = pixels[..., 0][(pixels.min(axis=2) == pixels.max(axis=2)) & ~inside]
            greys.append(np.median(grey))
            if np.median(grey) > 32:                   # far from 0, where noise is clipped
                sigmas.append(grey.std())
    assert set(counts) <= {1, 2, 3, 4} and len(set(counts)) > 2
    assert 0 <= min(greys) and max(greys) <= 64 + 1
    assert 7.5 < np.mean(sigmas) < 8.5


def test_digits_are_drawn_once_from_the_split_pool(tmp_path):
    # A 60,000-digit training file and a 6,000-digit test file: past each split's pool (the
    # first 50,000 and 5,000) every digit is a 9, as is every blank digit in the pool (a
    # blank digit has an empty box and is drawn again), so no 9 may appear.
    sample = read_idx(SAMPLE / "train-images-idx3-ubyte.gz")
    sample_labels = np.minimum(read_idx(SAMPLE / "train-labels-idx1-ubyte.gz"), 8)
    for prefix, total, pool in (("train", 60_000, 50_000), ("t10k", 6_000, 5_000)):
        images = sample[np.arange(total) % len(sample)]
        labels = sample_labels[np.arange(total) % len(sample)]
        images[:pool:3] = 0
        labels[:pool:3] = 9
        labels[pool:] = 9
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images, gzip=False)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels, gzip=False)
    made = make_mnist_det(tmp_path / "out", train=30, valid=30, seed=5, data_dir=tmp_path)
    for split in ("train", "valid"):
        classes = np.concatenate([c for *_, c in split_files(made.data_file, split)])
        assert len(classes) > 60 and 9 not in classes

    pool = sample[:400]
    drawn = list(draw_images(np.random.default_rng(1), pool, sample_labels[:400], 100))
    digits = np.concatenate([d.digits for d in drawn])
    assert len(digits) > 200 and len(np.unique(digits)) == len(digits)
    np.testing.assert_array_equal(np.concatenate([d.classes for d in drawn]),
                                  sample_labels[digits])
    blank = np.zeros((8, 28, 28), np.uint8)
    with pytest.raises(DarkbpError, match="ran out of digits"):
        list(draw_images(np.random.default_rng(1), blank, np.zeros(8, np.uint8), 1))


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under folder by relative path, its bytes with the folder's path removed."""
    return {str(path.relative_to(folder)): path.read_bytes().replace(bytes(folder), b"ROOT")
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_seed_gives_the_same_bytes_and_another_seed_others(tmp_path):
    made = [make_mnist_det(tmp_path / name, train=4, valid=3, seed=seed, data_dir=SAMPLE)
            for name, seed in (("a", 7), ("b", 7), ("c", 8))]
    a, b, c = (tree(m.data_file.parent) for m in made)
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[name] != c[name] for name in a if "/" in name and "names" not in name)


def test_without_full_mnist_the_sample_gives_fewer_images_and_says_so(tmp_path):
    made = make_mnist_det(tmp_path, train=3, valid=2)
    assert (made.train, made.valid) == (3, 2)
    assert "sample shipped with darkbp" in made.notice
    assert "3 train and 2 valid images" in made.notice and "asked" not in made.notice
    assert str(SAMPLE) in made.data_file.read_text().splitlines()[0]

    result = CliRunner().invoke(main, ["data", "make", "mnist-det", "--out", str(tmp_path),
                                       "--train", "1001", "--valid", "251"])
    assert result.exit_code == 0, result.output
    assert "sample has 1,000 train and 250 valid images (asked for 1,001 train and 251 " \
           "valid" in result.output
    assert f"data file {tmp_path}/mnist-det/mnist-det.data" in result.output
    assert len(read_lines(tmp_path / "mnist-det" / "train.txt")) == 1000
    assert len(read_lines(tmp_path / "mnist-det" / "valid.txt")) == 250


def test_the_command_writes_into_the_cache_by_default(tmp_path):
    result = CliRunner().invoke(main, ["data", "make", "mnist-det", "--train", "2",
                                       "--valid", "1", "--seed", "4"])
    assert result.exit_code == 0, result.output
    data_file = tmp_path / "xdg" / "darkbp" / "mnist-det" / "mnist-det.data"
    assert f"2 train and 1 valid images; data file {data_file}" in result.output
    assert len(split_files(data_file, "train")) == 2


@pytest.mark.parametrize("args, message", [
    (["--train", "0"], "train must be a whole number of at least 1, not 0"),
    (["--valid", "-3"], "valid must be a whole number of at least 1, not -3"),
    (["--seed", "-1"], "seed must be a whole number of at least 0, not -1"),
])
def test_bad_numbers_are_one_line_and_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(main, ["data", "make", "mnist-det", "--out", str(tmp_path),
                                       *args])
    assert result.exit_code == 2
    assert result.output == f"darkbp: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


def test_more_images_than_full_mnist_allows_is_an_error(tmp_path):
    with pytest.raises(DarkbpError, match="asked for 1,001 train images: at most 1,000 from "
                       "the 4,000 MNIST training digits"):
        make_mnist_det(tmp_path, train=1001, valid=1, data_dir=SAMPLE)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_make_leaves_the_earlier_folder_as_it_was(tmp_path):
    first = make_mnist_det(tmp_path, train=2, valid=1, seed=1, data_dir=SAMPLE)
    before = tree(tmp_path / "mnist-det")

    def stop(split, done, total):
        if split == "train":
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        make_mnist_det(tmp_path, train=5, valid=1, seed=2, data_dir=SAMPLE, progress=stop)
    assert [p.name for p in tmp_path.iterdir()] == ["mnist-det"]
    assert tree(tmp_path / "mnist-det") == before

    second = make_mnist_det(tmp_path, train=5, valid=1, seed=2, data_dir=SAMPLE)
    assert second.data_file == first.data_file
    assert len(read_lines(tmp_path / "mnist-det" / "train.txt")) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["mnist-det"]


def test_a_folder_that_is_not_mnist_det_is_not_replaced(tmp_path):
    (tmp_path / "mnist-det").mkdir()
    (tmp_path / "mnist-det" / "mine.txt").write_text("keep")
    with pytest.raises(DarkbpError, match="is not a mnist-det folder"):
        make_mnist_det(tmp_path, train=1, valid=1, data_dir=SAMPLE)
    assert [p.name for p in (tmp_path / "mnist-det").iterdir()] == ["mine.txt"]
