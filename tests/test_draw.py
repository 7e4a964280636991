"""darkbp.draw against pjreddie's drawing (src/image.c): colours worked out by hand from
get_color, a box's edges and inside, draw_box_width's line width, boxes at the image's
border, one rectangle for a box of several classes, draw_label's placement at the top
edge, and the photo left alone."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFont

from darkbp.draw import darknet_color, draw_detections

GREY = (128, 128, 128)
# Class 1 and class 16 of 80, by hand below.
BICYCLE, BICYCLE_RGB = 1, (255, 15, 0)
DOG, DOG_RGB = 16, (255, 255, 0)


def grey(w: int = 200, h: int = 150) -> Image.Image:
    return Image.new("RGB", (w, h), GREY)


def photo(w: int = 200, h: int = 150) -> Image.Image:
    """Random pixels, so that a kept pixel is told apart from any flat fill."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def detection(k: int, name: str, pixels: tuple[int, int, int, int],
              box: tuple[float, float, float, float] = (.5, .5, .4, .4),
              confidence: float = .9) -> dict:
    return {"class": k, "name": name, "confidence": confidence, "objectness": .95,
            "box": list(box), "pixels": list(pixels)}


def rows_of(pixels: np.ndarray, column: int, rgb: tuple[int, int, int]) -> list[int]:
    return np.flatnonzero((pixels[:, column] == rgb).all(axis=1)).tolist()


# get_color(c, x, max): ratio = x/max*5, i = floor, j = ceil, (1-f)*colors[i][c] +
# f*colors[j][c] with f = ratio - i; red is c=2, green c=1, blue c=0, so the table's rows
# are magenta, red, yellow, green, cyan, blue. offset = k*123457 % classes; 123457 % 80 =
# 17, 123457 % 20 = 17, 123457 % 3 = 1. save_image_png truncates 255*v.
@pytest.mark.parametrize("k, classes, rgb", [
    (0, 80, (255, 0, 255)),     # offset 0, ratio 0: magenta
    (1, 80, (255, 15, 0)),      # offset 17, ratio 1.0625: red to yellow by 1/16, 255/16 = 15.94
    (2, 80, (223, 255, 0)),     # offset 34, ratio 2.125: yellow to green by 1/8, 255*7/8 = 223.1
    (16, 80, (255, 255, 0)),    # offset 16*17 % 80 = 32, ratio 2: yellow
    (79, 80, (0, 255, 239)),    # offset 79*17 % 80 = 63, ratio 3.9375: green to cyan, 239.06
    (14, 20, (0, 127, 255)),    # VOC person: offset 238 % 20 = 18, ratio 4.5: cyan to blue
    # float32: (1/3)*5 rounds to 1.6666667461, f = .6666667461, 255 f = 170.00002
    (1, 3, (255, 170, 0)),
    # float32: (2/3)*5 rounds to 3.3333334923, f = .3333334923, 255 f = 85.00004
    (2, 3, (0, 255, 85)),
])
def test_colours_are_darknets(k, classes, rgb):
    assert darknet_color(k, classes) == rgb


def test_edges_take_the_class_colour_and_the_inside_keeps_the_photo():
    original = np.array(photo())
    drawn = np.array(draw_detections(photo(), [detection(DOG, "dog", (40, 70, 120, 130))],
                                     classes=80))
    for row in (70, 130):
        assert (drawn[row, 40:121] == DOG_RGB).all()
    for column in (40, 120):
        assert (drawn[70:131, column] == DOG_RGB).all()
    assert (drawn[71:130, 41:120] == original[71:130, 41:120]).all()
    # below, left of and right of the box: nothing drawn (the label sits above it)
    assert (drawn[131:] == original[131:]).all()
    assert (drawn[:, :40] == original[:, :40]).all()
    assert (drawn[:, 121:] == original[:, 121:]).all()


# Darknet: width = int(h * .006), and draw_box_width draws `width` rectangles, each one
# pixel inside the last; below 167 rows that is 0 rectangles, where darkbp draws one.
@pytest.mark.parametrize("height, width", [(150, 1), (166, 1), (500, 3), (999, 5), (1000, 6)])
def test_line_width_grows_inward_with_the_image_height(height, width):
    top, bot = height // 3, height - 10
    drawn = np.array(draw_detections(grey(100, height),
                                     [detection(DOG, "dog", (10, top, 90, bot))], classes=80))
    middle = (top + bot) // 2
    assert [r for r in rows_of(drawn, 50, DOG_RGB) if r > middle] == \
        list(range(bot - width + 1, bot + 1))
    coloured = (drawn[middle] == DOG_RGB).all(axis=1)
    assert np.flatnonzero(coloured).tolist() == \
        list(range(10, 10 + width)) + list(range(90 - width + 1, 91))


