"""Darknet's detection training data: each image placed at a random size and aspect on a grey
canvas, flipped, its colours distorted, and its boxes moved with it; vectorised over a batch.

What Darknet does to each training image (pjreddie src/data.c load_data_detection,
fill_truth_detection, read_boxes, randomize_boxes, correct_boxes; src/image.c place_image,
bilinear_interpolate, flip_image, random_distort_image, distort_image, rgb_to_hsv,
hsv_to_rgb), for an image of W x H pixels and a network input of w x h:

1. The new aspect: a = (W + uniform(−jitter·W, jitter·W)) / (H + uniform(−jitter·H,
   jitter·H)). The image's new size fills the input along one side: nw = w, nh = w / a when
   a ≥ 1, else nh = h, nw = h·a. Its offset: dx = uniform(0, w − nw), dy = uniform(0, h − nh)
   (negative when the image overhangs the input).
2. place_image on a canvas of 0.5 grey: C's (int) of nw, nh, dx, dy (toward zero) gives the
   placed rectangle; its pixel (x, y) reads the image bilinearly at (x·W/nw, y·H/nh), each
   corner outside the image reading 0.
3. random_distort_image, on the whole canvas: hue + uniform(−hue, hue), saturation ×
   rand_scale(saturation), value × rand_scale(exposure), through Darknet's HSV and back,
   then clamped to [0, 1]. rand_scale(s) is uniform in [1, s], then it or 1/it, ½ each.
4. The flip: a mirror image, half of the time (pjreddie always; AlexeyAB's flip=0 never).
5. The boxes (fill_truth_detection): every box of the label file, as read_boxes keeps it
   (its left, right, top and bottom edges x ∓ w/2, y ∓ h/2), shuffled by randomize_boxes
   (for i = 0..n−1, swap box i with box rand()%n), then correct_boxes: each edge scaled by
   nw/w (nh/h) and shifted by dx/w (dy/h), mirrored when flipped (left = 1 − right), each
   edge clipped to [0, 1], and x, y, w, h recomputed from the clipped edges. Only the first
   `max_boxes` boxes (the last head's max=) are kept; of those, a box whose w or h is below
   .001 is dropped, the others packed in order. The truth: (max_boxes, 5) per image, x, y,
   w, h relative to the network input, then the class, zero padded (net->truth for [yolo]
   and [region]).

darkbp does all of this for the whole batch at once: the images of one size are placed with
gathers of whole rows (columns first, on the image turned; then rows: Darknet's bilinear
weights, applied separably), the distortion runs on every pixel of the batch together, and the boxes are corrected in one
pass in float32, operation by operation as Darknet's C, so that the truth equals Darknet's
bit for bit for the same draws. Where darkbp differs from pjreddie, and why:

- The random numbers are NumPy's, in Darknet's distributions: batch b's come from the
  generator seeded [seed, 4, b]: first (n, DRAWS) uniforms, one row per image by its
  position in the batch, then one uniform per label box of the batch in batch order (the
  shuffle). The batch is the same for any number of threads or processes, and after a
  resume. Darknet picks its images at random with replacement; darkbp's list loader walks
  a fresh permutation each epoch, as its classifier training does (`batch_indexes`).
- The new size, the offset and the sampling positions are computed in float64 (Darknet:
  float32), and nh = w·(H + jh)/(W + jw) rather than w / a: the same numbers up to rounding,
  but exact where nothing changes. So with jitter=0, no flip, no colour change and an image
  of the input's size, the input is the image / 255 exactly (Darknet's float32 arithmetic
  reads most such images back shifted by a rounding error: (x/w)·w is not x for w = 13),
  and the boxes are Darknet's (their edges and back, in float32).
- When hue is 0 and saturation and exposure are 1 the HSV round trip is skipped: it
  changes pixels by float rounding only.
- The bilinear weights are applied columns first, then rows, and the division by 255 comes
  last; the HSV round trip computes each channel as v − v·s·k (k Darknet's p, q, t weights
  as one formula): within 3e-6 of Darknet's arithmetic.
- A label box centred exactly at (0, 0) is dropped, as AlexeyAB's Darknet drops it ("Wrong
  annotation"); pjreddie's correct_boxes turns it into a box of size 999999, which its
  heads would train towards.
- A 1-channel network gets grey images (Darknet's detector always loads RGB); the
  distortion then scales the grey level by the exposure, as it changes a grey RGB pixel.

    settings = DetectionAugment.of_network(network)
    data = load_list("mnist-det/train.txt", classes=10)   # every label file checked
    images = data.decode(settings.channels)              # once, at the images' own size
    indexes = batch_indexes(seed, batch_num, batch, len(data))
    x, truth = settings.batch(images, data.labels, indexes, seed, batch_num)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from darkbp.augment import Images, rand_scale, rand_uniform
from darkbp.errors import DarkbpError
from darkbp.imagedata import SHOWN, ImageList, Progress, read_image, read_lines, resolve
from darkbp.labels import LabelCounts, find_label_file, read_label_file

F32 = np.float32
STREAM = 4      # the first word of the seed: order [seed, epoch], lr 1, noise 2, augment 3,
                # multi-scale 5
# The columns of the draws, in Darknet's order of rand() calls: one uniform each.
JITTER_W, JITTER_H, DX, DY, HUE, SAT, SAT_COIN, EXP, EXP_COIN, FLIP = range(10)
DRAWS = 10
MIN_SIZE = .001     # fill_truth_detection drops a box narrower or lower than this
# Pixels (per channel) placed and distorted at once: 16 images of 128 x 128. Measured on
# mnist-det-like images, 2^16 to 2^19 are within 10 % of the best; 2^20 takes twice as long.
CHUNK_PIXELS = 1 << 18


def draws(seed: int, batch_num: int, n: int, boxes: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, DRAWS) uniforms for the n images of batch `batch_num`, and (boxes,) for the
    shuffle of its label boxes, all float64 in [0, 1)."""
    generator = np.random.default_rng([seed, STREAM, batch_num])
    return generator.random((n, DRAWS)), generator.random(boxes)


