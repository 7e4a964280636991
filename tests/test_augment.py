"""The training augmentation (darkbp.augment) against a per-pixel transcription of Darknet's C.

The reference below is pjreddie's src/image.c random_augment_args, rotate_crop_image,
bilinear_interpolate, flip_image, random_distort_image, distort_image, rgb_to_hsv and
hsv_to_rgb, and src/utils.c rand_int, rand_uniform and rand_scale, loop for loop, in C's
float32 where C uses float, with each `(float)rand()/RAND_MAX` and `rand()%n` replaced by
the uniform darkbp draws for it. The tests then check the [net] keys (defaults, bad
values), which data gets augmented, the decoding for it, determinism (seed, batch) across
threads, subdivisions and --resume, and that the identity keys change nothing.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from darkbp import augment as aug
from darkbp.augment import Augment, Images, draws, training_augment
from darkbp.datasets import Dataset, load_dataset, network_input
from darkbp.errors import DarkbpError
from darkbp.idx import write_idx
from darkbp.imagedata import ImageList
from darkbp.network import parse_network
from darkbp.train import Trainer, TrainOptions
from tests.conftest import CFG_DIR, SAMPLE, assert_cfg_error
from tests.test_imagedata import (darknet_resize_image, last_row_quirk, write_darknet_copy,
                                  write_png)

f32 = np.float32


# ---------------------------------------------------------------------- Darknet, transcribed

def rand_uniform(low, high, u):
    if high < low:
        low, high = high, low
    return f32(u * (high - low) + low)


def rand_int(low, high, u):
    if high < low:
        low, high = high, low
    return int(u * (high - low + 1)) + low          # rand() % (high - low + 1) + low


def rand_scale(s, u, coin):
    scale = rand_uniform(1, s, u)
    return scale if coin < 0.5 else f32(1. / scale)


def get_pixel_extend(im, x, y, c):
    _, h, w = im.shape
    if x < 0 or x >= w or y < 0 or y >= h:
        return 0
    return im[c, y, x]


def bilinear_interpolate(im, x, y, c):
    ix, iy = int(math.floor(x)), int(math.floor(y))
    dx, dy = f32(x - ix), f32(y - iy)
    return ((1 - dy) * (1 - dx) * get_pixel_extend(im, ix, iy, c)
            + dy * (1 - dx) * get_pixel_extend(im, ix, iy + 1, c)
            + (1 - dy) * dx * get_pixel_extend(im, ix + 1, iy, c)
            + dy * dx * get_pixel_extend(im, ix + 1, iy + 1, c))


def rotate_crop_image(im, rad, s, w, h, dx, dy, aspect):
    c_, ih, iw = im.shape
    cx, cy = iw / 2., ih / 2.
    rot = np.zeros((c_, h, w), np.float32)
    for c in range(c_):
        for y in range(h):
            for x in range(w):
                rx = f32(math.cos(rad) * ((x - w / 2.) / s * aspect + dx / s * aspect)
                         - math.sin(rad) * ((y - h / 2.) / s + dy / s) + cx)
                ry = f32(math.sin(rad) * ((x - w / 2.) / s * aspect + dx / s * aspect)
                         + math.cos(rad) * ((y - h / 2.) / s + dy / s) + cy)
                rot[c, y, x] = bilinear_interpolate(im, rx, ry, c)
    return rot


def random_augment_image(im, angle, aspect, low, high, w, h, u):
    """pjreddie's random_augment_args + rotate_crop_image; dy's range from h (see augment)."""
    _, ih, iw = im.shape
    aspect = rand_scale(aspect, u[aug.ASPECT], u[aug.ASPECT_COIN])
    r = rand_int(low, high, u[aug.CROP])
    m = ih if ih < f32(iw * aspect) else int(f32(iw * aspect))
    scale = f32(f32(r) / m)
    rad = f32(rand_uniform(-angle, angle, u[aug.ANGLE]) * 2 * math.pi / 360.)
    dx = f32((iw * scale / aspect - w) / 2.)
    dy = f32((ih * scale - h) / 2.)
    dx = rand_uniform(-dx, dx, u[aug.DX])
    dy = rand_uniform(-dy, dy, u[aug.DY])
    return rotate_crop_image(im, rad, scale, w, h, dx, dy, aspect)


def flip_image(a):
    c_, h, w = a.shape
    for k in range(c_):
        for i in range(h):
            for j in range(w // 2):
                a[k, i, j], a[k, i, w - j - 1] = a[k, i, w - j - 1], a[k, i, j]


def rgb_to_hsv(im):
    _, h_, w_ = im.shape
    for j in range(h_):
        for i in range(w_):
            r, g, b = (float(im[k, j, i]) for k in range(3))
            high, low = max(r, g, b), min(r, g, b)
            delta = high - low
            v = high
            if high == 0:
                s = h = 0.
            else:
                s = delta / high
                if delta == 0:
                    h = math.nan                          # C's 0/0
                elif r == high:
                    h = (g - b) / delta
                elif g == high:
                    h = 2 + (b - r) / delta
                else:
                    h = 4 + (r - g) / delta
                if h < 0:
                    h += 6
                h = h / 6.
            im[0, j, i], im[1, j, i], im[2, j, i] = h, s, v


def hsv_to_rgb(im):
    _, h_, w_ = im.shape
    for j in range(h_):
        for i in range(w_):
            h, s, v = 6 * float(im[0, j, i]), float(im[1, j, i]), float(im[2, j, i])
            if s == 0:
                r = g = b = v
            else:
                index = math.floor(h)
                f = h - index
                p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
                r, g, b = {0: (v, t, p), 1: (q, v, p), 2: (p, v, t), 3: (p, q, v),
                           4: (t, p, v)}.get(index, (v, p, q))
            im[0, j, i], im[1, j, i], im[2, j, i] = r, g, b


def distort_image(im, hue, sat, val):
    rgb_to_hsv(im)
    im[1] *= sat
    im[2] *= val
    plane = im[0].reshape(-1)
    for i in range(len(plane)):
        plane[i] = plane[i] + hue
        if plane[i] > 1:
            plane[i] -= 1
        if plane[i] < 0:
            plane[i] += 1
    hsv_to_rgb(im)
    np.clip(im, 0, 1, out=im)                             # constrain_image


def darknet_augment(image, a: Augment, u) -> np.ndarray:
    """load_image_augment_paths for one uint8 (C, H, W) image: crop, flip, distort."""
    im = image.astype(np.float32) / 255.
    crop = random_augment_image(im, a.angle, a.aspect, a.min_crop, a.max_crop, a.width,
                                a.height, u)
    if a.flip and u[aug.FLIP] < 0.5:
        flip_image(crop)
    dhue = rand_uniform(-a.hue, a.hue, u[aug.HUE])
    dsat = rand_scale(a.saturation, u[aug.SAT], u[aug.SAT_COIN])
    dexp = rand_scale(a.exposure, u[aug.EXP], u[aug.EXP_COIN])
    if len(crop) == 3:
        distort_image(crop, dhue, dsat, dexp)
    else:       # a grey image: what distort_image does to it replicated to RGB, below
        grey = np.repeat(crop, 3, axis=0)
        distort_image(grey, dhue, dsat, dexp)
        crop = grey[:1]
    return crop


# ---------------------------------------------------------------------- the sampler

def ragged(rng, shapes) -> tuple[Images, list[np.ndarray]]:
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]
    return Images.of_list(list(images)), images


def random_augment(rng, channels, h, w) -> Augment:
    low, high = sorted(rng.integers(max(2, w // 2), 2 * w + 1, 2))
    if rng.random() < 0.3:
        low, high = high, low                        # Darknet swaps reversed crop bounds
    return Augment(channels, h, w, int(low), int(high), angle=float(rng.uniform(-30, 30)),
                   aspect=float(rng.choice([1, rng.uniform(0.6, 1.6)])),
                   saturation=float(rng.uniform(0.5, 2)), exposure=float(rng.uniform(0.5, 2)),
                   hue=float(rng.uniform(-0.5, 0.5)), flip=bool(rng.random() < 0.7))


@pytest.mark.parametrize("channels", [1, 3])
def test_the_batch_is_darknets_augmentation_image_by_image(channels):
    rng = np.random.default_rng(channels)
    checked = 0
    for trial in range(12):
        h, w = (int(v) for v in rng.integers(3, 11, 2))
        shapes = [(channels, *(int(v) for v in rng.integers(2, 16, 2))) for _ in range(5)]
        shapes.append((channels, h, w))                       # one of the crop's own size
        images, originals = ragged(rng, shapes)
        a = random_augment(rng, channels, h, w)
        picked = rng.permutation(len(originals))[:4]
        u = draws(trial, 7, len(picked))
        ours = a.batch(images, picked, u)
        assert ours.shape == (len(picked), channels, h, w) and ours.dtype == np.float32
        for k, i in enumerate(picked):
            theirs = darknet_augment(originals[i], a, u[k])
            np.testing.assert_allclose(ours[k], theirs, rtol=0, atol=2e-5,
                                       err_msg=f"trial {trial}, image {i}: {a}")
            checked += 1
    assert checked == 48


def test_flip_aspect_rotation_and_offsets_one_at_a_time():
    # Each part of the map and of the colour alone, so that a failure names the part.
    rng = np.random.default_rng(11)
    images, originals = ragged(rng, [(3, 13, 17), (3, 16, 9)])
    base = dict(channels=3, height=8, width=6, min_crop=8, max_crop=8, angle=0.0, aspect=1.0,
                saturation=1.0, exposure=1.0, hue=0.0, flip=False)
    for change in ({}, {"flip": True}, {"aspect": 1.5}, {"aspect": 0.7}, {"angle": 90.0},
                   {"min_crop": 4, "max_crop": 12}, {"hue": 0.3}, {"saturation": 1.8},
                   {"exposure": 0.6}):
        a = Augment(**{**base, **change})
        u = draws(5, 1, 2)
        u[:, aug.FLIP] = 0.25                                  # both flipped, when on
        ours = a.batch(images, np.arange(2), u)
        for k in range(2):
            np.testing.assert_allclose(ours[k], darknet_augment(originals[k], a, u[k]),
                                       rtol=0, atol=2e-5, err_msg=str(change))


def test_a_grey_image_distorts_as_the_same_image_in_rgb():
    rng = np.random.default_rng(3)
    grey, _ = ragged(rng, [(1, 9, 9)] * 6)
    rgb = Images.of_array(np.repeat(grey.pixels.reshape(6, 1, 9, 9), 3, axis=1))
    a = Augment(3, 7, 7, 7, 11, 20.0, 1.3, 1.7, 1.6, 0.4, True)
    u = draws(0, 0, 6)
    from_grey = a.batch(grey, np.arange(6), u)          # 1 channel, replicated at the end
    from_rgb = a.batch(rgb, np.arange(6), u)
    np.testing.assert_allclose(from_grey, from_rgb, rtol=0, atol=1e-6)
    assert not np.array_equal(from_grey, a.batch(grey, np.arange(6), draws(0, 1, 6)))


def test_the_identity_keys_give_the_images_back_bit_for_bit():
    rng = np.random.default_rng(5)
    for c, h, w in ((1, 28, 28), (3, 32, 32), (3, 7, 12)):
        array = rng.integers(0, 256, (9, c, h, w), dtype=np.uint8)
        identity = Augment(c, h, w, min_crop=min(h, w), max_crop=min(h, w), angle=0.0,
                           aspect=1.0, saturation=1.0, exposure=1.0, hue=0.0, flip=False)
        picked = np.array([4, 0, 8, 4])
        x = identity.batch(Images.of_array(array), picked, draws(1, 2, 4))
        np.testing.assert_array_equal(x, network_input(array[picked], (c, h, w)))


def test_draws_are_per_batch_and_position():
    # Rows are images by position: the first n of a larger batch draw the same.
    np.testing.assert_array_equal(draws(4, 9, 6)[:4], draws(4, 9, 4))
    assert not np.array_equal(draws(4, 9, 4), draws(4, 10, 4))
    assert not np.array_equal(draws(4, 9, 4), draws(5, 9, 4))
    u = draws(0, 0, 20000)
    scale = aug.rand_scale(0.75, u[:, aug.SAT], u[:, aug.SAT_COIN])  # Darknet's saturation=.75
    assert 0.75 <= scale.min() < 0.76 and 1 / 0.76 < scale.max() <= 1 / 0.75
    assert abs(np.mean(scale < 1) - 0.5) < 0.02


# ---------------------------------------------------------------------- the [net] keys

NET = "[net]\nbatch=4\nwidth=28\nheight=28\nchannels=1\n{keys}\n[connected]\noutput=10\n[softmax]\n"


def test_darknets_defaults(write_cfg):
    config = parse_network(write_cfg(NET.format(keys=""))).config
    assert (config.min_crop, config.max_crop, config.angle, config.aspect, config.saturation,
            config.exposure, config.hue, config.flip, config.augment_keys) == \
        (28, 56, 0, 1, 1, 1, 0, True, ())
    net = parse_network(write_cfg(NET.format(keys="max_crop=32\nflip=0\nhue=-.1\nangle=-7\n"
                                                  "saturation=.75\ncenter=1")))
    c = net.config
    assert (c.min_crop, c.max_crop, c.flip, c.hue, c.angle, c.saturation) == \
        (28, 32, False, -0.1, -7, 0.75)
    assert c.augment_keys == ("max_crop", "angle", "saturation", "hue", "flip")
    # Darknet's classifier training never passes `center` to its loader: still ignored.
    assert [w.message for w in net.warnings] == [
        "[net] option 'center' is known to Darknet but not used by darkbp"]


@pytest.mark.parametrize("keys, line, words", [
    ("min_crop=0", 6, "'min_crop' must be at least 1, got 0"),
    ("max_crop=-4", 6, "'max_crop' must be at least 1, got -4"),
    ("aspect=0", 6, "'aspect' must be greater than 0, got 0"),
    ("saturation=-1", 6, "'saturation' must be greater than 0, got -1"),
    ("exposure=0", 6, "'exposure' must be greater than 0, got 0"),
    ("hue=1.5", 6, "'hue' must be between -1 and 1 (a fraction of the colour circle), got 1.5"),
    ("flip=-1", 6, "'flip' must be at least 0, got -1"),
    ("angle=x", 6, "'angle' must be a number, got 'x'"),
])
def test_bad_values_are_errors_at_their_line(write_cfg, keys, line, words):
    assert_cfg_error(write_cfg(NET.format(keys=keys)), line, "net", words)


def test_reversed_crop_bounds_are_darknets_swap(write_cfg):
    reversed_ = parse_network(write_cfg(NET.format(keys="min_crop=40\nmax_crop=30"))).config
    a = training_augment(reversed_, by_default=True, file="x")
    b = dataclasses.replace(a, min_crop=30, max_crop=40)
    images = Images.of_array(np.random.default_rng(0).integers(0, 256, (3, 1, 28, 28),
                                                               dtype=np.uint8))
    u = draws(0, 0, 3)
    np.testing.assert_array_equal(a.batch(images, np.arange(3), u),
                                  b.batch(images, np.arange(3), u))


def test_which_data_is_augmented(write_cfg):
    plain = parse_network(write_cfg(NET.format(keys=""))).config
    keyed = parse_network(write_cfg(NET.format(keys="angle=10"))).config
    assert training_augment(plain, by_default=False, file="x") is None       # IDX, no keys
    assert training_augment(plain, by_default=True, file="x") == \
        Augment(1, 28, 28, 28, 56, 0.0, 1.0, 1.0, 1.0, 0.0, True)             # images
    assert training_augment(keyed, by_default=False, file="x") == \
        Augment(1, 28, 28, 28, 56, 10.0, 1.0, 1.0, 1.0, 0.0, True)            # IDX, keys
    flat = write_cfg("[net]\ninputs=784\n[connected]\noutput=10\n[softmax]\n", "flat.cfg")
    assert training_augment(parse_network(flat).config, by_default=True, file="x") is None


def test_keys_for_a_flat_input_are_an_error(write_cfg):
    path = write_cfg("[net]\nbatch=4\ninputs=784\nangle=5\n[connected]\noutput=10\n[softmax]\n")
    with pytest.raises(DarkbpError, match="angle augments images, but the network's input is "
                                          "flat") as caught:
        Trainer(parse_network(path), load_dataset(str(SAMPLE)),
                TrainOptions(out=path.parent / "out", max_batches=1))
    assert (caught.value.file, caught.value.line) == (str(path), 1)


# ---------------------------------------------------------------------- the data it crops

def test_image_files_are_kept_at_their_size_up_to_the_largest_crop(tmp_path):
    rng = np.random.default_rng(8)
    pictures = [rng.integers(0, 256, shape, dtype=np.uint8)
                for shape in ((20, 30, 3), (40, 36, 3), (32, 90, 3), (9, 9, 3))]
    paths = tuple(str(write_png(tmp_path / f"{i}.png", p)) for i, p in enumerate(pictures))
    calls = []
    images = ImageList(paths, np.zeros(4, np.int64), "list").decode_originals(
        3, 30, lambda done, total: calls.append((done, total)))
    assert calls == [(4, 4)] and images.channels == 3
    # Shorter side above 30: Darknet's resize_min to 30 (C's integer division), rounded
    # (sizes where Darknet's float32 last row is its true last row, see test_imagedata).
    expected = [pictures[0], None, None, pictures[3]]
    for i, (h, w) in ((1, (33, 30)), (2, (30, 84))):
        assert not last_row_quirk(pictures[i].shape[0], h)
        chw = pictures[i].transpose(2, 0, 1).astype(np.float32)
        expected[i] = np.clip(np.rint(darknet_resize_image(chw, w, h)), 0, 255).astype(
            np.uint8).transpose(1, 2, 0)
    for i, picture in enumerate(expected):
        h, w = images.heights[i], images.widths[i]
        assert (h, w) == picture.shape[:2]
        stored = images.pixels[images.offsets[i]:images.offsets[i] + h * w * 3]
        np.testing.assert_array_equal(stored.reshape(h, w, 3), picture)


def _arrays(images):
    labels = np.zeros(len(images), np.int64)
    return Dataset(name="d", train_images=images, train_labels=labels, test_images=images,
                   test_labels=labels, source=Path("d"), classes=("a",))


def test_arrays_are_cropped_where_they_are():
    rng = np.random.default_rng(9)
    grey = rng.integers(0, 256, (5, 12, 12), dtype=np.uint8)
    a = Augment(3, 12, 12, 12, 12, 0.0, 1.0, 1.0, 1.0, 0.0, False)
    decoded = _arrays(grey).decoded((3, 12, 12), augment=a)
    images = decoded.train_images
    assert images.channels == 1 and np.shares_memory(images.pixels, grey)   # no copy
    assert decoded.test_images is grey
    np.testing.assert_array_equal(a.batch(images, np.arange(5), draws(0, 0, 5)),
                                  network_input(grey, (3, 12, 12)))          # replicated
    rgb = rng.integers(0, 256, (5, 3, 12, 12), dtype=np.uint8)
    a1 = dataclasses.replace(a, channels=1)
    images = _arrays(rgb).decoded((1, 12, 12), augment=a1).train_images
    np.testing.assert_array_equal(a1.batch(images, np.arange(5), draws(0, 0, 5)),
                                  network_input(rgb, (1, 12, 12)))           # its luma


# ---------------------------------------------------------------------- training

LENET = CFG_DIR / "mnist.cfg"


def cfg_with(tmp_path, keys: str, batch="batch=64\nsubdivisions=1", name="net.cfg") -> Path:
    text = LENET.read_text().replace("batch=64\nsubdivisions=1", batch)
    path = tmp_path / name
    path.write_text(text.replace("max_batches=2811", "max_batches=2811\n" + keys))
    return path


class Recorder(Trainer):
    """A Trainer that keeps (batch number, subdivision, input) of every training pass."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inputs = []
        step = self.runner.train_step

        def recorded(x, truth, noise):
            self.inputs.append((noise.batch_num, noise.subdivision, x.copy()))
            return step(x, truth, noise)
        self.runner.train_step = recorded


