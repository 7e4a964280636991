"""Darknet's classifier data (darkbp.imagedata): .data files, lists and labels, image folders,
PNG/JPEG decoding, Darknet's resize and `classifier valid` preprocessing, top-k; and the
quality bar: a PNG copy of Fashion-MNIST trains cfg/mnist.cfg as its IDX copy does.

The references are loops transcribed from Darknet's C (src/image.c resize_image,
resize_min, crop_image; src/utils.c top_k), Pillow's own conversions, torch's bilinear
interpolation and arrays the tests wrote themselves.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from darkbp import imagedata
from darkbp.cli import main
from darkbp.datasets import Dataset, load_dataset, network_input
from darkbp.errors import DarkbpError
from darkbp.evaluate import check_fits, evaluate, top_k
from darkbp.idx import read_idx, write_idx
from darkbp.imagedata import (ImageList, load_data_file, load_image_folder, luma, preprocess,
                              read_data_file, read_image, resize)
from darkbp.network import parse_network
from darkbp.passes import EVAL
from darkbp.train import Trainer, TrainOptions
from darkbp.weights import save_weights
from tests.conftest import CFG_DIR, data_root

DATA = data_root()     # read once
LINEAR_CFG = "[net]\nbatch=8\nwidth=28\nheight=28\nchannels={c}\nlearning_rate=0.01\n" \
             "[connected]\noutput={k}\nactivation=linear\n[softmax]\n"
# Fashion-MNIST's classes as path words: none is a substring of another ("shirt" is in
# "tshirt", so T-shirt/top is "top").
FASHION_WORDS = ["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                 "bag", "boot"]
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"]


# ---------------------------------------------------------------------- helpers

def write_png(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path)
    return path


def write_darknet_copy(folder: Path, splits: dict, words: list[str],
                       names: list[str] | None = None, data_lines: str = "") -> Path:
    """A dataset in Darknet's classifier format: folder/SPLIT/NNNNN_WORD.png for each split
    ("train", "valid") of (images (N, H, W[, 3]) uint8, labels (N,)), the lists SPLIT.list
    (paths relative to folder), labels.txt (the words), names.txt (with `names`) and
    folder/data.data naming them, plus `data_lines`. Returns the .data file."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in splits.items():
        lines = []
        for i, (image, label) in enumerate(zip(images, labels)):
            name = f"{split}/{i:05d}_{words[label]}.png"
            write_png(folder / name, image)
            lines.append(name)
        (folder / f"{split}.list").write_text("\n".join(lines) + "\n")
    (folder / "labels.txt").write_text("\n".join(words) + "\n")
    text = f"classes={len(words)}\ntrain=train.list\nvalid=valid.list\nlabels=labels.txt\n"
    if names is not None:
        (folder / "names.txt").write_text("\n".join(names) + "\n")
        text += "names=names.txt\n"
    path = folder / "data.data"
    path.write_text(text + data_lines)
    return path


def random_split(n: int, classes: int, seed: int, shape=(28, 28)):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, *shape), dtype=np.uint8),
            rng.integers(0, classes, n))


def small_copy(tmp_path: Path, classes: int = 3, **kwargs) -> Path:
    """A 24-train, 12-valid random-pixel copy of `classes` classes (words c0, c1, ...)."""
    words = [f"c{k}" for k in range(classes)]
    splits = {"train": random_split(24, classes, 1), "valid": random_split(12, classes, 2)}
    return write_darknet_copy(tmp_path / "d", splits, words, **kwargs)


def linear_cfg(tmp_path: Path, channels: int = 1, classes: int = 3) -> Path:
    path = tmp_path / "linear.cfg"
    path.write_text(LINEAR_CFG.format(c=channels, k=classes))
    return path


