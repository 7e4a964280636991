"""Darknet's classifier data: `.data` files, list files, image folders, and PNG/JPEG decoding.

Two ways to name labelled image files, both read into an `ImageData` of two `ImageList`s
(train and test), checked but not decoded:

    load_data_file("cfg/fashion.data")   # Darknet's classifier .data file and its lists
    load_image_folder("photos/")         # photos/train/<class>/..., photos/val/<class>/...

A `.data` file is read with Darknet's `read_data_cfg` rules: every space and tab is
removed from a line, lines starting with `#` or `;` are comments, `key=value` lines set
options and the first of two equal keys counts. darkbp reads `classes`, `train`,
`valid`, `labels`, `names`, `top` and `backup`. A list file names one image per line; an
image's class is the label (a line of `labels`, else of `names`) that occurs in its path,
as written in the list, as a substring (Darknet's `fill_truth`).

Relative paths: a file is looked for as Darknet opens it, relative to the current
folder; if it is not there, relative to the folder of the file that names it (the `.data`
file for its lists and labels, the list file for its images). `backup` (a folder darkbp
writes) is taken as given, as Darknet does.

Every path is checked before anything is decoded: a path with no label or several, a
missing image, an empty list, `classes` not equal to the number of labels are each one
`DarkbpError` with the count and the first few offending lines.

`ImageList.decode` then reads the images with Pillow into one uint8 array
(N, C, H, W) of the network's shape, once (`darkbp.datasets.Dataset.decoded`):
grey is replicated to 3 channels, colour becomes grey with ITU-R 601-2 luma as Pillow
computes it, L = (19595 R + 38470 G + 7471 B + 2^15) >> 16, and every image gets
Darknet's `classifier valid` preprocessing (`preprocess`). Training images, which the
augmentation crops afresh every time (darkbp.augment), are decoded instead by
`ImageList.decode_originals` at their own size (shrunk only where their shorter side
exceeds the largest crop), into one flat buffer (`darkbp.augment.Images`).
"""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from darkbp.augment import Images
from darkbp.cfg import CfgWarning
from darkbp.errors import DarkbpError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
FORMATS = ("PNG", "JPEG")
TEST_FOLDERS = ("val", "valid", "test")        # the test split of an image folder, first found
SHOWN = 3                                      # offending paths quoted in an error
CHUNK = 64                                     # images per progress report and pool task
# Threads pay only for large images, where Pillow's decoder and the resize (both outside
# Python's interpreter lock) do the work: 500x375 JPEGs to 224x224 decode 2x as fast on 2
# threads (6 ms an image on one), 28x28 PNGs 2.2x slower (0.05 ms an image on one). The
# first chunk, decoded in this thread, decides.
POOL_ABOVE = 1e-3                              # seconds per image

KEYS = ("classes", "train", "valid", "labels", "names", "top", "backup")
# Keys Darknet's classifier, detector or tree code reads that darkbp has no use for.
DARKNET_ONLY = ("test", "leaves", "eval", "results", "map", "difficult")

Progress = Callable[[int, int], None]          # (images decoded, images in the list)


