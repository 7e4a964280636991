"""darkbp.detdata, Darknet's detection data loader, against loops written from Darknet's C
(tests/naive_detdata.py), and its rules: determinism per (seed, batch), the identity
settings, dropped, flipped and clipped boxes, max_boxes, the list and its label files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from darkbp.augment import Images
from darkbp.detdata import (DRAWS, DX, DY, FLIP, JITTER_H, JITTER_W, DetectionAugment, Labels,
                            Placements, batch_indexes, draws, fill_truth, load_data_detection,
                            load_list)
from darkbp.errors import DarkbpError
from darkbp.network import parse_network
from tests import naive_detdata as naive
from tests.conftest import ROOT

f32 = np.float32


def random_case(rng, n, sizes, boxes_per_image=(0, 6)):
    """n random uint8 (3, H, W) images of the given (H, W) choices and their labels."""
    images, rows, offsets = [], [], [0]
    for _ in range(n):
        H, W = sizes[rng.integers(len(sizes))]
        images.append(rng.integers(0, 256, (3, H, W), dtype=np.uint8))
        k = int(rng.integers(*boxes_per_image))
        w, h = rng.uniform(0.001, 0.8, k), rng.uniform(0.001, 0.8, k)
        rows.append(np.stack([rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2),
                              w, h], axis=1).astype(f32) if k else np.zeros((0, 4), f32))
        offsets.append(offsets[-1] + k)
    boxes = np.concatenate(rows)
    return images, Labels(boxes, rng.integers(0, 5, len(boxes)), np.array(offsets))


def naive_batch(settings, images, labels, seed, batch_num):
    """The whole batch through the loops, with darkbp's draws and placements."""
    n = len(images)
    u, shuffle = draws(seed, batch_num, n, int(labels.offsets[-1]))
    heights = np.array([im.shape[1] for im in images])
    widths = np.array([im.shape[2] for im in images])
    p = settings.placements(heights, widths, u)
    w, h = settings.width, settings.height
    x = np.stack([naive.load_image(images[i], w, h, p.nw[i], p.nh[i], p.dx[i], p.dy[i],
                                   p.flip[i], p.dhue[i], p.dsat[i], p.dexp[i])
                  for i in range(n)])
    truth = []
    for i in range(n):
        a, b = labels.offsets[i], labels.offsets[i + 1]
        rows = np.concatenate([labels.classes[a:b, None], labels.boxes[a:b]], axis=1)
        truth.append(naive.fill_truth_detection(
            rows, settings.max_boxes, shuffle[a:b], p.flip[i],
            f32(-f32(p.dx[i]) / f32(w)), f32(-f32(p.dy[i]) / f32(h)),
            f32(f32(p.nw[i]) / f32(w)), f32(f32(p.nh[i]) / f32(h))))
    return x, np.stack(truth), p, u


@pytest.mark.parametrize("case", range(4))
def test_batch_equals_darknet_loops(case):
    rng = np.random.default_rng(case)
    settings = DetectionAugment(3, int(rng.integers(6, 15)), int(rng.integers(6, 15)),
                                max_boxes=4, jitter=0.3, hue=0.3, saturation=1.6,
                                exposure=1.4, flip=True)
    # Two sizes shared by several images (the vectorised groups) and a lone one.
    images, labels = random_case(rng, 5, [(9, 11), (9, 11), (5, 17), (13, 13)])
    x, truth = settings.batch(Images.of_list(list(images)), labels, np.arange(5), 7, case)
    x_loop, truth_loop, p, u = naive_batch(settings, images, labels, 7, case)
    np.testing.assert_allclose(x, x_loop, rtol=0, atol=3e-6)
    np.testing.assert_array_equal(truth, truth_loop)
    assert x.dtype == truth.dtype == f32 and x.min() >= 0 and x.max() <= 1
    # The placement, darkbp's float64 against Darknet's float32 formulas.
    for i, image in enumerate(images):
        expected = naive.new_size(image.shape[2], image.shape[1], settings.width,
                                  settings.height, settings.jitter, *u[i, [JITTER_W, JITTER_H,
                                                                           DX, DY]])
        np.testing.assert_allclose([p.nw[i], p.nh[i], p.dx[i], p.dy[i]], expected, rtol=1e-5,
                                   atol=1e-5)


