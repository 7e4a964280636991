"""Finding and loading the datasets darkbp trains on (SPEC section 6).

`--data` is one of:

- a known name (`mnist`, `fashion-mnist`): four IDX files, looked for in a fixed order
  of folders (`candidates`);
- a folder holding such four IDX files, named as MNIST names them;
- a Darknet classifier `.data` file (`darkbp.imagedata.load_data_file`);
- a folder with train/ and val/ (or valid/, test/) subfolders of one folder per class
  (`darkbp.imagedata.load_image_folder`).

What darkbp knows about each named dataset (its files, classes and folders) is
`darkbp.catalogue`, and downloading is `darkbp.fetch`.

Images are uint8 arrays, (N, C, H, W), or (N, H, W) for one channel as IDX files hold
them. Image files are decoded to the network's shape once, by `Dataset.decoded`; until
then a split's images are an `ImageList` of checked paths. `network_input` turns a batch
into the network's float32 input, replicating grey to 3 channels or taking the luma of
RGB where the network's channels differ from the data's. A training split that the
augmentation crops (darkbp.augment) is decoded instead to `Images` at the images' own size.

darkbp never touches the network on its own: only `darkbp data fetch` and
`load_dataset(..., download=True)` download. When full MNIST is nowhere to be
found, `load_dataset("mnist")` falls back to the 4,000-image sample shipped in
the repository's `data/mnist-sample/` and says so in `Dataset.notice`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from darkbp import cifar, fetch
from darkbp.augment import Augment, Images
from darkbp.catalogue import CLASSES, FILES, NAMES, cache_dir, candidates
from darkbp.cfg import CfgWarning
from darkbp.errors import DarkbpError
from darkbp.idx import read_idx
from darkbp.imagedata import ImageData, ImageList, load_data_file, load_image_folder, luma

# In a source checkout the sample is in the top-level data/; an installed wheel has it
# in darkbp/data/ (see pyproject.toml).
_SAMPLE_PLACES = [Path(__file__).resolve().parent.parent / "data" / "mnist-sample",
                  Path(__file__).resolve().parent / "data" / "mnist-sample"]
SAMPLE_DIR = next((folder for folder in _SAMPLE_PLACES if folder.is_dir()), _SAMPLE_PLACES[0])


@dataclass(frozen=True)
class Dataset:
    """A train and a test split of labelled images.

    train_images: uint8 (N, C, H, W), or (N, H, W) for one channel; or, for image files
    not decoded yet, an `ImageList` (`decoded` turns it into an array); or, decoded for
    the training augmentation, `darkbp.augment.Images`
    train_labels: (N,) integers in 0..len(classes)-1; test_* alike
    classes: the class names; top: the k of the top-k accuracy the data asks for (a .data
    file's top=), else None; backup: the .data file's backup folder, else None
    augment_by_default: whether training augments these images with Darknet's defaults
    when the cfg gives no augmentation key (image files and CIFAR-10), or only when it
    gives one (IDX files, so that results on MNIST stay what they were)
    test_split: what the test split is called ("test split", "valid list", "val split")
    notice: one line for the user when this is not what they asked for
    (the shipped sample instead of full MNIST), else None; warnings: the .data file's
    """

    name: str
    train_images: np.ndarray | ImageList | Images
    train_labels: np.ndarray
    test_images: np.ndarray | ImageList
    test_labels: np.ndarray
    source: Path
    classes: tuple[str, ...]
    is_sample: bool = False
    augment_by_default: bool = False
    notice: str | None = None
    top: int | None = None
    backup: Path | None = None
    test_split: str = "test split"
    warnings: tuple[CfgWarning, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of the images held as arrays; None for image files (decoded to fit)."""
        if isinstance(self.test_images, ImageList):
            return None
        shape = self.test_images.shape
        return (1, *shape[1:]) if len(shape) == 3 else shape[1:]

    def decoded(self, shape: tuple[int, int, int], progress=None, threads: int = 1,
                train: bool = True, augment: Augment | None = None) -> "Dataset":
        """This dataset with its image files decoded for a network input of `shape` (C, H, W).

        The test split, then (with train=True) the train split; arrays stay as they are.
        With an `augment`, the train split becomes `Images` for it to crop: image files at
        their own size (ImageList.decode_originals), arrays as they are, RGB as its luma
        for a 1-channel network (grey stays 1 channel: the augmentation replicates it).
        `progress(source, done, total)` reports, source the split's list file or folder.
        """
        arrays = {}
        for role in ("test_images", "train_images") if train else ("test_images",):
            images = getattr(self, role)
            if isinstance(images, ImageList):
                report = None if progress is None else partial(progress, images.source)
                if role == "train_images" and augment is not None:
                    arrays[role] = images.decode_originals(shape[0], augment.shorter_side,
                                                           report, threads)
                else:
                    arrays[role] = images.decode(shape, report, threads)
            elif role == "train_images" and augment is not None:
                x = images[:, None] if images.ndim == 3 else images
                arrays[role] = Images.of_array(luma(x) if x.shape[1] > shape[0] else x)
        return replace(self, **arrays)


def network_input(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 images -> float32 (n, C, H, W) in [0, 1], pixel / 255, for an input of `shape`.

    images: (n, H, W) or (n, c, H, W). When the network takes H x W images of other
    channels (check_fits allows 1 -> 3 and 3 -> 1): grey is replicated to every channel,
    RGB becomes its luma (imagedata.luma, as Pillow's convert("L")).
    """
    x = images[:, None] if images.ndim == 3 else images
    channels = shape[0]
    if x.shape[1] != channels and tuple(shape[1:]) == x.shape[2:]:
        x = luma(x) if channels == 1 else np.broadcast_to(x, (len(x), channels, *x.shape[2:]))
    out = x.astype(np.float32)
    out /= np.float32(255)
    return out


def locate(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[Path, bool]]:
    """Each candidate folder of `name`, in look-up order, and whether it holds all four files."""
    return [(folder, not missing_files(folder)) for folder in candidates(name, data_dir)]


def missing_files(folder: str | os.PathLike) -> list[str]:
    """Which of the four files `folder` lacks (as "name[.gz]"); all four if it does not exist."""
    return [f"{base}[.gz]" for base in FILES.values() if _find(Path(folder), base) is None]


def load_dataset(spec: str, data_dir: str | os.PathLike | None = None,
                 download: bool = False) -> Dataset:
    """Load `mnist`, `fashion-mnist`, the IDX or image folder `spec` or the .data file `spec`.

    A .data file or an image folder comes with its paths checked and its images not
    decoded (`Dataset.decoded`). A named dataset comes from the first candidate folder
    that holds all four files. If there is none: with download=True it is fetched into
    the cache; otherwise mnist falls back to the shipped sample (is_sample=True, with a
    notice), and fashion-mnist is an error that lists where darkbp looked.
    """
    if spec not in NAMES:
        path = Path(spec)
        if path.is_file():
            return from_image_data(load_data_file(path), name=str(spec), source=path)
        if not path.is_dir():
            raise DarkbpError(f"no dataset named {spec!r} and no such folder or .data file "
                              f"(known datasets: {', '.join(NAMES)})")
        if len(missing_files(path)) < len(FILES):      # IDX files, as many as there are
            return load_folder(path, name=str(spec), classes=CLASSES["mnist"])
        if (path / "train").is_dir():
            return from_image_data(load_image_folder(path), name=str(spec), source=path)
        raise DarkbpError("neither the four IDX files (" + ", ".join(
            f"{base}[.gz]" for base in FILES.values()) + ") nor a train/ folder of one "
            "subfolder per class", file=str(path))

    if spec == "cifar10":
        return _load_cifar10(data_dir, download)
    found = locate(spec, data_dir)
    for folder, complete in found:
        if complete:
            return load_folder(folder, name=spec, classes=CLASSES[spec])
    for folder, _ in found:
        missing = missing_files(folder)
        if len(missing) < len(FILES):
            raise DarkbpError(f"{spec} is incomplete here: missing {', '.join(missing)}; "
                              f"add the missing files or run `darkbp data fetch {spec}`",
                              file=str(folder))
    looked_in = ", ".join(str(folder) for folder, _ in found)

    if download:
        report = fetch.fetch(spec)
        return load_folder(report.dest, name=spec, classes=CLASSES[spec])

    if spec == "mnist" and not missing_files(SAMPLE_DIR):
        sample = load_folder(SAMPLE_DIR, name="mnist", classes=CLASSES["mnist"])
        notice = (f"full MNIST not found (looked in: {looked_in}); using the "
                  f"{len(sample.train_labels):,}-image sample shipped with darkbp "
                  f"({len(sample.test_labels):,} test images) — "
                  "`darkbp data fetch mnist` gets the full set")
        return replace(sample, is_sample=True, notice=notice)

    raise DarkbpError(
        f"{spec} not found; looked in: {looked_in}. Put the four files "
        f"({', '.join(name + '.gz' for name in FILES.values())}) in one of these "
        f"folders, e.g. {cache_dir(spec)}, or run `darkbp data fetch {spec}`")


def from_image_data(data: ImageData, name: str, source: Path) -> Dataset:
    """The Dataset of a .data file or an image folder, its images not decoded yet."""
    return Dataset(name=name, source=source, classes=data.classes,
                   train_images=data.train, train_labels=data.train.labels,
                   test_images=data.test, test_labels=data.test.labels, top=data.top,
                   backup=data.backup, test_split=data.test_split, warnings=data.warnings,
                   augment_by_default=True)


def _load_cifar10(data_dir, download: bool) -> Dataset:
    """CIFAR-10 from the first candidate folder holding its binary version (darkbp.cifar),
    or fetched into the cache when `download`; its images (N, 3, 32, 32), darkbp's order."""
    folders = candidates("cifar10", data_dir)
    folder = next((f for f in folders if not cifar.missing_files(f)), None)
    if folder is None:
        if not download:
            raise DarkbpError("cifar10 not found; looked in: "
                              + ", ".join(str(f) for f in folders)
                              + ". Run `darkbp data fetch cifar10` (or pass --download), or "
                              "unpack cifar-10-binary.tar.gz in one of these folders")
        folder = fetch.fetch("cifar10").dest
    data = cifar.load_cifar10(folder)

    def nchw(images):                                   # (N, 32, 32, 3) -> (N, 3, 32, 32)
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))

    return Dataset(name="cifar10", train_images=nchw(data.train_images),
                   train_labels=data.train_labels, test_images=nchw(data.test_images),
                   test_labels=data.test_labels, source=data.source, classes=data.classes,
                   augment_by_default=True)


def load_folder(folder: str | os.PathLike, name: str, classes: tuple[str, ...]) -> Dataset:
    """Read and check the four IDX files in `folder`."""
    folder = Path(folder)
    arrays = {}
    for role, base in FILES.items():
        path = _find(folder, base)
        if path is None:
            raise DarkbpError(f"missing {base}.gz (or {base}) in this folder",
                              file=str(folder / base))
        arrays[role] = (read_idx(path), path)
    for split in ("train", "test"):
        images, images_path = arrays[f"{split}_images"]
        labels, labels_path = arrays[f"{split}_labels"]
        _check_split(images, images_path, labels, labels_path, len(classes))
    return Dataset(name=name, source=folder, classes=classes,
                   **{role: array for role, (array, _) in arrays.items()})


def _check_split(images: np.ndarray, images_path: Path,
                 labels: np.ndarray, labels_path: Path, n_classes: int) -> None:
    if images.ndim != 3:
        raise DarkbpError("holds labels (1 dimension), expected images (3 dimensions)",
                          file=str(images_path))
    if labels.ndim != 1:
        raise DarkbpError("holds images (3 dimensions), expected labels (1 dimension)",
                          file=str(labels_path))
    if images.shape[1:] != (28, 28):
        raise DarkbpError(f"images are {images.shape[1]}x{images.shape[2]}, darkbp's "
                          "datasets are 28x28", file=str(images_path))
    if len(images) == 0:
        raise DarkbpError("holds no images", file=str(images_path))
    if len(images) != len(labels):
        raise DarkbpError(f"{len(labels)} labels for {len(images)} images in "
                          f"{images_path.name}", file=str(labels_path))
    if labels.max() >= n_classes:
        index = int(np.argmax(labels >= n_classes))
        raise DarkbpError(f"label {labels[index]} at index {index} is out of range "
                          f"0..{n_classes - 1}", file=str(labels_path))


def _find(folder: Path, base: str) -> Path | None:
    """folder/base or folder/base.gz, whichever exists (the plain file first)."""
    for path in (folder / base, folder / f"{base}.gz"):
        if path.is_file():
            return path
    return None