def assert_cli_error(args: list[str], where: str, *words: str):
    """The command exits 2 with one line `darkbp: error: WHERE...` holding `words`, the
    last on stderr; any before it are the bars of images decoded, and stdout is empty."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    *before, last = result.stderr.splitlines()
    assert last.startswith(f"darkbp: error: {where}"), result.stderr
    assert all(line.startswith("decoding ") or not line.strip() for line in before), \
        result.stderr
    for word in words:
        assert word in last, (word, result.stderr)
    return result


def train_args(cfg: Path, data: Path, out: Path, *more: str) -> list[str]:
    return ["train", str(cfg), "--data", str(data), "--out", str(out), "--threads", "1", *more]


# ---------------------------------------------------------------------- references from C

def darknet_resize_columns(im: np.ndarray, w: int) -> np.ndarray:
    """The first pass of src/image.c resize_image in float32: (C, H, W) -> (C, H, w)."""
    c, ih, iw = im.shape
    f32 = np.float32
    part = np.zeros((c, ih, w), f32)
    w_scale = f32(iw - 1) / f32(w - 1)
    for k in range(c):
        for r in range(ih):
            for col in range(w):
                if col == w - 1 or iw == 1:
                    val = im[k, r, iw - 1]
                else:
                    sx = f32(col) * w_scale
                    ix = int(sx)
                    dx = sx - f32(ix)
                    val = (f32(1) - dx) * im[k, r, ix] + dx * im[k, r, ix + 1]
                part[k, r, col] = val
    return part


def darknet_resize_image(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """src/image.c resize_image, loop by loop in float32: (C, H, W) -> (C, h, w)."""
    c, ih, iw = im.shape
    f32 = np.float32
    part = darknet_resize_columns(im, w)
    h_scale = f32(ih - 1) / f32(h - 1)
    resized = np.zeros((c, h, w), f32)
    for k in range(c):
        for r in range(h):
            sy = f32(r) * h_scale
            iy = int(sy)
            dy = sy - f32(iy)
            for col in range(w):
                resized[k, r, col] = (f32(1) - dy) * part[k, iy, col]
            if r == h - 1 or ih == 1:
                continue
            for col in range(w):
                resized[k, r, col] += dy * part[k, iy + 1, col]
    return resized


def c_div(a: int, b: int) -> int:
    """C's integer division: truncation toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def darknet_valid(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """validate_classifier_single's preprocessing: resize_min(im, w), then crop_image at
    ((rw - w)/2, (rh - h)/2), pixels outside clamped to the edge. uint8 -> float32."""
    c, ih, iw = im.shape
    x = im.astype(np.float32)
    if iw < ih:
        rh, rw = c_div(ih * w, iw), w
    else:
        rw, rh = c_div(iw * w, ih), w
    if (rw, rh) != (iw, ih):
        x = darknet_resize_image(x, rw, rh)
    dx, dy = c_div(rw - w, 2), c_div(rh - h, 2)
    out = np.zeros((c, h, w), np.float32)
    for k in range(c):
        for j in range(h):
            for i in range(w):
                r = min(max(j + dy, 0), rh - 1)
                col = min(max(i + dx, 0), rw - 1)
                out[k, j, i] = x[k, r, col]
    return out


def last_row_quirk(ih: int, h: int) -> bool:
    """Whether Darknet's float32 (h - 1)·scale falls below ih - 1 (its last row ≈ 0)."""
    scale = np.float32(ih - 1) / np.float32(h - 1)
    return int(np.float32(h - 1) * scale) < ih - 1


def darknet_top_k(a, k: int) -> list[int]:
    """src/utils.c top_k: the k largest, earlier indexes first among equals."""
    index = [-1] * k
    for i in range(len(a)):
        curr = i
        for j in range(k):
            if curr < 0:
                break
            if index[j] < 0 or a[curr] > a[index[j]]:
                index[j], curr = curr, index[j]
    return index


# ---------------------------------------------------------------------- .data files

def test_data_file_is_read_with_darknets_rules(tmp_path):
    path = small_copy(tmp_path)
    path.write_text("# a comment\n; another\n\n  cla sses = 3 \r\n"
                    "train\t=\ttrain.list\nvalid=valid.list\nlabels=labels.txt\n"
                    "classes=7\n"             # the first of two equal keys counts
                    "top=2\nbackup=runs/x\neval=imagenet\nvlaid=valid.list\n")
    options, warnings = read_data_file(path)
    assert {key: option.value for key, option in options.items()} == {
        "classes": "3", "train": "train.list", "valid": "valid.list", "labels": "labels.txt",
        "top": "2", "backup": "runs/x", "eval": "imagenet", "vlaid": "valid.list"}
    assert options["classes"].line == 4
    assert [(w.line, w.message) for w in warnings] == [
        (8, "classes is set again; the first (line 4) counts, as in Darknet"),
        (11, "eval is a Darknet option darkbp does not use"),
        (12, "unknown option vlaid (did you mean valid?)")]
    data = load_data_file(path)
    assert data.top == 2 and data.backup == Path("runs/x")
    assert data.classes == ("c0", "c1", "c2") and data.test_split == "valid list"
    assert len(data.train) == 24 and len(data.test) == 12


def test_labels_match_the_listed_path_as_a_substring(tmp_path):
    folder = tmp_path / "d"
    pixels = np.zeros((4, 4), np.uint8)
    for name in ("a/cat/1.png", "a/dog/2.png", "a/3-bird.png", "a/hotdog_4.png"):
        write_png(folder / name, pixels)
    # Paths as written: CRLF line ends, a blank line, no newline after the last.
    (folder / "train.list").write_text("a/cat/1.png\r\na/dog/2.png\r\n\r\na/3-bird.png")
    (folder / "valid.list").write_text("a/hotdog_4.png\n")
    (folder / "labels.txt").write_text("bird\ncat\ndog\n\n\n")      # trailing blank lines
    (folder / "names.txt").write_text("Bird\nCat\nDog\n")
    (folder / "x.data").write_text("classes=3\ntrain=train.list\nvalid=valid.list\n"
                                   "labels=labels.txt\nnames=names.txt\n")
    data = load_data_file(folder / "x.data")
    assert data.train.labels.tolist() == [1, 2, 0]
    assert data.train.paths == tuple(str(folder / p) for p in
                                     ("a/cat/1.png", "a/dog/2.png", "a/3-bird.png"))
    assert data.test.labels.tolist() == [2]                        # "hotdog" holds "dog"
    assert data.classes == ("Bird", "Cat", "Dog")                   # names for display


def test_names_alone_label_the_paths(tmp_path):
    path = small_copy(tmp_path)
    text = path.read_text().replace("labels=labels.txt", "names=labels.txt")
    path.write_text(text)
    data = load_data_file(path)
    assert data.classes == ("c0", "c1", "c2") and len(data.train) == 24