def test_chunks_change_nothing(monkeypatch):
    """Images placed and distorted one at a time give the batch placed all at once."""
    rng = np.random.default_rng(9)
    settings = DetectionAugment(3, 12, 10, jitter=0.3, hue=0.2, saturation=1.5, exposure=1.5)
    images, labels = random_case(rng, 7, [(9, 11), (14, 8)])
    stored = Images.of_list(list(images))
    whole = settings.batch(stored, labels, np.arange(7), 1, 2)
    monkeypatch.setattr("darkbp.detdata.CHUNK_PIXELS", 1)
    for a, b in zip(whole, settings.batch(stored, labels, np.arange(7), 1, 2)):
        np.testing.assert_array_equal(a, b)


def test_distortion_keeps_darknets_colours_on_every_sextant():
    """Every hue, pure and grey colours, saturation beyond 1, a wrap both ways."""
    rng = np.random.default_rng(3)
    settings = DetectionAugment(3, 8, 8, jitter=0, hue=0.5, saturation=2, exposure=1.5,
                                flip=False)
    pixels = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    pixels[0, :, :2] = [[[255]], [[0]], [[0]]]          # pure red, grey, black, white
    pixels[0, :, 2:4] = 128
    pixels[0, :, 4:6] = 0
    pixels[0, :, 6:] = 255
    labels = Labels(np.zeros((0, 4), f32), np.zeros(0, np.int64), np.zeros(7, np.int64))
    x, _ = settings.batch(Images.of_array(pixels), labels, np.arange(6), 0, 0)
    x_loop, *_ = naive_batch(settings, list(pixels), labels, 0, 0)
    np.testing.assert_allclose(x, x_loop, rtol=0, atol=3e-6)


@pytest.mark.parametrize("shape", [(3, 16, 16), (3, 13, 7), (1, 5, 11)])
def test_identity_settings_give_the_images_and_boxes_back(shape):
    c, h, w = shape
    rng = np.random.default_rng(0)
    settings = DetectionAugment(c, h, w, jitter=0, flip=False)
    pixels = rng.integers(0, 256, (4, c, h, w), dtype=np.uint8)
    # Dyadic boxes: their edges x ± w/2 are exact, so Darknet's round trip through them is.
    low, size = rng.integers(0, 64, (9, 2)), rng.integers(1, 64, (9, 2))
    boxes = (np.concatenate([low + size / 2, size], axis=1) / 128).astype(f32)
    labels = Labels(boxes, np.arange(9), np.array([0, 3, 3, 5, 9]))
    x, truth = settings.batch(Images.of_array(pixels), labels, np.arange(4), 5, 11)
    np.testing.assert_array_equal(x, pixels.astype(f32) / f32(255))
    for i in range(4):
        a, b = labels.offsets[i], labels.offsets[i + 1]
        kept = truth[i][truth[i, :, 2] > 0]
        expected = np.concatenate([boxes[a:b], np.arange(a, b)[:, None]], axis=1)
        assert sorted(map(tuple, kept)) == sorted(map(tuple, expected.astype(f32)))
    # Any boxes come back to float32 rounding of their edges (x ± w/2 and back, as in
    # Darknet): an ulp of 1 at most.
    boxes = np.concatenate([rng.uniform(0.3, 0.7, (3, 2)), rng.uniform(0.05, 0.55, (3, 2))],
                           axis=1).astype(f32)
    labels = Labels(boxes, np.zeros(3, np.int64), np.array([0, 3, 3, 3, 3]))
    _, truth = settings.batch(Images.of_array(pixels), labels, np.arange(4), 5, 11)
    kept = truth[0, :3, :4]
    np.testing.assert_allclose(kept[np.argsort(kept[:, 0])], boxes[np.argsort(boxes[:, 0])],
                               rtol=0, atol=np.finfo(f32).eps)


def test_same_seed_and_batch_same_data_in_any_order():
    rng = np.random.default_rng(1)
    images, labels = random_case(rng, 6, [(12, 10), (8, 8)], boxes_per_image=(1, 5))
    settings = DetectionAugment(3, 10, 10, max_boxes=3, jitter=0.2, hue=0.1, saturation=1.5,
                                exposure=1.5)
    stored = Images.of_list(list(images))
    indexes = np.array([4, 1, 5])
    first = settings.batch(stored, labels, indexes, 3, 9)
    settings.batch(stored, labels, np.array([0, 2]), 3, 2)            # another batch between
    again = settings.batch(Images.of_list(list(images)), labels, indexes, 3, 9)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    other = settings.batch(stored, labels, indexes, 3, 10)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], settings.batch(stored, labels, indexes, 4, 9)[0])