@dataclass(frozen=True)
class ImageList:
    """The labelled image files of one split, checked (they exist, each has one label).

    paths: as opened (resolved by the rule in the module docstring)
    labels: (N,) int64 class indexes
    source: the list file or folder they came from (for messages)
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, shape: tuple[int, int, int], progress: Progress | None = None,
               threads: int = 1) -> np.ndarray:
        """Every image, decoded and preprocessed for a network input of `shape` (C, H, W).

        Returns uint8 (N, C, H, W). A file that cannot be decoded is a DarkbpError
        naming it (the first such file in list order). `progress(done, total)` is called
        after every chunk of images. With `threads` > 1, a thread pool decodes the chunks
        after the first if that one took more than POOL_ABOVE an image.
        """
        c, h, w = shape
        _check_memory(len(self.paths) * c * h * w, self.source)
        out = np.empty((len(self.paths), c, h, w), np.uint8)

        def decode_one(i: int) -> None:
            out[i] = preprocess(read_image(self.paths[i], c), w, h)

        self._each(decode_one, progress, threads)
        return out

    def decode_originals(self, channels: int, shorter_side: int,
                         progress: Progress | None = None, threads: int = 1) -> Images:
        """Every image at its own size, for the training augmentation to crop (darkbp.augment).

        An image whose shorter side is longer than `shorter_side` is kept shrunk to it
        (`shrink`); the others as they are. Errors, progress and threads as `decode`.
        """
        images = [None] * len(self.paths)

        def decode_one(i: int) -> None:
            images[i] = shrink(read_image(self.paths[i], channels), shorter_side)

        def report(done: int, total: int) -> None:
            if done == min(CHUNK, total):     # the first chunk, before the pool starts
                _check_memory(sum(image.nbytes for image in images[:done]) * total // done,
                              self.source)
            if progress:
                progress(done, total)

        self._each(decode_one, report, threads)
        return Images.of_list(images)

    def _each(self, decode_one: Callable[[int], None], progress: Progress | None,
              threads: int) -> None:
        """decode_one(i) for every image, in chunks: the first here, the others on a pool
        of `threads` when the first took more than POOL_ABOVE an image."""
        total = len(self.paths)
        chunks = [range(start, min(start + CHUNK, total)) for start in range(0, total, CHUNK)]

        def decode_chunk(indexes: range) -> int:
            for i in indexes:
                decode_one(i)
            return len(indexes)

        def report(count: int) -> None:
            nonlocal done
            done += count
            if progress:
                progress(done, total)

        done = 0
        if not chunks:
            return
        started = time.perf_counter()
        report(decode_chunk(chunks[0]))
        per_image = (time.perf_counter() - started) / len(chunks[0])
        if threads > 1 and per_image > POOL_ABOVE:
            with ThreadPoolExecutor(threads) as pool:
                try:
                    for count in pool.map(decode_chunk, chunks[1:]):
                        report(count)
                except BaseException:
                    pool.shutdown(cancel_futures=True)
                    raise
        else:
            for chunk in chunks[1:]:
                report(decode_chunk(chunk))


@dataclass(frozen=True)
class ImageData:
    """What a .data file or an image folder describes, before decoding.

    classes: the display names (`names`, else `labels`; a folder's subfolder names)
    top: the .data file's `top`, else None; backup: its `backup` folder, else None
    """

    train: ImageList
    test: ImageList
    classes: tuple[str, ...]
    test_split: str
    top: int | None = None
    backup: Path | None = None
    warnings: tuple[CfgWarning, ...] = ()


# ---------------------------------------------------------------------- .data files

@dataclass(frozen=True)
class _Option:
    value: str
    line: int


def read_data_file(path: str | os.PathLike) -> tuple[dict[str, _Option], list[CfgWarning]]:
    """The options of a Darknet .data file (first of equal keys wins) and its warnings."""
    file = str(path)
    text = read_text(path)
    options: dict[str, _Option] = {}
    warnings = []
    for number, raw in enumerate(text.split("\n"), start=1):
        # Darknet's strip() removes spaces, tabs and newlines anywhere in the line; a
        # Windows line end's \r as well here (Darknet would keep it in the value).
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        key, equals, value = line.partition("=")
        if not equals:
            raise DarkbpError(f"expected key=value, found {line!r}", file=file, line=number)
        if not key or not value:
            missing = "key" if not key else "value"
            raise DarkbpError(f"{line!r} has no {missing}", file=file, line=number)
        if key in options:
            warnings.append(CfgWarning(file, number, f"{key} is set again; the first "
                                       f"(line {options[key].line}) counts, as in Darknet"))
            continue
        options[key] = _Option(value, number)
        if key in DARKNET_ONLY:
            warnings.append(CfgWarning(file, number, f"{key} is a Darknet option darkbp "
                                       "does not use"))
        elif key not in KEYS:
            close = difflib.get_close_matches(key, KEYS + DARKNET_ONLY, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(CfgWarning(file, number, f"unknown option {key}{hint}"))
    return options, warnings


def load_data_file(path: str | os.PathLike) -> ImageData:
    """Read a Darknet classifier .data file, its labels and its train and valid lists."""
    file = str(path)
    options, warnings = read_data_file(path)
    base = Path(path).parent

    def required(key: str) -> _Option:
        if key not in options:
            raise DarkbpError(f"no {key}= line: darkbp needs classes, train, valid and "
                              "labels (or names)", file=file)
        return options[key]

    classes = positive_int(required("classes"), "classes", file)
    label_key = "labels" if "labels" in options else "names"
    labels_option = required(label_key)
    labels_path = existing_file(labels_option, label_key, base, file)
    labels = read_labels(labels_path)
    if len(labels) != classes:
        raise DarkbpError(f"classes={classes}, but {labels_path} holds {len(labels)} labels",
                          file=file, line=options["classes"].line)
    names = labels
    if label_key == "labels" and "names" in options:
        names_path = existing_file(options["names"], "names", base, file)
        names = read_labels(names_path)
        if len(names) != len(labels):
            raise DarkbpError(f"{names_path} holds {len(names)} names for the "
                              f"{len(labels)} labels of {labels_path}", file=file,
                              line=options["names"].line)
    top = positive_int(options["top"], "top", file) if "top" in options else None
    backup = Path(options["backup"].value) if "backup" in options else None
    splits = [labelled_list(existing_file(required(key), key, base, file), labels,
                            labels_path) for key in ("train", "valid")]
    return ImageData(*splits, classes=tuple(names), test_split="valid list", top=top,
                     backup=backup, warnings=tuple(warnings))


def positive_int(option: _Option, key: str, file: str) -> int:
    """A .data option's whole number of at least 1, else a DarkbpError at its line."""
    if not option.value.isdigit() or int(option.value) < 1:
        raise DarkbpError(f"{key}={option.value}: expected a whole number of at least 1",
                          file=file, line=option.line)
    return int(option.value)


def existing_file(option: _Option, key: str, base: Path, file: str) -> Path:
    """The file a .data option names, found as the module doc says, else a DarkbpError."""
    path = resolve(option.value, str(base))
    if path is None:
        raise DarkbpError(f"{key}={option.value}: no such file (looked in the current "
                          f"folder, then in {base})", file=file, line=option.line)
    return Path(path)


def resolve(text: str, base: str) -> str | None:
    """The file `text` names: as Darknet opens it (relative to the current folder), else
    relative to `base`, the folder of the file that names it; None if neither exists."""
    if os.path.isfile(text):
        return text
    if not os.path.isabs(text):
        joined = os.path.join(base, text)     # os.path, not pathlib: 60,000 paths in 0.1 s
        if os.path.isfile(joined):
            return joined
    return None


# ---------------------------------------------------------------------- labels and lists

def read_labels(path: Path) -> list[str]:
    """One label per line, kept exactly as written (Darknet's get_labels), without the
    line end; blank lines at the end of the file are dropped."""
    lines = read_lines(path)
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DarkbpError("holds no labels", file=str(path))
    first = {}
    for number, label in enumerate(lines, start=1):
        if not label:
            raise DarkbpError("an empty label: it would match every path", file=str(path),
                              line=number)
        if label in first:
            raise DarkbpError(f"label {label!r} is also on line {first[label]}",
                              file=str(path), line=number)
        first[label] = number
    return lines


def labelled_list(path: Path, labels: list[str], labels_path: Path) -> ImageList:
    """The images a list file names, each labelled by the one label its path contains."""
    file = str(path)
    entries = [(number, text) for number, text in enumerate(read_lines(path), start=1) if text]
    if not entries:
        raise DarkbpError("lists no images", file=file)
    matches = [[k for k, label in enumerate(labels) if label in text] for _, text in entries]
    none = [entry for entry, found in zip(entries, matches) if not found]
    several = [(entry, found) for entry, found in zip(entries, matches) if len(found) > 1]
    problems = []
    if none:
        problems.append(f"{len(none):,} of {len(entries):,} paths contain none of the "
                        f"{len(labels)} labels of {labels_path}: "
                        + _quote(f"{text!r} (line {number})" for number, text in none))
    if several:
        problems.append(f"{len(several):,} of {len(entries):,} paths contain several labels: "
                        + _quote(f"{text!r} (line {number}: "
                                 + ", ".join(repr(labels[k]) for k in found) + ")"
                                 for (number, text), found in several))
    if problems:
        raise DarkbpError("; ".join(problems), file=file)

    base = path.parent
    resolved = [resolve(text, str(base)) for _, text in entries]
    missing = [entry for entry, found in zip(entries, resolved) if found is None]
    if missing:
        raise DarkbpError(f"{len(missing):,} of {len(entries):,} images do not exist (looked "
                          f"in the current folder, then in {base}): "
                          + _quote(f"{text!r} (line {number})" for number, text in missing),
                          file=file)
    return ImageList(paths=tuple(resolved),
                     labels=np.array([found[0] for found in matches], np.int64), source=file)


def _quote(items) -> str:
    items = list(items)
    return ", ".join(items[:SHOWN]) + (", ..." if len(items) > SHOWN else "")


def read_lines(path: Path) -> list[str]:
    """The file's lines without their line ends (\\n or \\r\\n)."""
    lines = read_text(path).split("\n")
    if lines[-1] == "":
        lines.pop()                             # the newline that ends the last line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_text(path: str | os.PathLike) -> str:
    """A text file's content (UTF-8, other bytes kept); a DarkbpError naming a file that
    cannot be read."""
    try:
        # surrogateescape: any bytes of a path survive the round trip to the file system.
        return Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as error:
        raise DarkbpError(f"cannot read: {error.strerror or error}", file=str(path)) from None


# ---------------------------------------------------------------------- image folders

def load_image_folder(folder: str | os.PathLike) -> ImageData:
    """FOLDER/train/<class>/... and FOLDER/val/<class>/... (or valid/, test/).

    As torchvision's ImageFolder: the classes are train/'s subfolders in sorted order,
    and the images of a class every .png/.jpg/.jpeg file (any case) under its folder,
    in sorted order. Names starting with "." are skipped. The test split's subfolders
    must be classes of train/ (a class may have no test images).
    """
    folder = Path(folder)
    train_dir = folder / "train"
    test_dir = next((folder / name for name in TEST_FOLDERS if (folder / name).is_dir()), None)
    if test_dir is None:
        raise DarkbpError("a train/ folder but no val/, valid/ or test/ folder beside it: "
                          "darkbp needs a test split", file=str(folder))
    classes = _subfolders(train_dir)
    if not classes:
        raise DarkbpError("no class subfolders (one folder of images per class)",
                          file=str(train_dir))
    unknown = [name for name in _subfolders(test_dir) if name not in classes]
    if unknown:
        raise DarkbpError(f"subfolders that are not classes of {train_dir}: "
                          + _quote(repr(name) for name in unknown), file=str(test_dir))
    train = _folder_split(train_dir, classes, need_every_class=True)
    test = _folder_split(test_dir, classes, need_every_class=False)
    return ImageData(train, test, classes=tuple(classes), test_split=f"{test_dir.name} split")


def _subfolders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder)
                  if entry.is_dir() and not entry.name.startswith("."))