def test_idx_data_is_augmented_only_with_keys(tmp_path, sample):
    plain = Recorder(parse_network(LENET), sample,
                     TrainOptions(out=tmp_path / "a", max_batches=2, seed=3))
    assert plain.augment is None
    plain.run()
    order = np.random.default_rng([3, 1]).permutation(len(sample.train_labels))
    for batch_num, _, x in plain.inputs:                     # exactly today's input
        np.testing.assert_array_equal(
            x, network_input(sample.train_images[order[64 * batch_num:64 * (batch_num + 1)]],
                             (1, 28, 28)))
    keyed = Recorder(parse_network(cfg_with(tmp_path, "angle=10\nflip=0")), sample,
                     TrainOptions(out=tmp_path / "b", max_batches=2, seed=3))
    assert keyed.augment == Augment(1, 28, 28, 28, 56, 10.0, 1.0, 1.0, 1.0, 0.0, False)
    keyed.run()
    images = Images.of_array(sample.train_images[:, None])
    for batch_num, _, x in keyed.inputs:        # the draws of (seed 3, batch_num), by position
        picked = order[64 * batch_num:64 * (batch_num + 1)]
        np.testing.assert_array_equal(x, keyed.augment.batch(images, picked,
                                                             draws(3, batch_num, 64)))