# ---------------------------------------------------------------------- label boxes

@dataclass(frozen=True)
class Labels:
    """The label boxes of a list of images, in one array.

    boxes: (total, 4) float32 x, y, w, h relative to the image; classes: (total,) int64;
    offsets: (N + 1,) int64, image i's boxes at offsets[i]:offsets[i + 1]."""

    boxes: np.ndarray
    classes: np.ndarray
    offsets: np.ndarray

    def counts(self, indexes: np.ndarray) -> np.ndarray:
        return self.offsets[indexes + 1] - self.offsets[indexes]

    def rows(self, indexes: np.ndarray) -> np.ndarray:
        """The rows of the images at `indexes`, in that order: (sum of their counts,)."""
        counts = self.counts(indexes)
        starts = np.repeat(self.offsets[indexes] - np.cumsum(counts) + counts, counts)
        return starts + np.arange(counts.sum())

    @classmethod
    def of_files(cls, files: Sequence[str | None], classes: int) -> "Labels":
        """The boxes of label files (None: an image without objects); a bad line is
        darkbp.labels' DarkbpError naming the file and line."""
        read = [read_label_file(f, classes) if f else (np.zeros((0, 4), F32),
                                                       np.zeros(0, np.int64)) for f in files]
        counts = [len(ids) for _, ids in read]
        return cls(np.concatenate([b for b, _ in read] + [np.zeros((0, 4), F32)]),
                   np.concatenate([i for _, i in read] + [np.zeros(0, np.int64)]),
                   np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]))


# ---------------------------------------------------------------------- the settings

