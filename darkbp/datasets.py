"""Finding and loading the datasets darkbp trains on (SPEC section 6).

A dataset is four IDX files in one folder, named as MNIST names them. `--data`
is either a known name (`mnist`, `fashion-mnist`), looked for in a fixed order
of folders (`candidates`), or the path of such a folder. This module locates
and reads them; what darkbp knows about each named dataset (its files, classes
and folders) is `darkbp.catalogue`, and downloading is `darkbp.fetch`.

darkbp never touches the network on its own: only `darkbp data fetch` and
`load_dataset(..., download=True)` download. When full MNIST is nowhere to be
found, `load_dataset("mnist")` falls back to the 4,000-image sample shipped in
the repository's `data/mnist-sample/` and says so in `Dataset.notice`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from darkbp import fetch
from darkbp.catalogue import CLASSES, FILES, NAMES, cache_dir, candidates
from darkbp.errors import DarkbpError
from darkbp.idx import read_idx

# In a source checkout the sample is in the top-level data/; an installed wheel has it
# in darkbp/data/ (see pyproject.toml).
_SAMPLE_PLACES = [Path(__file__).resolve().parent.parent / "data" / "mnist-sample",
                  Path(__file__).resolve().parent / "data" / "mnist-sample"]
SAMPLE_DIR = next((folder for folder in _SAMPLE_PLACES if folder.is_dir()), _SAMPLE_PLACES[0])


@dataclass(frozen=True)
class Dataset:
    """A train and a test split of 28x28 grayscale images with labels 0-9.

    train_images: (N, 28, 28) uint8    train_labels: (N,) uint8
    test_images:  (M, 28, 28) uint8    test_labels:  (M,) uint8
    notice: one line for the user when this is not what they asked for
    (the shipped sample instead of full MNIST), else None.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: Path
    classes: tuple[str, ...]
    is_sample: bool = False
    notice: str | None = None


def locate(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[Path, bool]]:
    """Each candidate folder of `name`, in look-up order, and whether it holds all four files."""
    return [(folder, not missing_files(folder)) for folder in candidates(name, data_dir)]


def missing_files(folder: str | os.PathLike) -> list[str]:
    """Which of the four files `folder` lacks (as "name[.gz]"); all four if it does not exist."""
    return [f"{base}[.gz]" for base in FILES.values() if _find(Path(folder), base) is None]


def load_dataset(spec: str, data_dir: str | os.PathLike | None = None,
                 download: bool = False) -> Dataset:
    """Load `mnist`, `fashion-mnist` or the folder `spec`.

    A named dataset comes from the first candidate folder that holds all four
    files. If there is none: with download=True it is fetched into the cache;
    otherwise mnist falls back to the shipped sample (is_sample=True, with a
    notice), and fashion-mnist is an error that lists where darkbp looked.
    """
    if spec not in NAMES:
        folder = Path(spec)
        if not folder.is_dir():
            raise DarkbpError(f"no dataset named {spec!r} and no such folder "
                              f"(known datasets: {', '.join(NAMES)})")
        return load_folder(folder, name=str(spec), classes=CLASSES["mnist"])

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