def test_image_files_get_darknets_defaults(tmp_path):
    data = write_darknet_copy(tmp_path / "d", {"train": random_images(70, 1),
                                               "valid": random_images(10, 2)},
                              [f"c{k}" for k in range(10)])
    trainer = Trainer(parse_network(LENET), load_dataset(str(data)),
                      TrainOptions(out=tmp_path / "out", max_batches=1))
    assert trainer.augment == Augment(1, 28, 28, 28, 56, 0.0, 1.0, 1.0, 1.0, 0.0, True)
    assert isinstance(trainer.dataset.train_images, Images)
    assert isinstance(trainer.dataset.test_images, np.ndarray)      # valid: unchanged


def random_images(n, seed, shape=(28, 28)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n)


@pytest.mark.parametrize("threads, subdivisions", [(2, 1), (1, 4), (2, 4)])
def test_the_batch_is_the_same_for_any_threads_and_subdivisions(tmp_path, sample, threads,
                                                                subdivisions):
    keys = "angle=15\nmin_crop=24\nmax_crop=36\nexposure=1.5"
    runs = []
    for t, s in ((1, 1), (threads, subdivisions)):
        cfg = cfg_with(tmp_path, keys, f"batch=64\nsubdivisions={s}", f"net{s}.cfg")
        trainer = Recorder(parse_network(cfg), sample,
                           TrainOptions(out=tmp_path / f"{t}{s}", max_batches=3, seed=5,
                                        threads=t))
        trainer.run()
        runs.append({b: np.concatenate([x for bb, _, x in trainer.inputs if bb == b])
                     for b in range(3)})
    for b in range(3):
        np.testing.assert_array_equal(runs[0][b], runs[1][b])