@pytest.mark.parametrize("text, line, words", [
    ("classes=3\ntrain\n", 2, "expected key=value, found 'train'"),
    ("classes=3\ntrain=\n", 2, "'train=' has no value"),
    ("=3\n", 1, "'=3' has no key"),
    ("classes=three\n", 1, "classes=three: expected a whole number of at least 1"),
    ("classes=0\n", 1, "classes=0: expected a whole number"),
    ("classes=4\ntrain=train.list\nvalid=valid.list\nlabels=labels.txt\n", 1,
     "classes=4, but"),
    ("classes=3\ntrain=nope.list\nvalid=valid.list\nlabels=labels.txt\n", 2,
     "train=nope.list: no such file (looked in the current folder, then in"),
    ("classes=3\ntrain=train.list\nvalid=valid.list\nlabels=labels.txt\ntop=-1\n", 5,
     "top=-1: expected a whole number"),
])
def test_bad_data_file_is_one_line_naming_its_line(tmp_path, text, line, words):
    path = small_copy(tmp_path)
    path.write_text(text)
    with pytest.raises(DarkbpError) as caught:
        load_data_file(path)
    assert (caught.value.file, caught.value.line) == (str(path), line)
    assert words in caught.value.message
    assert_cli_error(train_args(linear_cfg(tmp_path), path, tmp_path / "out", "--epochs", "1"),
                     f"{path}:{line}: ", words)
    assert not (tmp_path / "out").exists()


def test_missing_key_names_the_file(tmp_path):
    path = small_copy(tmp_path)
    path.write_text("classes=3\ntrain=train.list\nlabels=labels.txt\n")
    assert_cli_error(train_args(linear_cfg(tmp_path), path, tmp_path / "out", "--epochs", "1"),
                     f"{path}: ", "no valid= line")


def test_classes_against_the_labels_and_the_network(tmp_path):
    path = small_copy(tmp_path)
    (path.parent / "labels.txt").write_text("c0\nc1\nc2\nc3\n")
    assert_cli_error(train_args(linear_cfg(tmp_path), path, tmp_path / "out", "--epochs", "1"),
                     f"{path}:1: ", "classes=3, but", "labels.txt holds 4 labels")
    (path.parent / "labels.txt").write_text("c0\nc1\nc2\n")
    cfg = linear_cfg(tmp_path, classes=10)
    assert_cli_error(train_args(cfg, path, tmp_path / "out", "--epochs", "1"),
                     f"{cfg}: ", "the last layer has 10 outputs, but", "has 3 classes")
    assert not (tmp_path / "out").exists()


def test_names_must_count_as_many_as_labels(tmp_path):
    path = small_copy(tmp_path, names=["zero", "one"])
    with pytest.raises(DarkbpError, match="holds 2 names for the 3 labels") as caught:
        load_data_file(path)
    assert caught.value.line == 5


@pytest.mark.parametrize("labels, line, words", [
    ("c0\n\nc1\n", 2, "an empty label: it would match every path"),
    ("c0\nc1\nc0\n", 3, "label 'c0' is also on line 1"),
    ("\n\n", None, "holds no labels"),
])
def test_bad_labels_file(tmp_path, labels, line, words):
    path = small_copy(tmp_path)
    (path.parent / "labels.txt").write_text(labels)
    with pytest.raises(DarkbpError) as caught:
        load_data_file(path)
    assert caught.value.file == str(path.parent / "labels.txt")
    assert caught.value.line == line and words in caught.value.message


def test_every_path_is_checked_with_counts_and_the_first_few(tmp_path):
    path = small_copy(tmp_path)
    listing = path.parent / "train.list"
    lines = listing.read_text().splitlines()
    # Lines 3, 5, 7, 9 lose their label; lines 4 and 6 get two.
    for number in (3, 5, 7, 9):
        lines[number - 1] = lines[number - 1].replace("_c", "_x")
    for number in (4, 6):
        lines[number - 1] = lines[number - 1].replace(".png", "c1.png")
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(DarkbpError) as caught:
        load_data_file(path)
    message = caught.value.message
    assert caught.value.file == str(listing) and caught.value.line is None
    assert message.startswith(f"4 of 24 paths contain none of the 3 labels of "
                              f"{path.parent / 'labels.txt'}: {lines[2]!r} (line 3), "
                              f"{lines[4]!r} (line 5), {lines[6]!r} (line 7), ...; ")
    original = random_split(24, 3, 1)[1]                  # small_copy's train labels
    both = [", ".join(f"'c{k}'" for k in sorted({original[i], 1})) for i in (3, 5)]
    assert message.endswith(f"; 2 of 24 paths contain several labels: {lines[3]!r} (line 4: "
                            f"{both[0]}), {lines[5]!r} (line 6: {both[1]})")
    assert_cli_error(train_args(linear_cfg(tmp_path), path, tmp_path / "out", "--epochs", "1"),
                     f"{listing}: ", "4 of 24 paths contain none")


