"""evaluate/predict on planted examples, tallied independently with plain loops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from darkbp.catalogue import CLASSES
from darkbp.datasets import Dataset
from darkbp.errors import DarkbpError
from darkbp.evaluate import Evaluation, check_fits, evaluate, predict
from darkbp.network import parse_network
from darkbp.passes import EVAL

DIGITS = CLASSES["mnist"]


def planted_images(n: int, seed: int = 0) -> np.ndarray:
    """(n, 28, 28) uint8 whose first 10 pixels are distinct, so their brightest is unique."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, :10] = np.array([rng.permutation(np.arange(0, 250, 25)) for _ in range(n)])
    return images


def brightest_of_first_ten(images: np.ndarray) -> list[int]:
    """The planted function, image by image, in plain Python."""
    answers = []
    for image in images:
        pixels = [int(v) for v in image.reshape(-1)[:10]]
        answers.append(pixels.index(max(pixels)))
    return answers


class FakeNetwork:
    """Stands in for a Network: scores = the first 10 inputs; records how it was called."""

    outputs = 10
    input_shape = (1, 28, 28)

    def __init__(self):
        self.calls = []

    def forward(self, x, ctx=EVAL):
        self.calls.append((x.shape, x.dtype, ctx.train, float(x.min()), float(x.max())))
        return x.reshape(len(x), -1)[:, :10].copy()


@pytest.fixture
def linear_network(write_cfg):
    """A real network: connected (784 -> 10, linear) + softmax, weights set to pick pixels 0..9."""
    path = write_cfg("""
        [net]
        width=28
        height=28
        channels=1
        [connected]
        output=10
        activation=linear
        [softmax]
    """)
    network = parse_network(path).initialize(0, np.float32)
    layer = network.layers[0]
    layer.weights[...] = 0
    layer.weights[np.arange(10), np.arange(10)] = 1   # output j = pixel j
    layer.biases[...] = 0
    return network


def tally(truth, guess, k=10):
    confusion = [[0] * k for _ in range(k)]
    for t, g in zip(truth, guess):
        confusion[t][g] += 1
    return np.array(confusion)


def test_planted_network_predicts_the_planted_function(linear_network):
    images = planted_images(257)
    assert predict(linear_network, images).tolist() == brightest_of_first_ten(images)


@pytest.mark.parametrize("batch", [1, 7, 256, 257, 1000])
def test_chunking_gives_the_same_as_one_chunk(linear_network, batch):
    images = planted_images(257, seed=1)
    whole = predict(linear_network, images, batch=len(images))
    assert predict(linear_network, images, batch=batch).tolist() == whole.tolist()


def test_accuracy_per_class_and_confusion_against_hand_counts(linear_network):
    images = planted_images(300, seed=2)
    guess = brightest_of_first_ten(images)
    rng = np.random.default_rng(3)
    # Labels right about half the time, so every cell of the matrix can be hit.
    labels = np.where(rng.random(300) < 0.5, guess, rng.integers(0, 10, 300)).astype(np.uint8)
    result = evaluate(linear_network, images, labels, DIGITS)

    right = sum(int(t) == g for t, g in zip(labels, guess))
    assert result.count == 300
    assert result.correct == right
    assert result.accuracy == pytest.approx(right / 300, abs=1e-15)
    expected = tally([int(t) for t in labels], guess)
    assert result.confusion.tolist() == expected.tolist()
    assert result.confusion.shape == (10, 10)
    assert np.issubdtype(result.confusion.dtype, np.integer)
    for c in range(10):
        members = [g for t, g in zip(labels, guess) if t == c]
        assert result.class_counts[c] == len(members)
        assert result.per_class[c] == pytest.approx(members.count(c) / len(members), abs=1e-15)


def test_rows_are_true_classes_and_columns_predictions():
    network = FakeNetwork()
    images = np.zeros((3, 28, 28), np.uint8)
    images[:, 0, 7] = 255          # every image is predicted 7
    result = evaluate(network, images, np.array([2, 2, 7], np.uint8), DIGITS)
    assert result.confusion[2, 7] == 2 and result.confusion[7, 7] == 1
    assert result.confusion.sum() == 3
    assert result.per_class[2] == 0 and result.per_class[7] == 1
    assert np.isnan(result.per_class[0])   # no images of class 0: undefined, not 0 or 1
    assert result.accuracy == pytest.approx(1 / 3)