def test_batch_indexes_are_the_classifier_order():
    order1 = np.random.default_rng([5, 1]).permutation(10)
    order2 = np.random.default_rng([5, 2]).permutation(10)
    assert list(batch_indexes(5, 0, 3, 10)) == list(order1[:3])
    assert list(batch_indexes(5, 2, 3, 10)) == list(order1[6:9])
    assert list(batch_indexes(5, 3, 3, 10)) == list(order2[:3])     # 3 batches an epoch
    with pytest.raises(DarkbpError, match="fewer than a batch"):
        batch_indexes(5, 0, 11, 10)


def placed(nw, nh, dx, dy, flip):
    one = lambda v: np.array([v])
    return Placements(one(float(nw)), one(float(nh)), one(float(dx)), one(float(dy)),
                      one(flip), one(f32(0)), one(f32(1)), one(f32(1)))


def truth_of(boxes, p, max_boxes=5, w=100, h=100, shuffle=None):
    boxes = np.asarray(boxes, f32)
    labels = Labels(boxes, np.arange(len(boxes)), np.array([0, len(boxes)]))
    u = np.zeros(len(boxes)) if shuffle is None else shuffle   # u = 0: swap with box 0
    return fill_truth(labels, np.array([0]), u, p, w, h, max_boxes)[0]


def test_boxes_off_the_image_are_dropped_and_cut_ones_clipped():
    # The image at half size in the right half: x' = x/2 + 1/2.
    p = placed(50, 100, 50, 0, False)
    truth = truth_of([[0.5, 0.5, 0.2, 0.2], [0.99, 0.5, 0.02, 0.4]], p, w=100, h=100,
                     shuffle=np.array([0.9, 0.9]))       # swap 0<->1, then 1<->1
    np.testing.assert_allclose(truth[:2], [[0.995, 0.5, 0.01, 0.4, 1],
                                           [0.75, 0.5, 0.1, 0.2, 0]], rtol=1e-6)
    # Shifted 95 px left, the second box is off the input, the first cut at the left edge.
    p = placed(100, 100, -95, 0, False)
    truth = truth_of([[0.96, 0.5, 0.04, 0.2], [0.5, 0.5, 0.2, 0.2]], p)
    np.testing.assert_allclose(truth[0], [0.015, 0.5, 0.03, 0.2, 0], rtol=1e-5)
    assert not truth[1:].any()
    # Below .001 wide after clipping: dropped, the next box takes its place.
    p = placed(100, 100, -99.95, 0, False)
    truth = truth_of([[0.9995, 0.5, 0.001, 0.2], [0.99999, 0.5, 0.00001, 0.2]], p)
    assert not truth.any()


def test_flipped_boxes_mirror_x():
    p = placed(100, 100, 0, 0, True)
    truth = truth_of([[0.25, 0.5, 0.125, 0.25]], p)
    np.testing.assert_array_equal(truth[0], [0.75, 0.5, 0.125, 0.25, 0])
    # A whole batch: the flipped image and its boxes agree.
    settings = DetectionAugment(3, 8, 8, jitter=0, flip=True)
    pixels = np.zeros((40, 3, 8, 8), np.uint8)
    pixels[:, :, 2:4, 1:3] = 255                          # a square at x 1..2 of 8
    labels = Labels(np.tile(f32([[0.25, 0.375, 0.25, 0.25]]), (40, 1)), np.zeros(40, np.int64),
                    np.arange(41))
    x, truth = settings.batch(Images.of_array(pixels), labels, np.arange(40), 0, 0)
    flipped = truth[:, 0, 0] == f32(0.75)
    assert 5 < flipped.sum() < 35 and set(truth[:, 0, 0]) == {f32(0.25), f32(0.75)}
    np.testing.assert_array_equal(x[flipped], pixels[flipped][..., ::-1] / f32(255))
    np.testing.assert_array_equal(x[~flipped], pixels[~flipped] / f32(255))


def test_max_boxes_keeps_the_first_after_the_shuffle():
    boxes = np.array([[0.1 * k + 0.05, 0.5, 0.05, 0.05] for k in range(8)], f32)
    shuffle = np.array([0.99, 0.5, 0.1, 0.7, 0.3, 0.0, 0.9, 0.2])
    truth = truth_of(boxes, placed(100, 100, 0, 0, False), max_boxes=3, shuffle=shuffle)
    rows = np.concatenate([np.arange(8)[:, None], boxes], axis=1)
    np.testing.assert_array_equal(truth, naive.fill_truth_detection(
        rows, 3, shuffle, False, f32(-0.), f32(-0.), f32(1), f32(1)))
    assert truth.shape == (3, 5) and (truth[:, 2] > 0).all()