def test_several_labels_when_one_is_inside_another(tmp_path):
    words = ["tshirt", "shirt"]           # "shirt" is in every tshirt path
    path = write_darknet_copy(tmp_path / "d", {"train": random_split(4, 2, 0),
                                               "valid": random_split(2, 2, 1)}, words)
    with pytest.raises(DarkbpError, match="paths contain several labels: .*'tshirt', 'shirt'"):
        load_data_file(path)


def test_missing_images_are_counted(tmp_path):
    path = small_copy(tmp_path)
    listing = path.parent / "valid.list"
    lines = listing.read_text().splitlines()
    for number in (2, 12):
        (path.parent / lines[number - 1]).unlink()
    with pytest.raises(DarkbpError) as caught:
        load_data_file(path)
    assert caught.value.file == str(listing)
    assert caught.value.message == (
        f"2 of 12 images do not exist (looked in the current folder, then in {path.parent}): "
        f"{lines[1]!r} (line 2), {lines[11]!r} (line 12)")


def test_an_empty_list(tmp_path):
    path = small_copy(tmp_path)
    (path.parent / "valid.list").write_text("\n\n")
    assert_cli_error(train_args(linear_cfg(tmp_path), path, tmp_path / "out", "--epochs", "1"),
                     f"{path.parent / 'valid.list'}: lists no images")


# ---------------------------------------------------------------------- relative paths

def test_paths_relative_to_the_current_folder_as_darknet(tmp_path, monkeypatch):
    # Darknet's layout: run from the darknet folder, every path relative to it.
    root = tmp_path / "darknet"
    write_png(root / "data/x/train/a_c0.png", np.full((4, 4), 10, np.uint8))
    write_png(root / "data/x/train/b_c1.png", np.full((4, 4), 20, np.uint8))
    (root / "data/x/train.list").write_text("data/x/train/a_c0.png\ndata/x/train/b_c1.png\n")
    (root / "data/x/labels.txt").write_text("c0\nc1\n")
    (root / "data/x.data").write_text("classes=2\ntrain=data/x/train.list\n"
                                      "valid=data/x/train.list\nlabels=data/x/labels.txt\n")
    monkeypatch.chdir(root)
    data = load_data_file("data/x.data")
    assert data.train.paths == ("data/x/train/a_c0.png", "data/x/train/b_c1.png")
    # From elsewhere, the .data file's folder (darknet/data) holds no data/x/train.list.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DarkbpError, match=r"labels=data/x/labels.txt: no such file \(looked "
                                          r"in the current folder, then in darknet/data\)"):
        load_data_file("darknet/data/x.data")


def test_the_current_folder_first_then_the_listing_files_folder(tmp_path, monkeypatch):
    here, there = tmp_path / "here", tmp_path / "there"
    write_png(here / "img_c0.png", np.full((4, 4), 200, np.uint8))
    write_png(there / "img_c0.png", np.full((4, 4), 7, np.uint8))
    write_png(there / "only_c1.png", np.full((4, 4), 9, np.uint8))
    (there / "l.list").write_text("img_c0.png\nonly_c1.png\n")
    (there / "labels.txt").write_text("c0\nc1\n")
    (there / "x.data").write_text("classes=2\ntrain=l.list\nvalid=l.list\nlabels=labels.txt\n")
    monkeypatch.chdir(here)
    data = load_data_file(there / "x.data")
    assert data.train.paths == ("img_c0.png", str(there / "only_c1.png"))
    decoded = data.train.decode((1, 4, 4))
    assert decoded[:, 0, 0, 0].tolist() == [200, 9]      # here's img_c0.png, not there's


# ---------------------------------------------------------------------- image folders

def test_image_folder_as_torchvision_reads_it(tmp_path):
    root = tmp_path / "photos"
    grey = np.zeros((4, 4), np.uint8)
    for name in ("train/dog/b.PNG", "train/dog/a.jpg", "train/dog/deeper/c.JPEG",
                 "train/cat/z.png", "train/cat/.hidden.png", "train/.git/x.png",
                 "val/dog/v.png", "test/cat/t.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grey).save(root / name, "PNG" if name.endswith(("png", "PNG"))
                                   else "JPEG")
    (root / "train/cat/notes.txt").write_text("not an image")
    dataset = load_dataset(str(root))
    assert dataset.classes == ("cat", "dog")                 # sorted; .git skipped
    train = dataset.train_images
    assert isinstance(train, ImageList)
    assert [Path(p).relative_to(root / "train").as_posix() for p in train.paths] == [
        "cat/z.png", "dog/a.jpg", "dog/b.PNG", "dog/deeper/c.JPEG"]
    assert dataset.train_labels.tolist() == [0, 1, 1, 1]
    assert dataset.test_split == "val split"               # val/ before test/
    assert [Path(p).name for p in dataset.test_images.paths] == ["v.png"]
    assert dataset.test_labels.tolist() == [1]              # dog keeps its train index


@pytest.mark.parametrize("layout, where, words", [
    (["train/a/x.png"], "", "a train/ folder but no val/, valid/ or test/ folder"),
    (["train/a/x.png", "valid/b/y.png"], "valid", "subfolders that are not classes of"),
    (["train/a/x.png", "train/b/notes.txt", "test/a/y.png"], "train/b",
     "holds no .png, .jpg or .jpeg image"),
])
def test_bad_image_folders(tmp_path, layout, where, words):
    root = tmp_path / "photos"
    for name in layout:
        if name.endswith(".png"):
            write_png(root / name, np.zeros((4, 4), np.uint8))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("x")
    with pytest.raises(DarkbpError) as caught:
        load_image_folder(root)
    assert caught.value.file == str(root / where if where else root)
    assert words in caught.value.message