def test_pixels_scaled_to_unit_range_in_evaluation_mode_in_bounded_chunks():
    network = FakeNetwork()
    images = np.full((1234, 28, 28), 51, np.uint8)
    images[5, 3, 3] = 255
    images[700, 0, 0] = 0
    predict(network, images, batch=500)
    assert [shape[0] for shape, *_ in network.calls] == [500, 500, 234]
    for _, dtype, train, low, high in network.calls:
        assert dtype == np.float32 and train is False
    assert network.calls[0][3] == pytest.approx(51 / 255) and network.calls[0][4] == 1.0
    assert network.calls[1][3] == 0.0 and network.calls[1][4] == pytest.approx(51 / 255)


def test_labels_are_not_overflowed_as_uint8():
    # 9 * 10 + 9 fits a uint8, but 26 classes (label 25 * 26 = 650) would not.
    network = FakeNetwork()
    network.outputs = 26
    network.forward = lambda x, ctx=EVAL: np.tile(np.eye(26, dtype=np.float32)[25], (len(x), 1))
    labels = np.full(4, 25, np.uint8)
    result = evaluate(network, np.zeros((4, 28, 28), np.uint8), labels, [str(i) for i in range(26)])
    assert result.confusion[25, 25] == 4 and result.accuracy == 1.0


def test_mismatched_inputs_are_rejected():
    network = FakeNetwork()
    with pytest.raises(ValueError, match="3 labels for 2 images"):
        evaluate(network, np.zeros((2, 28, 28), np.uint8), np.zeros(3, np.uint8), DIGITS)
    with pytest.raises(ValueError, match="no images"):
        evaluate(network, np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8), DIGITS)
    with pytest.raises(ValueError, match="10 outputs for 9 classes"):
        evaluate(network, np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8), DIGITS[:9])
    with pytest.raises(ValueError):
        predict(network, np.zeros((2, 28, 28), np.uint8), batch=0)


def test_evaluation_of_a_given_matrix():
    confusion = np.array([[3, 1], [0, 0]])
    result = Evaluation(classes=("a", "b"), confusion=confusion)
    assert (result.count, result.correct, result.accuracy) == (4, 3, 0.75)
    assert result.per_class[0] == 0.75 and np.isnan(result.per_class[1])


def _Data(shape=(5, 28, 28), classes=DIGITS):
    """A Dataset of blank images of `shape` (N, H, W) or (N, C, H, W), named mnist."""
    images, labels = np.zeros(shape, np.uint8), np.zeros(shape[0], np.uint8)
    return Dataset(name="mnist", train_images=images, train_labels=labels,
                   test_images=images, test_labels=labels, source=Path("mnist"),
                   classes=classes)


@pytest.mark.parametrize("net", ["width=28\nheight=28\nchannels=1", "inputs=784"])
def test_fits_an_image_or_a_flat_input(write_cfg, net):
    path = write_cfg(f"[net]\n{net}\n[connected]\noutput=10\n[softmax]\n")
    check_fits(parse_network(path), _Data())


def test_wrong_input_names_the_cfg_and_both_shapes(write_cfg):
    path = write_cfg("[net]\nwidth=32\nheight=32\nchannels=3\n[connected]\noutput=10\n")
    with pytest.raises(DarkbpError) as error:
        check_fits(parse_network(path), _Data())
    message = str(error.value)
    assert message.startswith(str(path))
    assert "32 x 32 x 3" in message and "28 x 28 x 1" in message


def test_flat_input_of_the_wrong_size(write_cfg):
    path = write_cfg("[net]\ninputs=100\n[connected]\noutput=10\n")
    with pytest.raises(DarkbpError, match="flat input of 100.*28 x 28 x 1"):
        check_fits(parse_network(path), _Data())


def test_wrong_number_of_outputs(write_cfg):
    path = write_cfg("[net]\ninputs=784\n[connected]\noutput=9\n[softmax]\n")
    with pytest.raises(DarkbpError, match="9 outputs, but mnist has 10 classes"):
        check_fits(parse_network(path), _Data())
