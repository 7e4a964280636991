"""Darknet's training augmentation, vectorised over a batch: random crop, scale, aspect,
rotation, flip, and hue/saturation/exposure.

What Darknet does to each training image (pjreddie src/data.c load_image_augment_paths,
src/image.c random_augment_image, rotate_crop_image, random_distort_image; src/utils.c
rand_int, rand_uniform, rand_scale), in this order:

1. The crop. a = rand_scale(aspect): uniform in [1, aspect], then a or 1/a with
   probability ½ each. r = rand_int(min_crop, max_crop), a whole number. The image is
   scaled by s = r / m, m = min(H, (int)(W·a)), so that its shorter side (at aspect a)
   becomes r pixels. θ = uniform(−angle, angle) degrees. The offsets dx, dy are uniform in
   ±(W·s/a − w)/2 and ±(H·s − h)/2 (rand_uniform swaps reversed bounds, so the range is
   the same when the scaled image is smaller than the crop). Output pixel (x, y) of the
   w × h crop reads the source at

       u = (x − w/2 + dx)·a/s,   v = (y − h/2 + dy)/s
       rx = cos θ·u − sin θ·v + W/2,   ry = sin θ·u + cos θ·v + H/2

   bilinearly, with zeros outside the image (bilinear_interpolate, get_pixel_extend).
2. The flip: a mirror image (x → w − 1 − x) with probability ½ (AlexeyAB's flip=0: never).
3. The distortion, on 3 channels: to HSV (rgb_to_hsv), saturation × rand_scale(saturation),
   value × rand_scale(exposure), hue + uniform(−hue, hue) wrapped once into [0, 1], back to
   RGB (hsv_to_rgb) and clamped to [0, 1]. On 1 channel (Darknet's classifier always loads
   3): the value is the grey level itself, so exposure scales it (then the clamp), and hue
   and saturation change nothing, exactly as they change nothing on a grey RGB pixel.

Where darkbp differs from pjreddie: the range of dy uses the crop's height (Darknet uses
its width: the same for the square inputs its classifier trains); when hue is 0 and
saturation and exposure are 1 the distortion is skipped (Darknet's round trip through HSV
is the identity up to float rounding), so min_crop = max_crop = the image's shorter side
with flip=0, angle 0 and aspect 1 gives an image of the crop's size back exactly; and an
image larger than the largest crop is stored shrunk to it (ImageList.decode_originals).

Random numbers: `draws(seed, batch_num, n)` gives an (n, DRAWS) array of uniforms from
numpy's generator seeded [seed, 3, batch_num], one row per image by its position in the
batch, so a batch's augmentation does not depend on --threads or subdivisions and a
resumed run draws what an uninterrupted one draws.

    augment = training_augment(network.config, dataset.augment_by_default, network.file)
    images = Images.of_array(uint8_array)              # or ImageList.decode_originals
    x = augment.batch(images, indexes, draws(seed, batch_num, len(indexes)))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from darkbp.errors import DarkbpError

if TYPE_CHECKING:
    from darkbp.network import NetConfig

STREAM = 3      # the first word of the seed: order is [seed, epoch], lr [seed, 1], noise [seed, 2]
# The columns of the draws: one uniform each.
ASPECT, ASPECT_COIN, CROP, ANGLE, DX, DY, FLIP, HUE, SAT, SAT_COIN, EXP, EXP_COIN = range(12)
DRAWS = 12


def draws(seed: int, batch_num: int, n: int) -> np.ndarray:
    """(n, DRAWS) float64 uniforms in [0, 1) for the n images of batch `batch_num`."""
    return np.random.default_rng([seed, STREAM, batch_num]).random((n, DRAWS))


@dataclass(frozen=True)
class Images:
    """Images of any sizes in one flat uint8 buffer, as the augmentation samples them.

    pixels: (total,) uint8; image i is (heights[i], widths[i], channels), channels last
    (so that one index reads a pixel's every channel), at pixels[offsets[i]:].
    offsets, heights, widths: (N,) int64.
    """

    pixels: np.ndarray
    offsets: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    channels: int

    def __len__(self) -> int:
        return len(self.offsets)

    @classmethod
    def of_array(cls, images: np.ndarray) -> "Images":
        """uint8 (N, C, H, W) -> Images (the same memory for one contiguous channel)."""
        n, c, h, w = images.shape
        pixels = np.ascontiguousarray(images.transpose(0, 2, 3, 1)).reshape(-1)
        return cls(pixels, np.arange(n, dtype=np.int64) * (h * w * c),
                   np.full(n, h, np.int64), np.full(n, w, np.int64), c)

    @classmethod
    def of_list(cls, images: list) -> "Images":
        """A list of uint8 (C, H_i, W_i) -> Images. Empties the list as it copies, so that
        the images are held once, not twice."""
        shapes = np.array([image.shape for image in images], np.int64)      # (N, 3)
        sizes = shapes.prod(axis=1)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        pixels = np.empty(int(sizes.sum()), np.uint8)
        for i, (offset, size) in enumerate(zip(offsets, sizes)):
            pixels[offset:offset + size] = images[i].transpose(1, 2, 0).reshape(-1)
            images[i] = None
        return cls(pixels, offsets, shapes[:, 1].copy(), shapes[:, 2].copy(), int(shapes[0, 0]))


@dataclass(frozen=True)
class Augment:
    """The augmentation of a network input of (channels, height, width), as the [net]
    keys give it (Darknet's names and defaults, see darkbp.network.NetConfig)."""

    channels: int
    height: int
    width: int
    min_crop: int
    max_crop: int
    angle: float
    aspect: float
    saturation: float
    exposure: float
    hue: float
    flip: bool

    @property
    def shorter_side(self) -> int:
        """The shorter side an image needs at most: the largest crop, at aspect 1, reads it
        1:1. Larger images are kept shrunk to it (ImageList.decode_originals)."""
        return max(self.min_crop, self.max_crop)

    @property
    def distorts(self) -> bool:
        return self.hue != 0 or self.saturation != 1 or self.exposure != 1

    def describe(self) -> str:
        """One line for the user: what is drawn for each image, with the cfg's key names."""
        low, high = sorted((self.min_crop, self.max_crop))
        parts = [f"shorter side scaled to {low}" + (f"-{high}" if high != low else "")
                 + f" px, a random {self.width} x {self.height} crop"]
        if self.aspect != 1:
            parts.append(f"aspect {self.aspect:g}")
        if self.angle:
            parts.append(f"angle ±{abs(self.angle):g}°")
        parts.append("50% horizontal flip" if self.flip else "no flip")
        for key in ("hue", "saturation", "exposure"):
            value = getattr(self, key)
            if value != (0 if key == "hue" else 1):
                parts.append(f"{key} {value:g}")
        return ", ".join(parts)

    def batch(self, images: Images, indexes: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The augmented network input of images[indexes]: float32 (n, C, h, w) in [0, 1].

        u: (n, DRAWS) uniforms, row k for the image at position k (`draws`). One-channel
        images feed a 3-channel network replicated (after the distortion, which then
        changes their value alone, as on grey RGB).
        """
        x = self._crop(images, indexes, u)
        if self.distorts:
            x = self._distort(x, u)
        if x.shape[1] != self.channels:
            x = np.repeat(x, self.channels, axis=1)
        return x

    # ------------------------------------------------------------------ geometry
    def _crop(self, images: Images, indexes: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Darknet's random_augment_image then flip_image, for every image at once."""
        h, w = self.height, self.width
        H = images.heights[indexes].astype(np.float64)
        W = images.widths[indexes].astype(np.float64)
        a = rand_scale(self.aspect, u[:, ASPECT], u[:, ASPECT_COIN])
        lo, hi = sorted((self.min_crop, self.max_crop))
        r = np.minimum(lo + np.floor(u[:, CROP] * (hi - lo + 1)), hi)      # rand_int
        # C's (int) of W·a; at least 1, where Darknet would divide by 0 (a 1-pixel image).
        m = np.maximum(np.where(H < W * a, H, np.floor(W * a)), 1)
        s = r / m
        theta = rand_uniform(-self.angle, self.angle, u[:, ANGLE]) * (2 * math.pi / 360)
        dx = rand_uniform(-(W * s / a - w) / 2, (W * s / a - w) / 2, u[:, DX])
        dy = rand_uniform(-(H * s - h) / 2, (H * s - h) / 2, u[:, DY])

        # The inverse map of each image: output (x, y) -> source (rx, ry).
        cos, sin = np.cos(theta), np.sin(theta)
        col = lambda v: v[:, None, None]                                  # (n,) -> (n, 1, 1)
        xs = np.arange(w, dtype=np.float64)
        if self.flip:
            xs = np.where(col(u[:, FLIP] < 0.5), w - 1 - xs, xs)           # (n, 1, w)
        X = xs - w / 2 + col(dx)
        Y = np.arange(h, dtype=np.float64)[:, None] - h / 2 + col(dy)      # (n, h, 1)
        uu, vv = X * col(a / s), Y / col(s)
        rx = (col(cos) * uu - col(sin) * vv + col(W / 2)).astype(np.float32)   # (n, h, w)
        ry = (col(sin) * uu + col(cos) * vv + col(H / 2)).astype(np.float32)
        return _bilinear(images, indexes, rx, ry)

    # ------------------------------------------------------------------ colour
    def _distort(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Darknet's random_distort_image on float32 (n, C, h, w), C = 1 or 3."""
        col = lambda v: v[:, None, None].astype(np.float32)
        dexp = col(rand_scale(self.exposure, u[:, EXP], u[:, EXP_COIN]))
        if x.shape[1] == 1:
            return np.clip(x * dexp[:, None], 0, 1)
        dsat = col(rand_scale(self.saturation, u[:, SAT], u[:, SAT_COIN]))
        dhue = col(rand_uniform(-self.hue, self.hue, u[:, HUE]))
        hue, sat, val = rgb_to_hsv(x[:, 0], x[:, 1], x[:, 2])
        sat = sat * dsat
        val = val * dexp
        hue = hue + dhue
        hue = np.where(hue > 1, hue - 1, hue)
        hue = np.where(hue < 0, hue + 1, hue)
        return np.clip(hsv_to_rgb(hue, sat, val).transpose(1, 0, 2, 3), 0, 1)


def _bilinear(images: Images, indexes: np.ndarray, rx: np.ndarray, ry: np.ndarray
              ) -> np.ndarray:
    """Darknet's bilinear_interpolate of each image at (rx, ry), zero outside it.

    rx, ry: float32 (n, h, w) source positions -> float32 (n, C, h, w), pixel / 255.
    """
    H = images.heights[indexes][:, None, None]
    W = images.widths[indexes][:, None, None]
    ix, iy = np.floor(rx), np.floor(ry)
    fx, fy = rx - ix, ry - iy
    ix, iy = ix.astype(np.int64), iy.astype(np.int64)
    # Each corner's weight, 0 where it lies outside the image (Darknet reads a 0 there);
    # its position clipped into the image, so that it reads some pixel (weighing 0).
    columns = [((1 - fx) * ((0 <= ix) & (ix < W)), np.clip(ix, 0, W - 1)),
               (fx * ((-1 <= ix) & (ix < W - 1)), np.clip(ix + 1, 0, W - 1))]
    rows = [((1 - fy) * ((0 <= iy) & (iy < H)), np.clip(iy, 0, H - 1) * W),
            (fy * ((-1 <= iy) & (iy < H - 1)), np.clip(iy + 1, 0, H - 1) * W)]
    pixels = images.pixels.reshape(-1, images.channels)      # a row per pixel
    first = (images.offsets[indexes] // images.channels)[:, None, None]
    total = 0
    # Darknet's order of the four terms: (x, y), (x, y + 1), (x + 1, y), (x + 1, y + 1).
    for wx, x in columns:
        for wy, y in rows:
            corner = np.take(pixels, first + y + x, axis=0)          # (n, h, w, C)
            total = total + (wy * wx)[..., None] * corner
    total /= np.float32(255)
    return np.ascontiguousarray(total.transpose(0, 3, 1, 2))


def rand_uniform(low, high, u):
    """Darknet's rand_uniform(low, high) for uniforms u in [0, 1): reversed bounds swap."""
    low, high = np.minimum(low, high), np.maximum(low, high)
    return u * (high - low) + low


def rand_scale(s: float, u, coin):
    """Darknet's rand_scale(s): uniform in [1, s], then it or its inverse (coin < ½: it)."""
    scale = rand_uniform(1.0, s, u)
    return np.where(coin < 0.5, scale, 1 / scale)


def rgb_to_hsv(r: np.ndarray, g: np.ndarray, b: np.ndarray):
    """Darknet's rgb_to_hsv: h in [0, 1] (sixths of the circle), s = Δ/max, v = max.

    Where Δ = 0 Darknet's h is 0/0 (NaN), harmless because s = 0 there; here it is 0."""
    high = np.maximum(np.maximum(r, g), b)
    low = np.minimum(np.minimum(r, g), b)
    delta = high - low
    safe = np.where(delta > 0, delta, 1)
    hue = np.where(r == high, (g - b) / safe,
                   np.where(g == high, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = np.where(hue < 0, hue + 6, hue) / 6
    hue = np.where(delta > 0, hue, 0)
    sat = np.where(high > 0, delta / np.where(high > 0, high, 1), 0)
    return hue, sat, high


# Which of (v, p, q, t) each sextant floor(6h) gives to r, g and b; 6 (h = 1 exactly)
# takes the last row, as Darknet's `else` does.
_SEXTANTS = np.array([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2],
                      [0, 1, 2]])


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Darknet's hsv_to_rgb: (n, h, w) planes -> (3, n, h, w), grey where s = 0."""
    h6 = 6 * h
    index = np.floor(h6)
    f = h6 - index
    candidates = np.stack([v, v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))])
    pick = np.moveaxis(np.take(_SEXTANTS, index.astype(np.intp), axis=0), -1, 0)
    rgb = np.take_along_axis(candidates, pick, axis=0)
    return np.where(s == 0, v, rgb)


def training_augment(config: NetConfig, by_default: bool, file: str) -> Augment | None:
    """The augmentation a training run on this data gets from the [net] settings
    (darkbp.network.NetConfig), or None.

    by_default: whether the data gets Darknet's defaults when the cfg gives no
    augmentation key (image files and CIFAR-10: yes; IDX files: only with keys). A
    network with a flat input has no image to crop: keys given for it are an error.
    """
    if not config.augment_keys and not by_default:
        return None
    if not (config.width and config.height and config.channels):
        if not config.augment_keys:
            return None
        raise DarkbpError(f"{config.augment_keys[0]} augments images, but the network's input "
                          "is flat (inputs=): set width, height and channels",
                          file=file, line=config.line)
    return Augment(config.channels, config.height, config.width, config.min_crop,
                   config.max_crop, config.angle, config.aspect, config.saturation,
                   config.exposure, config.hue, config.flip)
