"""mnist-det: a detection dataset drawn from MNIST digits, in Darknet's layout (issue 22).

    made = make_mnist_det("~/.cache/darkbp")   # writes ~/.cache/darkbp/mnist-det/
    made.data_file                             # .../mnist-det/mnist-det.data

Each image is a 128 x 128 RGB canvas of grey noise with 1 to 4 coloured MNIST digits of
16 to 48 pixels, their boxes overlapping little (IoU <= 0.1). The train split takes its
digits from MNIST's first 50,000 training digits, the valid split from test digits
0..4,999; within a split no digit is used twice. The MNIST files are found and read as
`--data mnist` finds them (`darkbp.datasets.load_dataset`); without the full set, the
4,000-digit sample shipped with darkbp gives fewer images (an image may take 4 digits, so
a split makes at most a quarter as many images as it has digits) and `MnistDet.notice`
says so.

The draws, exactly (another implementation that follows this gets the same pixels and the
same label files; the PNG bytes also need the same zlib):

    rng = numpy.random.default_rng(seed)
    for split, pool in ("valid", test digits 0..4,999), ("train", training digits 0..49,999):
        # valid first, so that the valid split is the same whatever --train is
        order = rng.permutation(len(pool))        # digits are taken from it in turn
        for each image of the split:
            grey = rng.integers(0, 65)
            noise = rng.normal(0.0, 8.0, size=(128, 128))             # [row, column]
            canvas = numpy.clip(numpy.rint(grey + noise), 0, 255)      # uint8, all 3 channels
            count = rng.integers(1, 5)
            boxes = []
            repeat count times:
                repeat:                                 # until the box is not empty
                    digit = pool[order[next]]; next += 1
                    side = rng.integers(16, 49)
                    scaled = Image.fromarray(digit).resize((side, side), Image.BILINEAR)
                    box = tight box of scaled > 32: left, top = first column, row;
                          right, bottom = last column, row + 1 (pixel edges)
                colour = rng.integers(128, 256, size=3)                # R, G, B
                repeat up to 50 times:
                    x = rng.integers(0, 128 - side + 1)                # left of the square
                    y = rng.integers(0, 128 - side + 1)                # top
                    placed = box shifted by (x, y)
                    if IoU(placed, b) <= 0.1 for every b in boxes:     # IoU of pixel areas
                        canvas[y:y+side, x:x+side, c] = max(canvas[..., c],
                            rint(colour[c] * scaled / 255))    # float64; for c = R, G, B
                        boxes.append(placed); stop repeating
                # after 50 failed tries the digit is skipped (its draws stay consumed)

The rng calls are made as written, with the default dtype (int64). A digit is its 28 x 28
IDX array, [row, column]; its class is its MNIST label. The first digit of an image has no earlier box, so every
image keeps at least one digit.
The canvas is written as `Image.fromarray(canvas).save(path, compress_level=1)` to
`images/{split}/NNNNNN.png` (NNNNNN from 000000 in drawing order), and the label file
`labels/{split}/NNNNNN.txt` has one line per placed digit in placing order,
`"%d %.6f %.6f %.6f %.6f" % (class, (left + right) / 256, (top + bottom) / 256,
(right - left) / 128, (bottom - top) / 128)`: Python's correctly rounded formatting, ties
to even, as glibc's printf. IoU > 0.1 is decided exactly, as 10 * intersection > union
in whole pixels; colour * digit / 255 is never a tie for rint (255 is odd).

The folder is built as a hidden sibling, `.mnist-det.PID.partial`, and renamed to
`mnist-det` when complete, so an interrupted make never leaves a folder that looks
complete. The .data file and the lists name the files by absolute path, as Darknet's own
scripts (voc_label.py) write them, so they work from any current folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from darkbp.atomic import ensure_writable_dir
from darkbp.datasets import load_dataset
from darkbp.errors import DarkbpError

NAME = "mnist-det"
SIZE = 128                      # the canvas is SIZE x SIZE
GREY_MAX = 64                   # background level, uniform in 0..GREY_MAX
NOISE_SIGMA = 8.0
MAX_DIGITS = 4                  # digits per image, uniform in 1..MAX_DIGITS
MIN_SIDE, MAX_SIDE = 16, 48     # a digit's square side, uniform in MIN_SIDE..MAX_SIDE
COLOUR_MIN = 128                # each channel of a digit's colour in COLOUR_MIN..255
THRESHOLD = 32                  # a box is tight around the scaled digit's pixels above this
TRIES = 50
POOLS = {"valid": 5_000, "train": 50_000}     # the first digits of MNIST's test / training set
SPLITS = ("valid", "train")                   # drawing order: see the module doc

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Drawn:
    """One image of mnist-det in memory.

    image: (128, 128, 3) uint8 RGB; boxes: (n, 4) int64 left, top, right, bottom in canvas
    pixels (right and bottom exclusive); classes: (n,) int64; digits: (n,) int64, the index
    in the split's pool of each placed digit.
    """

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    digits: np.ndarray

    def label_text(self) -> str:
        """The label file: one `class x y width height` line per box, relative to 128."""
        return "".join(f"{k:d} {(l + r) / (2 * SIZE):.6f} {(t + b) / (2 * SIZE):.6f} "
                       f"{(r - l) / SIZE:.6f} {(b - t) / SIZE:.6f}\n"
                       for k, (l, t, r, b) in zip(self.classes.tolist(), self.boxes.tolist()))


@dataclass(frozen=True)
class MnistDet:
    """What make_mnist_det wrote: the .data file, the number of images of each split, and a
    notice when this is not what was asked for (the shipped sample instead of full MNIST)."""

    data_file: Path
    train: int
    valid: int
    notice: str | None = None


def draw_images(rng: np.random.Generator, digits: np.ndarray, labels: np.ndarray,
                count: int) -> Iterator[Drawn]:
    """The `count` images of one split, drawn as the module doc says.

    digits: (N, 28, 28) uint8, the split's pool; labels: (N,) their classes. Raises a
    DarkbpError if the pool runs out (only if many digits are blank).
    """
    order = rng.permutation(len(digits))
    taken = 0
    for _ in range(count):
        grey = rng.integers(0, GREY_MAX + 1)
        noise = rng.normal(0.0, NOISE_SIGMA, size=(SIZE, SIZE))
        plane = np.clip(np.rint(grey + noise), 0, 255).astype(np.uint8)
        canvas = np.repeat(plane[:, :, None], 3, axis=2)                # (128, 128, 3)
        boxes, classes, used = [], [], []
        for _ in range(rng.integers(1, MAX_DIGITS + 1)):
            while True:
                if taken == len(order):
                    raise DarkbpError(f"ran out of digits: all {len(order):,} of the pool "
                                      "are used (too many of them blank?)")
                index = int(order[taken])
                taken += 1
                side = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
                scaled = np.asarray(Image.fromarray(digits[index]).resize(
                    (side, side), Image.BILINEAR))
                box = _tight_box(scaled > THRESHOLD)
                if box is not None:
                    break
            colour = rng.integers(COLOUR_MIN, 256, size=3)
            for _ in range(TRIES):
                x = int(rng.integers(0, SIZE - side + 1))
                y = int(rng.integers(0, SIZE - side + 1))
                placed = (box[0] + x, box[1] + y, box[2] + x, box[3] + y)
                if not any(_overlaps(placed, earlier) for earlier in boxes):
                    # (side, side, 1) * (3,) -> (side, side, 3); no ties: 255 is odd.
                    ink = np.rint(colour * scaled[:, :, None] / 255.0).astype(np.uint8)
                    square = canvas[y:y + side, x:x + side]
                    np.maximum(square, ink, out=square)
                    boxes.append(placed)
                    classes.append(int(labels[index]))
                    used.append(index)
                    break
        yield Drawn(canvas, np.array(boxes, np.int64).reshape(-1, 4),
                    np.array(classes, np.int64), np.array(used, np.int64))


def make_mnist_det(out_dir: str | os.PathLike, train: int = 10_000, valid: int = 1_000,
                   seed: int = 0, data_dir: str | os.PathLike | None = None,
                   progress: ProgressCallback | None = None) -> MnistDet:
    """Write mnist-det into out_dir/mnist-det/ (replacing an earlier mnist-det there).

    The MNIST files are looked for as `--data mnist` looks for them (`data_dir` first);
    without the full set the shipped sample is used, each split capped at a quarter of its
    digits, and the result's notice says so. With the full set, asking for more images
    than that is a DarkbpError. `progress(split, done, total)` is called after each image.
    """
    for name, value, least in (("train", train, 1), ("valid", valid, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise DarkbpError(f"{name} must be a whole number of at least {least}, "
                              f"not {value!r}")
    mnist = load_dataset("mnist", data_dir)
    pools = {"valid": (mnist.test_images[:POOLS["valid"]], mnist.test_labels[:POOLS["valid"]]),
             "train": (mnist.train_images[:POOLS["train"]], mnist.train_labels[:POOLS["train"]])}
    asked = {"train": train, "valid": valid}
    counts = {}
    for split in SPLITS:
        most = len(pools[split][0]) // MAX_DIGITS
        if asked[split] > most and not mnist.is_sample:
            what = "test" if split == "valid" else "training"
            raise DarkbpError(f"asked for {asked[split]:,} {split} images: at most {most:,} "
                              f"from the {len(pools[split][0]):,} MNIST {what} digits it "
                              f"uses (an image may take {MAX_DIGITS}, none used twice)")
        counts[split] = min(asked[split], most)
    notice = None
    if mnist.is_sample:
        notice = (f"{mnist.notice}; mnist-det from the sample has {counts['train']:,} train "
                  f"and {counts['valid']:,} valid images")
        if counts != asked:
            notice += (f" (asked for {train:,} train and {valid:,} valid: an image may "
                       f"take {MAX_DIGITS} digits, none used twice)")

    out = Path(os.path.abspath(os.path.expanduser(out_dir)))
    final = out / NAME
    if final.exists() and not (final / f"{NAME}.data").is_file():
        raise DarkbpError(f"exists and is not a {NAME} folder (no {NAME}.data): not "
                          "replacing it; choose another --out", file=str(final))
    ensure_writable_dir(out)
    staging = out / f".{NAME}.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write(staging, final, counts, pools, seed, mnist.source, progress)
        _put_in_place(staging, final)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            where = error.filename or staging
            raise DarkbpError(f"cannot write: {error.strerror or error}",
                              file=str(where)) from None
        raise
    return MnistDet(final / f"{NAME}.data", counts["train"], counts["valid"], notice)


def _write(staging: Path, final: Path, counts: dict[str, int], pools, seed: int,
           source: Path, progress: ProgressCallback | None) -> None:
    """Every file of mnist-det into `staging`, the paths written in them naming `final`."""
    rng = np.random.default_rng(seed)
    for split in SPLITS:
        for kind in ("images", "labels"):
            (staging / kind / split).mkdir(parents=True)
        names = []
        drawn = draw_images(rng, *pools[split], counts[split])
        for number, image in enumerate(drawn):
            name = f"{number:06d}"
            Image.fromarray(image.image).save(staging / "images" / split / f"{name}.png",
                                              compress_level=1)
            (staging / "labels" / split / f"{name}.txt").write_text(image.label_text())
            names.append(f"{final / 'images' / split / name}.png\n")
            if progress is not None:
                progress(split, number + 1, counts[split])
        (staging / f"{split}.txt").write_text("".join(names))
    (staging / f"{NAME}.names").write_text("".join(f"{k}\n" for k in range(10)))
    (staging / f"{NAME}.data").write_text(
        f"# darkbp data make {NAME} --train {counts['train']} --valid {counts['valid']} "
        f"--seed {seed}: digits from {source}\n"
        f"classes=10\ntrain={final / 'train.txt'}\nvalid={final / 'valid.txt'}\n"
        f"names={final / f'{NAME}.names'}\nbackup=backup/\n")


def _put_in_place(staging: Path, final: Path) -> None:
    """Rename `staging` to `final`; an earlier `final` is moved aside first, removed after."""
    old = final.with_name(f".{NAME}.{os.getpid()}.old")
    had_old = final.exists()
    if had_old:
        os.rename(final, old)
    try:
        os.rename(staging, final)
    except OSError:
        if had_old:
            os.rename(old, final)
        raise
    if had_old:
        shutil.rmtree(old, ignore_errors=True)


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) around the True pixels of a (h, w) mask, right and
    bottom exclusive; None if there are none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """IoU(a, b) > 0.1 for boxes in whole pixels, decided exactly: 10 * inter > union."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return False
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return 10 * inter > union