@pytest.mark.parametrize("threads", [1, 2])
def test_resume_with_augmentation_is_bit_for_bit(tmp_path, sample, threads):
    cfg = cfg_with(tmp_path, "angle=10\nmin_crop=26\nmax_crop=34\nflip=0\nexposure=1.3",
                   "batch=32\nsubdivisions=2")

    def train(out, max_batches, resume=False):
        trainer = Trainer(parse_network(cfg), sample,
                          TrainOptions(out=tmp_path / out, max_batches=max_batches, seed=7,
                                       ema=0.9, threads=threads, resume=resume))
        trainer.run()
        return trainer

    whole = train("whole", 160)                  # 125 batches an epoch: into the second
    train("part", 100)
    resumed = train("part", 160, resume=True)
    for kind in ("final", "last", "ema"):
        assert resumed.path(kind).read_bytes() == whole.path(kind).read_bytes()


def test_identity_keys_train_png_files_as_their_idx_copy(tmp_path):
    train, valid = random_images(300, 3), random_images(40, 4)
    (tmp_path / "idx").mkdir()
    for name, array in zip(("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
                           (*train, *valid)):
        write_idx(tmp_path / "idx" / f"{name}.gz", array.astype(np.uint8))
    png = write_darknet_copy(tmp_path / "png", {"train": train, "valid": valid},
                             [f"c{k}" for k in range(10)])
    cfg = cfg_with(tmp_path, "min_crop=28\nmax_crop=28\nflip=0")
    weights = []
    for spec in (tmp_path / "idx", png):
        trainer = Trainer(parse_network(cfg), load_dataset(str(spec)),
                          TrainOptions(out=tmp_path / spec.name / "out", max_batches=6,
                                       seed=2))
        trainer.run()
        weights.append(trainer.path("final").read_bytes())
    assert isinstance(trainer.dataset.train_images, Images)       # the PNGs were augmented
    assert weights[0] == weights[1]


def test_describe_names_what_is_drawn():
    from darkbp.augment import Augment
    plain = Augment(1, 28, 28, 28, 56, 0.0, 1.0, 1.0, 1.0, 0.0, True)
    assert plain.describe() == ("shorter side scaled to 28-56 px, a random 28 x 28 crop, "
                                "50% horizontal flip")
    colour = Augment(3, 32, 32, 40, 32, -7.0, 1.5, 1.5, 1.25, 0.1, False)
    assert colour.describe() == ("shorter side scaled to 32-40 px, a random 32 x 32 crop, "
                                 "aspect 1.5, angle ±7°, no flip, hue 0.1, saturation 1.5, "
                                 "exposure 1.25")
