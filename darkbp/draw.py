"""The pictures `darkbp detect` writes: the photo with Darknet's boxes and labels.

    picture = draw_detections(Image.open("dog.jpg"), detections, classes=80)
    picture.save("predictions.png")

`draw_detections` draws on a copy of the photo what pjreddie's `draw_detections`
(src/image.c) draws before `save_image`. Per detected box: a rectangle `int(h * .006)`
pixels wide, drawn inward from the box's clipped pixel corners, in the colour Darknet
gives the box's first class (`darknet_color`); then a label of that colour with the class
names in black, its bottom on the box's top line above the top-left corner, or, where
there is no room above, hanging from the top line down inside the box. Later boxes are
drawn over earlier ones, as in Darknet.

Where darkbp differs from Darknet, on purpose:
- the label is Pillow's default font with letters about 3% of the image height (at least
  `MIN_TEXT` pixels), not Darknet's futura bitmaps (data/labels), and it shows each
  class's probability after its name ("dog 87%, bicycle 52%"), as issue 18 asks; Darknet
  shows the names only;
- a rectangle is at least one pixel wide: in an image less than 167 pixels high Darknet's
  width is 0 and its `draw_box_width` loop draws no rectangle at all, only the label.
"""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Darknet's `colors` table. get_color(c, ...) reads column c, and draw_detections asks
# c = 2 for red, 1 for green, 0 for blue: the rows are magenta, red, yellow, green, cyan,
# blue.
COLORS = np.array([[1, 0, 1], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 1, 0], [1, 0, 0]],
                  dtype=np.float32)

# Letters below about 12 pixels are unreadable; Darknet's smallest bitmaps are larger
# than the 3% of a small image.
MIN_TEXT = 12


def darknet_color(k: int, classes: int) -> tuple[int, int, int]:
    """The (r, g, b) 0..255 colour Darknet draws class k of `classes` in.

    Darknet spreads the classes over its colour table with offset = k * 123457 % classes,
    interpolates in float32, and writes the picture as (unsigned char)(255 * v), so
    channels are truncated, not rounded: class 1 of 80 is (255, 15, 0).
    """
    offset = k * 123457 % classes
    return tuple(int(np.float32(255) * _get_color(c, offset, classes)) for c in (2, 1, 0))


def draw_detections(image: Image.Image, detections: list[dict], classes: int) -> Image.Image:
    """A new RGB picture: `image` (any mode, left unchanged) with the detections drawn.

    detections: `darkbp detect`'s dicts, one per (box, class) in Darknet's order, each
        with "class", "name", "confidence" and "pixels" [x1, y1, x2, y2] (ints, clipped to
        the image as Darknet's left, top, right, bot). Consecutive dicts with the same
        "box" are one Darknet detection: one rectangle, in the first one's colour, and one
        label naming them all.
    classes: the head's number of classes, which sets the colours.
    Returns an Image of mode RGB and the size of `image`.
    """
    pixels = np.array(image.convert("RGB"))                 # (H, W, 3) uint8, a copy
    height = pixels.shape[0]
    width = max(int(height * .006), 1)                      # C's int(h * .006), then >= 1
    font = _font(max(round(height * .03), MIN_TEXT))
    for _, group in itertools.groupby(detections, key=lambda d: tuple(d["box"])):
        group = list(group)
        rgb = darknet_color(group[0]["class"], classes)
        left, top, right, bot = group[0]["pixels"]
        # draw_box_width: `width` one-pixel rectangles, each one pixel further inside
        for i in range(width):
            _draw_box(pixels, left + i, top + i, right - i, bot - i, rgb)
        text = ", ".join(f"{d['name']} {d['confidence'] * 100:.0f}%" for d in group)
        _draw_label(pixels, top + width, left, _label(text, font, rgb))
    return Image.fromarray(pixels)


def _get_color(c: int, x: int, max_: int) -> np.float32:
    """Darknet's get_color in C's float32: channel c (0 blue, 1 green, 2 red) of x/max_."""
    f32 = np.float32
    ratio = f32(x) / f32(max_) * f32(5)
    i, j = int(np.floor(ratio)), int(np.ceil(ratio))
    ratio = ratio - f32(i)
    return (f32(1) - ratio) * COLORS[i, c] + ratio * COLORS[j, c]


def _draw_box(pixels: np.ndarray, x1: int, y1: int, x2: int, y2: int,
              rgb: tuple[int, int, int]) -> None:
    """Darknet's draw_box on pixels (H, W, 3): each corner clamped into the image, then rows
    y1 and y2 over x1..x2 and columns x1 and x2 over y1..y2 (none where a range is empty,
    as when a thick rectangle's insets cross in a small box)."""
    h, w = pixels.shape[:2]
    x1, x2 = (min(max(x, 0), w - 1) for x in (x1, x2))
    y1, y2 = (min(max(y, 0), h - 1) for y in (y1, y2))
    pixels[[y1, y2], x1:x2 + 1] = rgb
    pixels[y1:y2 + 1, [x1, x2]] = rgb


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the fixed bitmap font, about 11 pixels high
        return ImageFont.load_default()


def _label(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
           rgb: tuple[int, int, int]) -> np.ndarray:
    """Black text on rgb, (h, w, 3) uint8, with Darknet's border_image margin of a quarter
    of the letters' height on every side."""
    # One reference string's capital-top to descender-bottom, so every label of a picture
    # is as high as Darknet's, whose glyph bitmaps are all one height.
    _, top, _, bottom = font.getbbox("Hg")
    right = font.getbbox(text)[2]
    border = int((bottom - top) * .25)
    label = Image.new("RGB", (right + 2 * border, bottom - top + 2 * border), rgb)
    ImageDraw.Draw(label).text((border, border - top), text, fill=(0, 0, 0), font=font)
    return np.array(label)


def _draw_label(pixels: np.ndarray, r: int, c: int, label: np.ndarray) -> None:
    """Darknet's draw_label: label's bottom row at row r - 1 when it fits above r, else its
    top row at r; column c on the left; cut at the image's right and bottom edges."""
    h, w = pixels.shape[:2]
    if r - label.shape[0] >= 0:
        r -= label.shape[0]
    part = label[:max(h - r, 0), :max(w - c, 0)]
    pixels[r:r + part.shape[0], c:c + part.shape[1]] = part
