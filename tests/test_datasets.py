"""Dataset look-up (SPEC section 6), the checks on a loaded dataset, and the shipped sample."""

import os
from pathlib import Path

import numpy as np
import pytest

from darkbp import catalogue
from darkbp.catalogue import candidates
from darkbp.datasets import SAMPLE_DIR, load_dataset, locate
from darkbp.errors import DarkbpError
from darkbp.idx import read_idx, write_idx

SHARED = os.environ.get("DARKBP_DATA")  # read before the fixture below clears it

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    """No real cache, no DARKBP_DATA: every folder a test sees, it made."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("DARKBP_DATA", raising=False)


@pytest.fixture
def no_system_dirs(tmp_path, monkeypatch):
    # Where Debian's dataset-fashion-mnist would be: made empty so the machine doesn't matter.
    monkeypatch.setattr(catalogue, "SYSTEM_DIRS", {"fashion-mnist": (tmp_path / "usr-share",)})


def shared() -> Path:
    if not SHARED:
        pytest.skip("DARKBP_DATA is not set (CI sets it to the shared datasets)")
    return Path(SHARED)


def make_dataset(folder: Path, seed: int = 0, n_train: int = 20, n_test: int = 10,
                 gz: bool = True) -> dict:
    """Write a tiny valid dataset; returns its arrays to compare with what is loaded."""
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, n_train, dtype=np.uint8),
              rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, n_test, dtype=np.uint8)]
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(NAMES, arrays):
        write_idx(folder / (name + ".gz" if gz else name), array, gzip=gz)
    return dict(zip(["train_images", "train_labels", "test_images", "test_labels"], arrays))


def assert_is(dataset, arrays):
    for role, array in arrays.items():
        np.testing.assert_array_equal(getattr(dataset, role), array)


# --- where datasets are looked for --------------------------------------------------


def test_lookup_order_is_the_specs(tmp_path, monkeypatch):
    monkeypatch.setenv("DARKBP_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert candidates("fashion-mnist", data_dir=tmp_path / "dd") == [
        tmp_path / "dd" / "fashion-mnist",
        tmp_path / "dd",
        tmp_path / "env" / "fashion-mnist",
        tmp_path / "xdg" / "darkbp" / "fashion-mnist",
        Path("/usr/share/datasets/fashion-mnist"),
    ]


def test_cache_defaults_to_home_and_ignores_a_relative_xdg(tmp_path, monkeypatch):
    expected = [tmp_path / "home" / ".cache" / "darkbp" / "mnist"]
    assert candidates("mnist") == expected
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert candidates("mnist") == expected


def test_unknown_name_for_candidates():
    with pytest.raises(DarkbpError, match="unknown dataset 'cifar'"):
        candidates("cifar")


def test_first_complete_folder_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("DARKBP_DATA", str(tmp_path / "env"))
    in_cache = make_dataset(tmp_path / "home" / ".cache" / "darkbp" / "mnist", seed=1)
    assert_is(load_dataset("mnist"), in_cache)

    in_env = make_dataset(tmp_path / "env" / "mnist", seed=2)
    assert_is(load_dataset("mnist"), in_env)

    in_data_dir_itself = make_dataset(tmp_path / "dd", seed=3)
    assert_is(load_dataset("mnist", data_dir=tmp_path / "dd"), in_data_dir_itself)

    in_data_dir_sub = make_dataset(tmp_path / "dd" / "mnist", seed=4)
    loaded = load_dataset("mnist", data_dir=tmp_path / "dd")
    assert_is(loaded, in_data_dir_sub)
    assert loaded.source == tmp_path / "dd" / "mnist"
    assert loaded.is_sample is False and loaded.notice is None
    assert loaded.classes == tuple("0123456789")


def test_locate_reports_each_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DARKBP_DATA", str(tmp_path / "env"))
    make_dataset(tmp_path / "env" / "mnist")
    assert locate("mnist") == [(tmp_path / "env" / "mnist", True),
                               (tmp_path / "home" / ".cache" / "darkbp" / "mnist", False)]


def test_fashion_mnist_found_in_the_system_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(catalogue, "SYSTEM_DIRS", {"fashion-mnist": (tmp_path / "sys",)})
    arrays = make_dataset(tmp_path / "sys")
    loaded = load_dataset("fashion-mnist")
    assert_is(loaded, arrays)
    assert loaded.classes[0] == "T-shirt/top" and loaded.classes[9] == "Ankle boot"


def test_plain_files_are_found_too(tmp_path):
    arrays = make_dataset(tmp_path / "plain", gz=False)
    assert_is(load_dataset(str(tmp_path / "plain")), arrays)


# --- when nothing is found ------------------------------------------------------------


def test_mnist_falls_back_to_the_shipped_sample(tmp_path):
    loaded = load_dataset("mnist")
    assert loaded.is_sample is True
    assert loaded.source == SAMPLE_DIR
    cache = tmp_path / "home" / ".cache" / "darkbp" / "mnist"
    assert loaded.notice == (
        f"full MNIST not found (looked in: {cache}); using the 4,000-image sample "
        "shipped with darkbp (1,000 test images) — `darkbp data fetch mnist` gets the full set")


def test_sample_is_stratified_400_and_100_per_digit():
    loaded = load_dataset("mnist")
    assert loaded.train_images.shape == (4000, 28, 28)
    assert loaded.test_images.shape == (1000, 28, 28)
    assert np.bincount(loaded.train_labels).tolist() == [400] * 10
    assert np.bincount(loaded.test_labels).tolist() == [100] * 10


def test_sample_train_and_test_do_not_overlap():
    loaded = load_dataset("mnist")
    train = {image.tobytes() for image in loaded.train_images}
    assert len(train) == 4000
    assert not any(image.tobytes() in train for image in loaded.test_images)


def test_sample_images_all_come_from_mnist_training_set():
    """What data/README.md says: every sample image, train and test, is an MNIST training image."""
    folder = shared() / "mnist"
    full_train = read_idx(folder / "train-images-idx3-ubyte.gz")
    full_train_labels = read_idx(folder / "train-labels-idx1-ubyte.gz")
    full_test = {image.tobytes() for image in read_idx(folder / "t10k-images-idx3-ubyte.gz")}
    index = {image.tobytes(): i for i, image in enumerate(full_train)}
    sample = load_dataset("mnist")
    for images, labels in ((sample.train_images, sample.train_labels),
                           (sample.test_images, sample.test_labels)):
        rows = [index.get(image.tobytes()) for image in images]
        assert None not in rows
        np.testing.assert_array_equal(full_train_labels[rows], labels)
        assert not any(image.tobytes() in full_test for image in images)


def test_fashion_mnist_not_found_lists_every_folder(tmp_path, monkeypatch, no_system_dirs):
    monkeypatch.setenv("DARKBP_DATA", str(tmp_path / "env"))
    with pytest.raises(DarkbpError) as caught:
        load_dataset("fashion-mnist", data_dir=tmp_path / "dd")
    message = str(caught.value)
    for folder in [tmp_path / "dd" / "fashion-mnist", tmp_path / "dd",
                   tmp_path / "env" / "fashion-mnist",
                   tmp_path / "home" / ".cache" / "darkbp" / "fashion-mnist",
                   tmp_path / "usr-share"]:
        assert str(folder) in message
    assert "train-images-idx3-ubyte.gz" in message
    assert "darkbp data fetch fashion-mnist" in message


def test_incomplete_folder_is_an_error_not_the_sample(tmp_path):
    folder = tmp_path / "home" / ".cache" / "darkbp" / "mnist"
    make_dataset(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DarkbpError) as caught:
        load_dataset("mnist")
    assert caught.value.file == str(folder)
    assert "missing t10k-labels-idx1-ubyte[.gz]" in caught.value.message


# --- a folder given as the spec, and the checks on what is loaded ------------------------


def test_path_spec_lacking_a_file_names_it(tmp_path):
    make_dataset(tmp_path / "d")
    (tmp_path / "d" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DarkbpError) as caught:
        load_dataset(str(tmp_path / "d"))
    assert caught.value.file == str(tmp_path / "d" / "train-labels-idx1-ubyte")
    assert "missing train-labels-idx1-ubyte.gz" in caught.value.message


def test_path_spec_that_is_not_a_folder():
    # (not cifar10, which darkbp now knows by name)
    with pytest.raises(DarkbpError, match="no dataset named 'imagenet' and no such folder"):
        load_dataset("imagenet")


def test_label_count_must_match_image_count(tmp_path):
    make_dataset(tmp_path / "d")
    write_idx(tmp_path / "d" / "t10k-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    with pytest.raises(DarkbpError) as caught:
        load_dataset(str(tmp_path / "d"))
    assert caught.value.file == str(tmp_path / "d" / "t10k-labels-idx1-ubyte.gz")
    assert caught.value.message == "9 labels for 10 images in t10k-images-idx3-ubyte.gz"


def test_labels_must_be_below_ten(tmp_path):
    make_dataset(tmp_path / "d")
    write_idx(tmp_path / "d" / "train-labels-idx1-ubyte.gz", np.array([0] * 19 + [10], np.uint8))
    with pytest.raises(DarkbpError, match="label 10 at index 19 is out of range 0..9"):
        load_dataset(str(tmp_path / "d"))


def test_images_must_be_28_by_28(tmp_path):
    make_dataset(tmp_path / "d")
    write_idx(tmp_path / "d" / "train-images-idx3-ubyte.gz", np.zeros((20, 32, 32), np.uint8))
    with pytest.raises(DarkbpError, match="images are 32x32"):
        load_dataset(str(tmp_path / "d"))


def test_labels_in_place_of_images(tmp_path):
    make_dataset(tmp_path / "d")
    write_idx(tmp_path / "d" / "train-images-idx3-ubyte.gz", np.zeros(20, np.uint8))
    with pytest.raises(DarkbpError, match="holds labels"):
        load_dataset(str(tmp_path / "d"))


def test_a_corrupt_file_is_reported_with_its_name(tmp_path):
    make_dataset(tmp_path / "d")
    path = tmp_path / "d" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DarkbpError) as caught:
        load_dataset(str(tmp_path / "d"))
    assert caught.value.file == str(path)


# --- the real datasets (DARKBP_DATA) -------------------------------------------------------


def test_real_mnist(monkeypatch):
    monkeypatch.setenv("DARKBP_DATA", str(shared()))
    mnist = load_dataset("mnist")
    assert mnist.source == shared() / "mnist" and not mnist.is_sample
    assert mnist.train_images.shape == (60000, 28, 28)
    assert mnist.test_images.shape == (10000, 28, 28)
    # Per-digit counts from shared/data/mnist/README.md.
    assert np.bincount(mnist.train_labels).tolist() == [5923, 6742, 5958, 6131, 5842,
                                                        5421, 5918, 6265, 5851, 5949]


def test_real_fashion_mnist(monkeypatch):
    monkeypatch.setenv("DARKBP_DATA", str(shared()))
    fashion = load_dataset("fashion-mnist")
    assert fashion.source == shared() / "fashion-mnist"
    assert np.bincount(fashion.train_labels).tolist() == [6000] * 10
    assert np.bincount(fashion.test_labels).tolist() == [1000] * 10
    assert fashion.classes == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