def test_a_box_centred_at_the_corner_is_dropped_as_alexeyab_does():
    truth = truth_of([[0, 0, 0.25, 0.25], [0.5, 0.5, 0.25, 0.25]],
                     placed(100, 100, 0, 0, False))
    np.testing.assert_array_equal(truth[:2], [[0.5, 0.5, 0.25, 0.25, 1], [0, 0, 0, 0, 0]])


# ---------------------------------------------------------------------- the list

def write_set(root, labels: dict[str, str | None]) -> str:
    """images/NAME.png (8 x 8) with labels/NAME.txt holding the text (None: no file)."""
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for name, text in labels.items():
        Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(root / "images" / f"{name}.png")
        if text is not None:
            (root / "labels" / f"{name}.txt").write_text(text)
    listing = root / "train.txt"
    listing.write_text("".join(f"images/{name}.png\n" for name in labels))
    return str(listing)


def test_a_list_is_checked_and_loads_batches(tmp_path):
    listing = write_set(tmp_path, {"a": "0 0.5 0.5 0.25 0.25\n1 0.25 0.25 0.125 0.125\n",
                                   "b": "", "c": None, "d": "2 0.5 0.5 0.5 0.5"})
    data = load_list(listing, classes=3)
    assert len(data) == 4 and list(np.diff(data.labels.offsets)) == [2, 0, 0, 1]
    warnings = data.counts.warnings()
    assert len(warnings) == 2 and "1 of 4 images have no label file" in warnings[0]
    assert "1 of 4 images have an empty label file" in warnings[1]
    settings = DetectionAugment(3, 8, 8, jitter=0, flip=False)
    images = data.decode(3)
    x, truth = settings.batch(images, data.labels, np.array([3, 0]), 0, 0)
    assert x.shape == (2, 3, 8, 8) and np.all(x == f32(100) / f32(255))
    assert truth.shape == (2, 90, 5) and truth[0, 0, 4] == 2 and (truth[1, :2, 2] > 0).all()
    # One batch straight from files, as Darknet reads them.
    x2, truth2 = load_data_detection(list(data.paths[3:4]) + [data.paths[0]],
                                     [str(tmp_path / "labels/d.txt"),
                                      str(tmp_path / "labels/a.txt")], settings, 3, 0, 0)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(truth2, truth)


@pytest.mark.parametrize("text, line, message", [
    ("0 0.5 0.5 0.1\n", 1, "expected 5 fields"),
    ("0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n", 2, "class '3'"),
    ("\n0 0.5 nan 0.1 0.1\n", 2, "y 'nan'"),
    ("0 0.5 0.5 1.5 0.1\n", 1, "width '1.5'"),
    ("0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.0 0.1\n", 2, "width '0.0': a box of no area"),
])
def test_a_bad_label_file_is_one_error_naming_file_and_line(tmp_path, text, line, message):
    listing = write_set(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n", "b": text})
    with pytest.raises(DarkbpError, match=message) as error:
        load_list(listing, classes=3)
    assert error.value.file.endswith("labels/b.txt") and error.value.line == line


def test_missing_images_and_bad_settings_are_errors(tmp_path):
    listing = write_set(tmp_path, {"a": ""})
    with open(listing, "a") as f:
        f.write("images/gone.png\n")
    with pytest.raises(DarkbpError, match="1 of 2 images do not exist.*gone.png"):
        load_list(listing, classes=1)
    with pytest.raises(DarkbpError, match="jitter=1"):
        DetectionAugment(3, 8, 8, jitter=1)
    with pytest.raises(DarkbpError, match="channels=4"):
        DetectionAugment(4, 8, 8)


def test_draws_are_fixed_per_seed_and_batch():
    u, shuffle = draws(1, 2, 3, 4)
    assert u.shape == (3, DRAWS) and shuffle.shape == (4,)
    again, _ = draws(1, 2, 3, 4)
    np.testing.assert_array_equal(u, again)
    assert FLIP == DRAWS - 1


def test_settings_of_a_network_are_its_last_heads_and_nets():
    network = parse_network(str(ROOT / "tests/detector_cfgs/yolov3-tiny-160x96.cfg"))
    assert DetectionAugment.of_network(network) == DetectionAugment(3, 96, 160, 90, 0.3)