def _folder_split(folder: Path, classes: list[str], need_every_class: bool) -> ImageList:
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = []
        for root, dirs, files in sorted(os.walk(folder / name, followlinks=True)):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [os.path.join(root, f) for f in sorted(files)
                      if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
        if need_every_class and not found:
            raise DarkbpError("holds no .png, .jpg or .jpeg image", file=str(folder / name))
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise DarkbpError("holds no .png, .jpg or .jpeg image", file=str(folder))
    return ImageList(tuple(paths), np.array(labels, np.int64), str(folder))


# ---------------------------------------------------------------------- decoding

def read_image(path: str, channels: int) -> np.ndarray:
    """A PNG or JPEG file as uint8 (channels, H, W), channels 1 (grey) or 3 (RGB).

    16-bit PNGs keep their high byte (as stb_image, Darknet's loader, does); alpha is
    dropped; EXIF orientation is ignored (as Darknet does). A missing, unreadable,
    corrupt or truncated file is a DarkbpError naming it.
    """
    try:
        with Image.open(path, formats=FORMATS) as image:
            if image.mode in ("I", "I;16", "I;16B", "I;16L"):
                grey = np.minimum(np.asarray(image) >> 8, 255).astype(np.uint8)
                pixels = np.repeat(grey[None], channels, axis=0)
            else:
                mode = "L" if channels == 1 else "RGB"
                pixels = np.asarray(image if image.mode == mode else image.convert(mode))
                pixels = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    except UnidentifiedImageError:
        raise DarkbpError("not a PNG or JPEG image", file=path) from None
    except OSError as error:
        if error.strerror:               # the file system's: missing, unreadable
            raise DarkbpError(f"cannot read: {error.strerror}", file=path) from None
        # Pillow's: "image file is truncated", "broken data stream when reading image file"
        raise DarkbpError(f"cannot decode: {error}", file=path) from None
    except (SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        # Pillow reports a corrupt PNG chunk as a SyntaxError ("broken PNG file").
        raise DarkbpError(f"cannot decode: {error}", file=path) from None
    return pixels


def preprocess(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's `classifier valid` preprocessing (validate_classifier_single):
    resize_min(image, w), then crop_image at the centre to w x h.

    The shorter side is resized to w (the network's width, also for a height that
    differs), the other in proportion (C's integer division), with Darknet's
    resize_image; then the centred w x h window is cut out, offsets (size - w)/2 and
    (size - h)/2 truncated toward zero as in C, pixels outside it repeating the edge
    (crop_image's clamping). uint8 (C, H, W) -> uint8 (C, h, w), rounded to the nearest.
    """
    image = resize_min(image, w)
    _, nh, nw = image.shape
    dx, dy = int((nw - w) / 2), int((nh - h) / 2)
    if (dx, dy, nw, nh) == (0, 0, w, h):
        return image
    rows = np.clip(np.arange(h) + dy, 0, nh - 1)
    cols = np.clip(np.arange(w) + dx, 0, nw - 1)
    return image[:, rows[:, None], cols]


def letterbox(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's `classifier predict` preprocessing (letterbox_image): the whole image
    scaled to fit w x h with its aspect kept, centred on a canvas of 0.5.

    float32 (C, H, W) in [0, 1] -> float32 (C, h, w), not rounded (Darknet keeps floats).
    The width fills when w/W < h/H (compared in float32, as Darknet does), the height
    otherwise; the other side becomes H·w/W or W·h/H, C's integer division. The image is
    resized to that with Darknet's resize_image (`resize`) and placed at ((w - new w)/2,
    (h - new h)/2), truncated. A side scaled to 0 pixels leaves only the canvas, as in
    Darknet.
    """
    c, ih, iw = image.shape
    if np.float32(w) / np.float32(iw) < np.float32(h) / np.float32(ih):
        nw, nh = w, ih * w // iw
    else:
        nw, nh = iw * h // ih, h
    boxed = np.full((c, h, w), 0.5, np.float32)
    if nw and nh:
        dx, dy = (w - nw) // 2, (h - nh) // 2
        boxed[:, dy:dy + nh, dx:dx + nw] = resize(image, nw, nh)
    return boxed


def resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's resize_image: bilinear, the corner pixels of source and result aligned.

    float32 (C, H, W) -> float32 (C, h, w). Columns first, then rows, each
    value (1 - d)·p[i] + d·p[i + 1] at the source position x·(H − 1)/(h − 1) (float32, as
    Darknet computes it); the last column and row are the source's last. (Darknet's
    last row is (1 − d)·p[H − 2] ≈ 0 where float rounding puts (h − 1)·scale just below
    H − 1, e.g. 256 -> 224: darkbp takes the last row, as Darknet does for the last column.)
    """
    def along(x: np.ndarray, size: int, axis: int) -> np.ndarray:
        n = x.shape[axis]
        if n == size:
            return x
        if n == 1 or size == 1:
            return np.take(x, np.full(size, n - 1), axis=axis)
        position = np.arange(size, dtype=np.float32) * (np.float32(n - 1) / np.float32(size - 1))
        low = np.minimum(position.astype(np.int64), n - 2)
        low[-1] = n - 2
        frac = position - low.astype(np.float32)
        frac[-1] = 1                             # exactly the source's last pixel
        shape = [1] * x.ndim
        shape[axis] = size
        frac = frac.reshape(shape)
        return ((1 - frac) * np.take(x, low, axis=axis)
                + frac * np.take(x, low + 1, axis=axis))

    return along(along(image, w, axis=2), h, axis=1)


def luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3, H, W) RGB -> uint8 (..., 1, H, W) grey, as Pillow's convert("L"):
    ITU-R 601-2, (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
    r, g, b = (rgb[..., k:k + 1, :, :].astype(np.uint32) for k in range(3))
    return ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16).astype(np.uint8)


def resize_min(image: np.ndarray, side: int) -> np.ndarray:
    """Darknet's resize_min: uint8 (C, H, W) with its shorter side resized to `side`, the
    other in proportion (C's integer division), with `resize`, rounded; the image itself
    when it has that size already."""
    _, ih, iw = image.shape
    if iw < ih:
        nw, nh = side, ih * side // iw
    else:
        nw, nh = iw * side // ih, side
    if (nh, nw) == (ih, iw):
        return image
    return np.clip(np.rint(resize(image.astype(np.float32), nw, nh)), 0, 255).astype(np.uint8)


def shrink(image: np.ndarray, shorter_side: int) -> np.ndarray:
    """The image with its shorter side resized to `shorter_side` (resize_min) if it is
    longer, else the image itself."""
    return image if min(image.shape[1:]) <= shorter_side else resize_min(image, shorter_side)


def _check_memory(nbytes: int, source: str) -> None:
    """A DarkbpError before decoding images that would not fit in the memory left."""
    try:
        with open("/proc/meminfo") as info:
            fields = dict(line.split(":", 1) for line in info)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return                                   # not Linux: no way to know, decode
    if nbytes > available:
        raise DarkbpError(f"the decoded images would take {nbytes / 2**30:.1f} GiB, more "
                          f"than the {available / 2**30:.1f} GiB of memory available",
                          file=source)