@dataclass(frozen=True)
class DetectionAugment:
    """load_data_detection for a network input of (channels, height, width), with the last
    head's max_boxes and jitter and the [net] hue, saturation, exposure and flip."""

    channels: int
    height: int
    width: int
    max_boxes: int = 90
    jitter: float = 0.2
    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    flip: bool = True

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise DarkbpError(f"detection training reads 1- or 3-channel images, not "
                              f"channels={self.channels}")
        if not 0 <= self.jitter < 1:
            # At 1 or more Darknet's new width or height can reach 0 or below.
            raise DarkbpError(f"jitter={self.jitter:g}: expected a number from 0 to below 1")

    @classmethod
    def of_network(cls, network) -> "DetectionAugment":
        """The settings a darkbp.network.Network's cfg gives (its last layer a head)."""
        config, head = network.config, network.layers[-1].settings
        return cls(config.channels, config.height, config.width, head["max"], head["jitter"],
                   config.hue, config.saturation, config.exposure, config.flip)

    def describe(self) -> str:
        """One line for the start of training."""
        colour = (f", hue {self.hue:g}, saturation {self.saturation:g}, exposure "
                  f"{self.exposure:g}" if self.distorts else "")
        return (f"Darknet's detection data: jitter {self.jitter:g}"
                f"{', random flips' if self.flip else ''}{colour}, at most {self.max_boxes} "
                f"boxes per image")

    @property
    def distorts(self) -> bool:
        return self.hue != 0 or self.saturation != 1 or self.exposure != 1

    def batch(self, images: Images, labels: Labels, indexes: np.ndarray, seed: int,
              batch_num: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch `batch_num` of the images and labels at `indexes`: (x float32 (n, C, h, w)
        in [0, 1], truth float32 (n, max_boxes, 5)), drawn from (seed, batch_num)."""
        if images.channels != self.channels:
            raise DarkbpError(f"images of {images.channels} channels for a network input of "
                              f"{self.channels}")
        indexes = np.asarray(indexes, np.int64)
        u, shuffle = draws(seed, batch_num, len(indexes), int(labels.counts(indexes).sum()))
        p = self.placements(images.heights[indexes], images.widths[indexes], u)
        x = np.empty((len(indexes), self.channels, self.height, self.width), F32)
        sizes = np.stack([images.heights[indexes], images.widths[indexes]], axis=1)
        # Images of one size are placed together, a few at a time (CHUNK_PIXELS): fresh
        # arrays of a whole batch would cost more in page faults than the work itself.
        step = max(1, CHUNK_PIXELS // (self.width * self.height))
        for size in np.unique(sizes, axis=0):
            group = np.flatnonzero((sizes == size).all(axis=1))
            for part in np.array_split(group, -(-len(group) // step)):
                x[part] = place(_pixels(images, indexes[part], *size), p.subset(part),
                                self.width, self.height)
        if self.distorts:
            distort(x, p.dhue, p.dsat, p.dexp)
        truth = fill_truth(labels, indexes, shuffle, p, self.width, self.height,
                           self.max_boxes)
        return x, truth

    def placements(self, heights: np.ndarray, widths: np.ndarray, u: np.ndarray
                   ) -> "Placements":
        """Each image's new size and offset, flip and colour changes, from its draws."""
        w, h = self.width, self.height
        H, W = heights.astype(np.float64), widths.astype(np.float64)
        across = W + rand_uniform(-self.jitter * W, self.jitter * W, u[:, JITTER_W])
        down = H + rand_uniform(-self.jitter * H, self.jitter * H, u[:, JITTER_H])
        narrow = across < down                          # Darknet: new_ar < 1
        nw = np.where(narrow, h * across / down, w)
        nh = np.where(narrow, h, w * down / across)
        flip = u[:, FLIP] < 0.5 if self.flip else np.zeros(len(u), bool)
        return Placements(nw, nh, rand_uniform(0, w - nw, u[:, DX]),
                          rand_uniform(0, h - nh, u[:, DY]), flip,
                          F32(rand_uniform(-self.hue, self.hue, u[:, HUE])),
                          F32(rand_scale(self.saturation, u[:, SAT], u[:, SAT_COIN])),
                          F32(rand_scale(self.exposure, u[:, EXP], u[:, EXP_COIN])))


@dataclass(frozen=True)
class Placements:
    """Per image: the new size and offset (float64, as drawn; Darknet's place_image takes
    their (int)), the flip, and the colour changes (float32). All (n,)."""

    nw: np.ndarray
    nh: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    flip: np.ndarray
    dhue: np.ndarray
    dsat: np.ndarray
    dexp: np.ndarray

    def subset(self, rows: np.ndarray) -> "Placements":
        return Placements(*(getattr(self, k)[rows] for k in self.__dataclass_fields__))


def _pixels(images: Images, indexes: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (n, H, W, C) of images of one size."""
    size = height * width * images.channels
    out = np.empty((len(indexes), size), np.uint8)
    for k, offset in enumerate(images.offsets[indexes]):
        out[k] = images.pixels[offset:offset + size]
    return out.reshape(len(indexes), height, width, images.channels)


# ---------------------------------------------------------------------- place_image

def place(pixels: np.ndarray, p: Placements, w: int, h: int) -> np.ndarray:
    """Darknet's place_image on a canvas of 0.5, then flip_image, for images of one size.

    pixels: uint8 (n, H, W, C) -> float32 (n, C, h, w) in [0, 1]."""
    n, H, W, C = pixels.shape
    k = np.arange(n)[:, None]
    pw, ph = np.trunc(p.nw).astype(np.int64), np.trunc(p.nh).astype(np.int64)
    px, py = np.trunc(p.dx).astype(np.int64), np.trunc(p.dy).astype(np.int64)
    columns = np.arange(w)
    columns = np.where(p.flip[:, None], w - 1 - columns, columns)   # (n, w): canvas column
    iy, fy0, fy1 = _axis(np.arange(h) - py[:, None], ph, H)          # (n, h) each
    ix, fx0, fx1 = _axis(columns - px[:, None], pw, W)               # (n, w) each
    # Columns first, on the source turned so that its columns are rows (a gather of rows
    # is a copy of contiguous memory; of single values, ten times slower):
    # (n, H, W, C) uint8 -> (n·C·W, H) -> (n, C, w, H) float32, Darknet's x weights.
    source = pixels.transpose(0, 3, 2, 1).reshape(n * C * W, H)
    first = ((k * C + np.arange(C)) * W)[:, :, None]                 # (n, C, 1)
    near = _rows(source, first + ix[:, None, :], fx0)
    near += _rows(source, first + np.minimum(ix + 1, W - 1)[:, None, :], fx1)
    # Then rows: turned back, (n·C·H, w) -> (n, C, h, w), Darknet's y weights.
    turned = near.transpose(0, 1, 3, 2).reshape(n * C * H, w)
    first = ((k * C + np.arange(C)) * H)[:, :, None]
    out = _rows(turned, first + iy[:, None, :], fy0)
    out += _rows(turned, first + np.minimum(iy + 1, H - 1)[:, None, :], fy1)
    out /= F32(255)
    # The canvas outside the placed rectangle stays grey (set_pixel skips what lies beyond).
    inside_rows = (np.arange(h) >= py[:, None]) & (np.arange(h) < (py + ph)[:, None])
    inside_columns = (columns >= px[:, None]) & (columns < (px + pw)[:, None])
    np.copyto(out, F32(0.5),
              where=~(inside_rows[:, None, :, None] & inside_columns[:, None, None, :]))
    return out


def _rows(array: np.ndarray, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """array's rows at `rows` (n, C, m) as float32 (n, C, m, length), each times its
    weight of `weights` (n, m)."""
    n, c, m = rows.shape
    taken = np.take(array, rows.reshape(-1), axis=0).reshape(n, c, m, -1).astype(F32)
    taken *= weights[:, None, :, None]
    return taken


def _axis(positions: np.ndarray, placed: np.ndarray, size: int):
    """Along one axis: the placed image's pixels `positions` (n, m) of `placed` (n,) read
    the source of `size` pixels at position·size/placed. Returns the first source pixel
    (clipped into the image) and the float32 weights of it and the next, 0 for a pixel
    outside the image (Darknet's get_pixel_extend reads 0 there)."""
    source = (positions * (size / np.maximum(placed, 1))[:, None]).astype(F32)
    source = np.maximum(source, 0)                  # outside the placed image: any pixel
    low = np.floor(source)
    frac = source - low
    low = np.minimum(low.astype(np.int64), size - 1)
    return low, (F32(1) - frac), np.where(low + 1 < size, frac, F32(0))


# ---------------------------------------------------------------------- distort_image

def distort(x: np.ndarray, dhue: np.ndarray, dsat: np.ndarray, dexp: np.ndarray) -> None:
    """Darknet's distort_image of every image of x, in place: to HSV, saturation × dsat,
    value × dexp, hue + dhue wrapped once, back to RGB, clamped to [0, 1].

    x: float32 (n, 3, h, w), or (n, 1, h, w): the grey level × dexp, clamped. dhue, dsat,
    dexp: float32 (n,)."""
    if x.shape[1] == 1:
        x *= dexp[:, None, None, None]
        np.clip(x, 0, 1, out=x)
        return
    # A few images at a time, so that the dozens of passes below stay in the cache.
    step = max(1, CHUNK_PIXELS // (x.shape[2] * x.shape[3]))
    for i in range(0, len(x), step):
        _distort_rgb(x[i:i + step], dhue[i:i + step], dsat[i:i + step], dexp[i:i + step])


def _distort_rgb(x: np.ndarray, dhue: np.ndarray, dsat: np.ndarray, dexp: np.ndarray
                 ) -> None:
    col = lambda v: v[:, None, None]                     # (n,) -> (n, 1, 1)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    hue6, sat, val = _hsv(r, g, b)
    # h = h6/6, shifted, wrapped once, times 6 again: Darknet's steps and their rounding.
    # (Selections are arithmetic, x ± bool: masked operations are slow on noisy images.)
    hue6 /= F32(6)
    hue6 += col(dhue)
    np.subtract(hue6, hue6 > 1, out=hue6)
    np.add(hue6, hue6 < 0, out=hue6)
    hue6 *= F32(6)
    # h = 1 exactly makes Darknet's sextant 6, which takes the last case: sextant 5 at f = 0.
    np.subtract(hue6, hue6 >= 6, out=hue6)
    sat *= col(dsat)
    val *= col(dexp)
    sat *= val                                           # v·s
    # Each channel is v − v·s·k, k Darknet's table of v, p, q, t over the six sextants:
    # r: clamp(2 − |h6 − 3|), g: clamp(|h6 − 2| − 1), b: clamp(|h6 − 4| − 1), into [0, 1].
    t = np.empty_like(hue6)
    for out, centre, rising in ((r, 3, False), (g, 2, True), (b, 4, True)):
        np.subtract(hue6, F32(centre), out=t)
        np.abs(t, out=t)
        if rising:
            t -= F32(1)
        else:
            np.subtract(F32(2), t, out=t)
        np.clip(t, 0, 1, out=t)
        t *= sat
        np.subtract(val, t, out=out)
    np.clip(x, 0, 1, out=x)


def _hsv(r: np.ndarray, g: np.ndarray, b: np.ndarray):
    """Darknet's rgb_to_hsv before its h/6: (h6 in [0, 6], s, v), float32 (n, h, w) each.
    Where r = g = b the hue is 0 (Darknet's 0/0, harmless there as s = 0)."""
    high = np.maximum(r, g)
    np.maximum(high, b, out=high)
    delta = np.minimum(r, g)
    np.minimum(delta, b, out=delta)
    np.subtract(high, delta, out=delta)
    sat = np.add(high, high == 0)                        # max = 0: s = 0/1
    np.divide(delta, sat, out=sat)
    # The case: red largest (first), else green, else blue; one of the three is 1.
    red = r == high
    green = np.greater(g == high, red)
    blue = ~(red | green)
    # Darknet's (g − b)/Δ, 2 + (b − r)/Δ or 4 + (r − g)/Δ, + 6 if negative; each product
    # below is exact (× 0 or × 1), so the sum is the case's value.
    hue6 = np.subtract(g, b)
    hue6 *= red
    t = np.subtract(b, r)
    t *= green
    hue6 += t
    np.subtract(r, g, out=t)
    t *= blue
    hue6 += t
    np.add(delta, delta == 0, out=delta)                # r = g = b: 0/1
    hue6 /= delta
    np.multiply(green, F32(2), out=t)
    hue6 += t
    np.multiply(blue, F32(4), out=t)
    hue6 += t
    np.multiply(hue6 < 0, F32(6), out=t)
    hue6 += t
    return hue6, sat, high


# ---------------------------------------------------------------------- fill_truth_detection

def fill_truth(labels: Labels, indexes: np.ndarray, shuffle: np.ndarray, p: Placements,
               w: int, h: int, max_boxes: int) -> np.ndarray:
    """Darknet's fill_truth_detection for each image of the batch: float32 (n, max_boxes,
    5) of x, y, w, h, class. shuffle: one uniform per label box of the batch, in order."""
    n = len(indexes)
    counts = labels.counts(indexes)
    rows = labels.rows(indexes)
    order = randomize_boxes(counts, shuffle)             # positions into `rows`
    image = np.repeat(np.arange(n), counts)              # of each shuffled box
    boxes = labels.boxes[rows[order]]
    # Darknet passes nw/w, nh/h, -dx/w, -dy/h, each a float divided by an int.
    sx, sy = F32(p.nw) / F32(w), F32(p.nh) / F32(h)
    dx, dy = -F32(p.dx) / F32(w), -F32(p.dy) / F32(h)
    corrected = correct_boxes(boxes, sx[image], sy[image], dx[image], dy[image],
                              p.flip[image])
    rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    # Darknet compares the float sizes with the double .001.
    keep = ((rank < max_boxes) & (corrected[:, 2].astype(np.float64) >= MIN_SIZE)
            & (corrected[:, 3].astype(np.float64) >= MIN_SIZE)
            & ((boxes[:, 0] != 0) | (boxes[:, 1] != 0)))
    # The kept boxes of each image packed in order: its kept boxes before each one.
    kept_before = np.cumsum(keep) - keep
    place = kept_before - kept_before[np.repeat(np.cumsum(counts) - counts, counts)]
    truth = np.zeros((n, max_boxes, 5), F32)
    truth[image[keep], place[keep], :4] = corrected[keep]
    truth[image[keep], place[keep], 4] = labels.classes[rows[order]][keep]
    return truth


def randomize_boxes(counts: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Darknet's randomize_boxes for every image at once: for i = 0..n−1, swap box i with
    box ⌊u·n⌋ (rand()%n), u the image's i-th uniform of `u` (its boxes' uniforms follow
    the previous image's). Returns the shuffled order as positions into the batch's boxes
    (image by image, as counts gives them)."""
    n = len(counts)
    starts = np.cumsum(counts) - counts
    width = int(counts.max()) if n else 0
    slots = np.arange(width)
    valid = slots < counts[:, None]
    order = np.where(valid, starts[:, None] + slots, 0)          # (n, width)
    images = np.arange(n)
    for i in range(width):
        live = images[counts > i]
        j = np.minimum((u[starts[live] + i] * counts[live]).astype(np.int64),
                       counts[live] - 1)
        swap = order[live, i].copy()
        order[live, i] = order[live, j]
        order[live, j] = swap
    return order[valid]


def correct_boxes(boxes: np.ndarray, sx, sy, dx, dy, flip) -> np.ndarray:
    """Darknet's read_boxes edges, then correct_boxes, in float32 as the C computes them.

    boxes: float32 (m, 4) x, y, w, h of the label files; sx, sy, dx, dy float32 (m,) as
    Darknet passes them (nw/w, nh/h, −dx/w, −dy/h); flip bool (m,). Returns float32
    (m, 4) x, y, w, h relative to the network input, clipped to it."""
    x, y, bw, bh = boxes.T
    half_w, half_h = bw / F32(2), bh / F32(2)
    left, right = (x - half_w) * sx - dx, (x + half_w) * sx - dx
    top, bottom = (y - half_h) * sy - dy, (y + half_h) * sy - dy
    left, right = np.where(flip, F32(1) - right, left), np.where(flip, F32(1) - left, right)
    left, right, top, bottom = (np.clip(v, F32(0), F32(1)) for v in (left, right, top, bottom))
    return np.stack([(left + right) / F32(2), (top + bottom) / F32(2),
                     np.clip(right - left, F32(0), F32(1)),
                     np.clip(bottom - top, F32(0), F32(1))], axis=1).astype(F32)


# ---------------------------------------------------------------------- a training list

@dataclass(frozen=True)
class DetectionList:
    """The images of a .data file's train= list, checked, and their label boxes.

    paths: as opened; labels: their boxes; counts: the missing and empty label files
    (`counts.warnings()`: the lines to report once); source: the list file."""

    paths: tuple[str, ...]
    labels: Labels
    counts: LabelCounts
    source: str

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, channels: int, progress: Progress | None = None, threads: int = 1
               ) -> Images:
        """Every image at its own size, uint8, for `DetectionAugment.batch`: the
        classifier's decoding (ImageList.decode_originals: its memory check, progress and
        threads; a file that cannot be decoded is a DarkbpError naming it), never shrunk."""
        unlabelled = ImageList(self.paths, np.zeros(len(self.paths), np.int64), self.source)
        return unlabelled.decode_originals(channels, sys.maxsize, progress, threads)


def load_list(path: str | os.PathLike, classes: int) -> DetectionList:
    """A list file's images (one path per line, blank lines skipped; relative paths from
    the current folder, else from the list's folder) and every label file, read now: a
    missing image or a bad label line is a DarkbpError; missing and empty label files are
    counted."""
    file, base = str(path), str(Path(path).parent)
    lines = [line for line in read_lines(Path(path)) if line]
    if not lines:
        raise DarkbpError("lists no images", file=file)
    found = [resolve(line, base) for line in lines]
    missing = [line for line, image in zip(lines, found) if image is None]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:SHOWN]) + (", ..." if len(missing) > SHOWN
                                                               else "")
        raise DarkbpError(f"{len(missing):,} of {len(lines):,} images do not exist (looked "
                          f"in the current folder, then in {base}): {shown}", file=file)
    label_files = [find_label_file(line, base) for line in lines]
    labels = Labels.of_files(label_files, classes)
    counts = LabelCounts()
    for line, label_file, objects in zip(lines, label_files, np.diff(labels.offsets)):
        counts.add(line, label_file, int(objects))
    return DetectionList(tuple(found), labels, counts, file)


def batch_indexes(seed: int, batch_num: int, batch: int, images: int) -> np.ndarray:
    """The images of batch `batch_num`: darkbp's classifier order (darkbp.train), a
    permutation of the list per epoch from (seed, epoch), epochs of images // batch
    batches counted from 1."""
    per_epoch = images // batch
    if per_epoch == 0:
        raise DarkbpError(f"the list holds {images} images, fewer than a batch of {batch}")
    epoch, index = divmod(batch_num, per_epoch)
    order = np.random.default_rng([seed, epoch + 1]).permutation(images)
    return order[index * batch:(index + 1) * batch]


def load_data_detection(images: Sequence[str | np.ndarray], label_files: Sequence[str | None],
                        settings: DetectionAugment, classes: int, seed: int, batch_num: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """One batch from image files or decoded uint8 (C, H, W) arrays and their label files
    (None: no objects; darkbp.labels.find_label_file finds a file's): (x, truth) as
    DetectionAugment.batch."""
    decoded = [read_image(i, settings.channels) if isinstance(i, str) else i for i in images]
    labels = Labels.of_files(label_files, classes)
    return settings.batch(Images.of_list(list(decoded)), labels, np.arange(len(decoded)),
                          seed, batch_num)