@pytest.mark.parametrize("height, width", [(150, 1), (500, 3)])
def test_a_box_clipped_at_the_border_is_drawn_along_the_border(height, width):
    # a box reaching past the bottom-right corner: Darknet's pixels clip to w-1, h-1
    drawn = np.array(draw_detections(grey(200, height), [detection(
        DOG, "dog", (120, height // 2, 199, height - 1), box=(.9, .8, .6, .6))], classes=80))
    assert (drawn[height - width:, 120:] == DOG_RGB).all()
    assert (drawn[height // 2:, 200 - width:] == DOG_RGB).all()
    assert (drawn[height - width - 1, 120 + width:200 - width] == GREY).all()
    assert (drawn[height // 2 + 30:height - width, 200 - width - 1] == GREY).all()


def test_a_box_of_two_classes_is_one_rectangle_with_both_names():
    box, pixels = (.5, .6, .6, .4), (40, 70, 160, 130)
    both = np.array(draw_detections(grey(), [
        detection(BICYCLE, "bicycle", pixels, box, .9),
        detection(DOG, "dog", pixels, box, .6)], classes=80))
    first = np.array(draw_detections(grey(), [
        detection(BICYCLE, "bicycle", pixels, box, .9)], classes=80))
    second = np.array(draw_detections(grey(), [
        detection(DOG, "dog", pixels, box, .6)], classes=80))
    assert not (both == DOG_RGB).all(axis=2).any()
    assert (both[130, 40:161] == BICYCLE_RGB).all()
    # the label's bottom margin lies on the row above the box's top line: its length is
    # the label's width, longer with both names than with either alone
    label_width = {name: int((picture[69] != GREY).any(axis=1).sum())
                   for name, picture in (("both", both), ("first", first), ("second", second))}
    assert label_width["both"] > label_width["first"] > label_width["second"] > 20


def test_boxes_with_different_coordinates_are_drawn_apart():
    drawn = np.array(draw_detections(grey(), [
        detection(BICYCLE, "bicycle", (20, 60, 90, 140), (.3, .6, .3, .5)),
        detection(DOG, "dog", (110, 60, 190, 140), (.7, .6, .3, .5))], classes=80))
    assert (drawn[140, 20:91] == BICYCLE_RGB).all()
    assert (drawn[140, 110:191] == DOG_RGB).all()


def test_the_label_sits_above_the_box_or_inside_it_at_the_top_edge():
    # column 31 crosses the label's left margin, where it has no letters
    room = np.array(draw_detections(grey(), [detection(DOG, "dog", (30, 80, 150, 120))],
                                    classes=80))
    above = [r for r in rows_of(room, 31, DOG_RGB) if r < 100]
    height = len(above)
    assert height >= 12 and above == list(range(81 - height, 81))

    near_top = np.array(draw_detections(grey(), [detection(DOG, "dog", (30, 5, 150, 120))],
                                        classes=80))
    # no room above row 5 + 1: draw_label hangs the label from row 6, under the top line
    assert rows_of(near_top, 31, DOG_RGB)[:-1] == list(range(5, 6 + height))
    assert (near_top[:5] == GREY).all()

    label = room[81 - height:81, 30:150]
    assert (label.max(axis=2) < 64).any(), "the letters are black"


def test_a_label_past_the_right_edge_is_cut():
    drawn = np.array(draw_detections(grey(), [detection(DOG, "dog", (180, 60, 199, 140))],
                                     classes=80))
    assert (drawn[59, 180:] == DOG_RGB).all()
    assert (drawn[59, :180] == GREY).all()


def test_the_input_is_left_alone_and_the_result_is_rgb():
    image = photo()
    before = image.tobytes()
    drawn = draw_detections(image, [detection(DOG, "dog", (40, 70, 120, 130))], classes=80)
    assert image.tobytes() == before and drawn is not image
    assert drawn.mode == "RGB" and drawn.size == image.size

    drawn = draw_detections(Image.new("L", (200, 150), 128),
                            [detection(DOG, "dog", (40, 70, 120, 130))], classes=80)
    assert drawn.mode == "RGB"
    assert tuple(np.array(drawn)[100, 80]) == GREY
    assert tuple(np.array(drawn)[130, 80]) == DOG_RGB


def test_no_detections_give_the_photo_back():
    assert (np.array(draw_detections(photo(), [], classes=80)) == np.array(photo())).all()


def test_a_pillow_without_font_sizes_still_labels(monkeypatch):
    load_default = ImageFont.load_default

    def before_10_1():  # Pillow < 10.1's signature: no size, one small font
        return load_default()

    monkeypatch.setattr(ImageFont, "load_default", before_10_1)
    drawn = np.array(draw_detections(grey(), [detection(DOG, "dog", (30, 80, 150, 120))],
                                     classes=80))
    above = [r for r in rows_of(drawn, 31, DOG_RGB) if r < 100]
    assert len(above) >= 8 and above[-1] == 80
    assert (drawn[81 - len(above):81, 30:150].max(axis=2) < 64).any()