def test_a_folder_with_neither_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DarkbpError, match="neither the four IDX files .* nor a train/ folder"):
        load_dataset(str(tmp_path / "empty"))


# ---------------------------------------------------------------------- decoding

def test_png_pixels_come_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    g, c = write_png(tmp_path / "g.png", grey), write_png(tmp_path / "c.png", rgb)
    np.testing.assert_array_equal(read_image(str(g), 1), grey[None])
    np.testing.assert_array_equal(read_image(str(g), 3), np.stack([grey] * 3))
    np.testing.assert_array_equal(read_image(str(c), 3), rgb.transpose(2, 0, 1))
    # RGB to grey is Pillow's ITU-R 601-2 luma, and luma() computes the same.
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(read_image(str(c), 1), expected[None])
    np.testing.assert_array_equal(luma(rgb.transpose(2, 0, 1)[None]), expected[None, None])
    weights = np.array([0.299, 0.587, 0.114])
    assert np.abs(expected - rgb @ weights).max() <= 0.5 + 1e-9   # 601-2, rounded


def test_other_png_modes(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    path = write_png(tmp_path / "a.png", rgba)
    np.testing.assert_array_equal(read_image(str(path), 3), rgba[..., :3].transpose(2, 0, 1))

    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png")
    assert read_image(str(tmp_path / "p.png"), 3)[:, 0, :].T.tolist() == [[10, 20, 30],
                                                                          [200, 100, 50]]
    # 16 bits: the high byte, as stb_image (Darknet's loader) keeps it.
    deep = np.array([[0, 255, 256, 40000, 65535]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    assert read_image(str(tmp_path / "d.png"), 1).ravel().tolist() == [0, 0, 1, 156, 255]


def test_jpeg_decodes_close_to_what_was_encoded(tmp_path):
    y, x = np.mgrid[0:32, 0:48]
    smooth = np.stack([4 * x, 6 * y, 255 - 3 * x], axis=-1).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "s.jpg", quality=95)
    decoded = read_image(str(tmp_path / "s.jpg"), 3).transpose(1, 2, 0).astype(int)
    assert np.abs(decoded - smooth).mean() < 2


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _broken_files(tmp_path: Path, size: int = 28) -> dict[str, Path]:
    """A truncated PNG, a PNG with its pixel data corrupted, a truncated JPEG, garbage, a
    GIF named .png."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
    png = _png_bytes(pixels)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    idat = png.index(b"IDAT") + 4
    corrupt = png[:idat] + bytes(b ^ 0xFF for b in png[idat:idat + 40]) + png[idat + 40:]
    gif = io.BytesIO()
    Image.fromarray(pixels).save(gif, "GIF")
    files = {"truncated.png": png[:len(png) // 2], "corrupt.png": corrupt,
             "truncated.jpg": jpeg[:len(jpeg) // 2], "garbage.png": b"not an image at all",
             "really-a-gif.png": gif.getvalue()}
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    return paths


def test_broken_images_are_errors_naming_the_file(tmp_path):
    words = {"truncated.png": "cannot decode: image file is truncated",
             "corrupt.png": "cannot decode: broken data stream",
             "truncated.jpg": "cannot decode: image file is truncated",
             "garbage.png": "not a PNG or JPEG image", "really-a-gif.png": "not a PNG or JPEG"}
    for name, path in _broken_files(tmp_path).items():
        with pytest.raises(DarkbpError) as caught:
            read_image(str(path), 1)
        assert caught.value.file == str(path), name
        assert words[name] in caught.value.message, (name, caught.value.message)
    # A file gone after the lists were checked.
    with pytest.raises(DarkbpError, match="cannot read: No such file or directory") as caught:
        read_image(str(tmp_path / "gone.png"), 1)
    assert caught.value.file == str(tmp_path / "gone.png")


def test_a_broken_image_stops_training_before_anything_is_lost(tmp_path):
    path = small_copy(tmp_path)
    cfg, out = linear_cfg(tmp_path), tmp_path / "out"
    result = CliRunner().invoke(main, train_args(cfg, path, out, "--epochs", "1"))
    assert result.exit_code == 0, result.output
    # Image files get Darknet's default augmentation, and training says so.
    assert "augmentation: shorter side scaled to" in result.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    victim = path.parent / (path.parent / "train.list").read_text().splitlines()[5]
    victim.write_bytes(victim.read_bytes()[:60])
    assert_cli_error(train_args(cfg, path, out, "--epochs", "2", "--resume"), f"{victim}: ",
                     "cannot decode: image file is truncated")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_threads_decode_the_same_and_report_the_first_bad_file(tmp_path, monkeypatch):
    monkeypatch.setattr(imagedata, "POOL_ABOVE", 0)       # the pool, even for small images
    rng = np.random.default_rng(4)
    paths = []
    for i in range(1100):
        paths.append(str(write_png(tmp_path / f"{i}.png",
                                   rng.integers(0, 256, (6, 5), dtype=np.uint8))))
    images = ImageList(tuple(paths), np.zeros(len(paths), np.int64), "list")
    calls = []
    one = images.decode((1, 5, 5), lambda done, total: calls.append((done, total)))
    chunk = imagedata.CHUNK
    assert calls == [(done, 1100) for done in [*range(chunk, 1100, chunk), 1100]]
    np.testing.assert_array_equal(images.decode((1, 5, 5), threads=2), one)
    for i in (1050, 700):
        Path(paths[i]).write_bytes(b"junk")
    for threads in (1, 2):
        with pytest.raises(DarkbpError) as caught:
            images.decode((1, 5, 5), threads=threads)
        assert caught.value.file == paths[700]


# ---------------------------------------------------------------------- resize and crop

SIZES = [(28, 28, 32, 32), (32, 32, 28, 28), (5, 7, 11, 3), (9, 4, 4, 9), (1, 6, 3, 3),
         (6, 1, 2, 5), (256, 20, 224, 20), (17, 13, 17, 8)]


@pytest.mark.parametrize("ih, iw, h, w", SIZES)
def test_resize_is_darknets_resize_image(ih, iw, h, w):
    image = np.random.default_rng(ih * w).random((2, ih, iw), dtype=np.float32)
    ours = resize(image, w, h)
    theirs = darknet_resize_image(image, w, h)
    np.testing.assert_array_equal(ours[:, :-1], theirs[:, :-1])     # bit for bit
    last_row = darknet_resize_columns(image, w)[:, -1]              # the source's last row
    np.testing.assert_array_equal(ours[:, -1], last_row)
    if last_row_quirk(ih, h):
        # Darknet's last row is (1 - dy)·row[ih - 2] with dy ≈ 1: nearly black.
        assert (256, 224) == (ih, h)
        assert np.abs(theirs[:, -1]).max() < 1e-4 < last_row.mean()
    else:
        np.testing.assert_allclose(theirs[:, -1], ours[:, -1], rtol=1e-6)


def test_resize_is_bilinear_with_aligned_corners_as_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    for ih, iw, h, w in SIZES:
        image = rng.random((3, ih, iw), dtype=np.float32)
        expected = torch.nn.functional.interpolate(
            torch.tensor(image[None], dtype=torch.float64), size=(h, w), mode="bilinear",
            align_corners=True)[0].numpy()
        np.testing.assert_allclose(resize(image, w, h), expected, atol=3e-5)


def test_resize_known_values():
    image = np.array([[[0, 10], [20, 30]]], np.float32)
    np.testing.assert_array_equal(resize(image, 3, 3),
                                  [[[0, 5, 10], [10, 15, 20], [20, 25, 30]]])


@pytest.mark.parametrize("ih, iw, w, h", [
    (28, 28, 28, 28),        # as is
    (40, 40, 28, 28),        # square, smaller
    (30, 50, 20, 20),        # wide: the height becomes 20, the centre 20 columns kept
    (50, 31, 20, 20),        # tall, with an odd centring offset
    (20, 20, 10, 14),        # net taller than wide: offsets negative, edges repeated
    (21, 33, 12, 6),         # net wider than tall
    (3, 9, 8, 8),            # upscaled
])
def test_preprocess_is_darknets_classifier_valid(ih, iw, w, h):
    image = np.random.default_rng(ih + iw).integers(0, 256, (3, ih, iw), dtype=np.uint8)
    expected = darknet_valid(image, w, h)
    rh = ih * w // iw if iw < ih else w
    assert not last_row_quirk(ih, rh)                    # these sizes agree to the last row
    ours = preprocess(image, w, h)
    assert ours.shape == (3, h, w) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, np.clip(np.rint(expected), 0, 255))


def test_images_of_another_size_are_resized_at_decode(tmp_path):
    big = np.random.default_rng(6).integers(0, 256, (40, 36), dtype=np.uint8)
    path = write_png(tmp_path / "big.png", big)
    decoded = ImageList((str(path),), np.zeros(1, np.int64), "l").decode((3, 28, 28))
    expected = np.clip(np.rint(darknet_valid(np.stack([big] * 3), 28, 28)), 0, 255)
    np.testing.assert_array_equal(decoded[0], expected)


# ---------------------------------------------------------------------- network input

def test_network_input_converts_channels():
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 256, (4, 6, 5), dtype=np.uint8)
    x = network_input(grey, (3, 6, 5))
    assert x.shape == (4, 3, 6, 5) and x.dtype == np.float32
    for c in range(3):
        np.testing.assert_array_equal(x[:, c], grey.astype(np.float32) / np.float32(255))
    rgb = rng.integers(0, 256, (4, 3, 6, 5), dtype=np.uint8)
    expected = [np.asarray(Image.fromarray(image.transpose(1, 2, 0)).convert("L"))
                for image in rgb]
    np.testing.assert_array_equal(network_input(rgb, (1, 6, 5))[:, 0] * 255,
                                  np.array(expected, np.float32))
    np.testing.assert_array_equal(network_input(rgb, (3, 6, 5)), rgb / np.float32(255))
    np.testing.assert_array_equal(network_input(grey, (30, 1, 1)),       # a flat input
                                  grey[:, None] / np.float32(255))


def _arrays(shape, classes=3):
    images, labels = np.zeros(shape, np.uint8), np.zeros(shape[0], np.uint8)
    return Dataset(name="d", train_images=images, train_labels=labels, test_images=images,
                   test_labels=labels, source=Path("d"), classes=tuple("abc"[:classes]))


@pytest.mark.parametrize("net, shape, fits", [
    ("width=28\nheight=28\nchannels=3", (5, 28, 28), True),          # grey replicated
    ("width=28\nheight=28\nchannels=1", (5, 3, 28, 28), True),       # luma
    ("width=28\nheight=28\nchannels=2", (5, 28, 28), False),
    ("width=32\nheight=32\nchannels=3", (5, 3, 28, 28), False),      # arrays are not resized
    ("inputs=2352", (5, 3, 28, 28), True),
])
def test_check_fits_arrays(write_cfg, net, shape, fits):
    network = parse_network(write_cfg(f"[net]\n{net}\n[connected]\noutput=3\n[softmax]\n"))
    if fits:
        check_fits(network, _arrays(shape))
    else:
        with pytest.raises(DarkbpError, match="images are 28 x 28 x"):
            check_fits(network, _arrays(shape))


@pytest.mark.parametrize("net", ["inputs=784", "width=28\nheight=28\nchannels=4"])
def test_image_files_need_an_image_input_of_1_or_3_channels(tmp_path, write_cfg, net):
    cfg = write_cfg(f"[net]\n{net}\n[connected]\noutput=3\n[softmax]\n")
    assert_cli_error(train_args(cfg, small_copy(tmp_path), tmp_path / "out", "--epochs", "1"),
                     f"{cfg}: ", "darkbp decodes the images of", "1 (grey) or 3 (RGB)")


def test_a_3_channel_network_trains_on_grey_idx_data(tmp_path):
    trainer = Trainer(parse_network(linear_cfg(tmp_path, channels=3, classes=10)),
                      load_dataset(str(CFG_DIR.parent / "data" / "mnist-sample")),
                      TrainOptions(out=tmp_path / "out", max_batches=3))
    assert trainer.run().accuracy > 0.1


# ---------------------------------------------------------------------- top-k

class TableNetwork:
    """Returns the rows of `scores`, one per image, in the order images come."""

    input_shape = (1, 2, 2)

    def __init__(self, scores):
        self.scores, self.at = scores, 0
        self.outputs = scores.shape[1]

    def forward(self, x, ctx=EVAL):
        rows = self.scores[self.at:self.at + len(x)]
        self.at += len(x)
        return rows


def test_top_k_counts_as_darknets_top_k():
    rng = np.random.default_rng(8)
    scores = rng.random((300, 7), dtype=np.float32)               # no ties
    labels = rng.integers(0, 7, 300)
    images = np.zeros((300, 2, 2), np.uint8)
    for k in (2, 3, 7):
        expected = sum(int(label) in darknet_top_k(row, k) for row, label in zip(scores, labels))
        result = evaluate(TableNetwork(scores), images, labels, list("abcdefg"), batch=64, top=k)
        assert result.top_correct == expected, k
        top1 = sum(darknet_top_k(row, 1)[0] == label for row, label in zip(scores, labels))
        assert result.correct == top1
    assert evaluate(TableNetwork(scores), images, labels, list("abcdefg")).top_correct is None


def test_top_k_ties_go_to_the_lower_class_index():
    rng = np.random.default_rng(9)
    scores = rng.integers(0, 4, (300, 7)).astype(np.float32)      # many ties
    labels = rng.integers(0, 7, 300)
    images = np.zeros((300, 2, 2), np.uint8)
    for k in (2, 3):
        expected = sum(int(label) in sorted(range(7), key=lambda j: (-row[j], j))[:k]
                       for row, label in zip(scores, labels))
        result = evaluate(TableNetwork(scores), images, labels, list("abcdefg"), batch=64, top=k)
        assert result.top_correct == expected
        # Darknet's insertion differs only where it pushes the earlier of two equal
        # scores down: 5 at 0 then 3, 3 at 1, 2 gives [0, 1, 2]; a 4 at 3 gives [0, 3, 2].
        darknet = sum(int(label) in darknet_top_k(row, k) for row, label in zip(scores, labels))
        assert darknet != expected
    assert darknet_top_k([5, 3, 3, 4], 3) == [0, 3, 2]
    assert sorted(range(4), key=lambda j: (-[5, 3, 3, 4][j], j))[:3] == [0, 3, 1]


def test_which_k():
    assert top_k(10) == 5 and top_k(5) is None and top_k(3) is None
    assert top_k(10, data_top=2) == 2 and top_k(10, data_top=2, requested=3) == 3
    assert top_k(3, requested=5) == 3            # capped at the classes
    assert top_k(10, data_top=1) is None         # top-1 is the accuracy itself


def test_eval_shows_top_1_and_top_k_on_the_valid_list(tmp_path):
    words = [f"c{k}" for k in range(6)]
    valid = random_split(30, 6, 9)
    path = write_darknet_copy(tmp_path / "d", {"train": random_split(12, 6, 8),
                                               "valid": valid}, words, data_lines="top=3\n")
    cfg = linear_cfg(tmp_path, classes=6)
    network = parse_network(cfg).initialize(3, np.float32)
    save_weights(tmp_path / "w.weights", network.layers, seen=0)
    # The expected counts: the PNGs read back by Pillow, darknet_top_k on the outputs.
    lines = (path.parent / "valid.list").read_text().splitlines()
    x = np.array([np.asarray(Image.open(path.parent / line)) for line in lines]) / 255
    outputs = network.forward(x.astype(np.float32)[:, None])
    for args, k in (([], 3), (["--top", "2"], 2)):
        result = CliRunner().invoke(main, ["eval", str(cfg), str(tmp_path / "w.weights"),
                                           "--data", str(path), "--threads", "1", *args])
        assert result.exit_code == 0, result.output
        top1 = sum(darknet_top_k(row, 1)[0] == label for row, label in zip(outputs, valid[1]))
        topk = sum(int(label) in darknet_top_k(row, k) for row, label in zip(outputs, valid[1]))
        assert f"{path} valid list: accuracy {100 * top1 / 30:.2f}% ({top1} of 30 images)" \
            in result.stdout
        assert f"top-{k} accuracy {100 * topk / 30:.2f}% ({topk} of 30 images)" in result.stdout
        assert result.stderr.startswith("decoding valid.list ")


def test_training_logs_top_k_and_uses_the_backup_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = small_copy(tmp_path, classes=6, data_lines="top=2\nbackup=runs/b\nbakup=x\n")
    cfg = linear_cfg(tmp_path, classes=6)
    result = CliRunner().invoke(main, ["train", str(cfg), "--data", str(path),
                                       "--max-batches", "3", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert f"darkbp: {path}:7: warning: unknown option bakup (did you mean backup?)" \
        in result.stderr
    assert "(top-2 " in result.stderr
    metrics = (tmp_path / "runs/b/linear_metrics.jsonl").read_text()
    assert '"top": 2' in metrics and '"top_accuracy": ' in metrics


# ---------------------------------------------------------------------- the quality bar

@pytest.fixture(scope="module")
def fashion_subset(tmp_path_factory):
    """The first 5,000 training and 1,000 test images of Fashion-MNIST, twice: as IDX files
    and as a Darknet-format PNG copy. Fails (does not skip) when DARKBP_DATA is set but
    lacks Fashion-MNIST."""
    if DATA is None:
        pytest.skip("DARKBP_DATA is not set (CI sets it to the shared datasets)")
    source = DATA / "fashion-mnist"
    arrays = {"train": (read_idx(source / "train-images-idx3-ubyte.gz")[:5000],
                        read_idx(source / "train-labels-idx1-ubyte.gz")[:5000]),
              "valid": (read_idx(source / "t10k-images-idx3-ubyte.gz")[:1000],
                        read_idx(source / "t10k-labels-idx1-ubyte.gz")[:1000])}
    folder = tmp_path_factory.mktemp("fashion")
    (folder / "idx").mkdir()
    for name, array in zip(("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
                           (*arrays["train"], *arrays["valid"])):
        write_idx(folder / "idx" / f"{name}.gz", array)
    data_file = write_darknet_copy(folder / "png", arrays, FASHION_WORDS, FASHION_NAMES)
    return folder / "idx", data_file, arrays


def test_the_png_copy_is_the_idx_data(fashion_subset):
    idx, data_file, arrays = fashion_subset
    dataset = load_dataset(str(data_file)).decoded((1, 28, 28))
    assert dataset.classes == tuple(FASHION_NAMES)
    np.testing.assert_array_equal(dataset.train_images[:, 0], arrays["train"][0])
    np.testing.assert_array_equal(dataset.train_labels, arrays["train"][1])
    np.testing.assert_array_equal(dataset.test_images[:, 0], arrays["valid"][0])
    np.testing.assert_array_equal(dataset.test_labels, arrays["valid"][1])


def test_mnist_cfg_trains_on_the_png_copy_as_on_the_idx_copy(tmp_path, fashion_subset):
    idx, data_file, _ = fashion_subset
    # Image files get Darknet's augmentation defaults (a 1x-2x zoom, the 50% flip); these
    # keys make it the identity on 28x28 images (tests/test_augment.py), as IDX data has.
    cfg = tmp_path / "mnist.cfg"
    cfg.write_text((CFG_DIR / "mnist.cfg").read_text().replace(
        "[net]\n", "[net]\nmin_crop=28\nmax_crop=28\nflip=0\n"))
    reports, weights = [], []
    for name, spec in (("idx", str(idx)), ("png", str(data_file))):
        trainer = Trainer(parse_network(cfg), load_dataset(spec),
                          TrainOptions(out=tmp_path / name, epochs=3, seed=11, threads=1))
        reports.append(trainer.run())
        weights.append(trainer.path("final").read_bytes())
    idx_report, png_report = reports
    assert png_report.batch_num == idx_report.batch_num == 3 * (5000 // 64)
    assert idx_report.accuracy > 0.75                   # it learned: 10 classes, 234 updates
    assert abs(png_report.accuracy - idx_report.accuracy) <= 0.005       # the bar
    # Lossless PNGs, the same order: the same input, so the very same weights.
    assert weights[0] == weights[1]
