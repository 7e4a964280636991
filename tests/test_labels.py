"""darkbp.labels: Darknet's label paths and label files.

The references: label paths worked out by hand from pjreddie's fill_truth_detection
(images, JPEGImages, raw -> labels) and AlexeyAB's replace_image_to_label (the extension
at the end -> .txt), and label files written by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.errors import DarkbpError
from darkbp.labels import LabelCounts, find_label_file, label_path, read_label_file


@pytest.mark.parametrize("image, label", [
    ("VOCdevkit/VOC2007/JPEGImages/000001.jpg", "VOCdevkit/VOC2007/labels/000001.txt"),
    ("coco/images/val2014/COCO_val2014_000000000042.jpg",
     "coco/labels/val2014/COCO_val2014_000000000042.txt"),
    ("/data/raw/a.png", "/data/labels/a.txt"),
    ("data/obj/a.PNG", "data/obj/a.txt"),                 # AlexeyAB's layout: beside
    ("x.JPEG", "x.txt"),
    ("scans/b.tiff", "scans/b.txt"),
    ("images/images/c.bmp", "labels/images/c.txt"),       # the first folder only
    ("my.images/images.jpg", "my.images/images.txt"),     # whole folder names only
    ("drawings/d.jpg", "drawings/d.txt"),                 # Darknet would write dlabelsings/
    ("photos/e.jpg.png", "photos/e.jpg.txt"),             # only the extension at the end
])
def test_label_path_is_darknets_rule(image, label):
    assert label_path(image) == label


def test_an_image_without_a_known_extension_has_no_label_path():
    with pytest.raises(DarkbpError, match="extension") as caught:
        label_path("photos/a.gif")
    assert caught.value.file == "photos/a.gif"


def test_find_label_file_looks_in_labels_then_beside_then_from_the_list(tmp_path,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "set" / "images").mkdir(parents=True)
    (tmp_path / "set" / "labels").mkdir()
    (tmp_path / "set" / "labels" / "a.txt").write_text("")
    (tmp_path / "set" / "images" / "b.txt").write_text("")
    assert find_label_file("set/images/a.jpg", "lists") == "set/labels/a.txt"
    assert find_label_file("set/images/b.jpg", "lists") == "set/images/b.txt"
    assert find_label_file("images/a.jpg", "set") == "set/labels/a.txt"
    assert find_label_file("set/images/c.jpg", "lists") is None


def test_read_label_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("0 0.5 0.5 0.25 0.125\r\n\n  2\t1 0 1e-1 .3  \n\n")
    boxes, classes = read_label_file(str(path), 3)
    assert boxes.dtype == np.float32 and boxes.shape == (2, 4)
    np.testing.assert_array_equal(boxes, np.array([[.5, .5, .25, .125], [1, 0, .1, .3]],
                                                  np.float32))
    assert classes.dtype == np.int64 and classes.tolist() == [0, 2]
    path.write_text("")
    boxes, classes = read_label_file(str(path), 3)
    assert boxes.shape == (0, 4) and classes.shape == (0,)


@pytest.mark.parametrize("text, line, words", [
    ("0 0.5 0.5 0.2\n", 1, "found 4"),
    ("\n0 0.5 0.5 0.2 0.2 0\n", 2, "found 6"),
    ("0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n", 2, "class '3'"),
    ("x 0.5 0.5 0.2 0.2\n", 1, "class 'x'"),
    ("0 1.01 0.5 0.2 0.2\n", 1, "x '1.01'"),
    ("0 0.5 -0.5 0.2 0.2\n", 1, "y '-0.5'"),
    ("0 0.5 0.5 inf 0.2\n", 1, "width 'inf'"),
    ("0 0.5 0.5 0.2 ?\n", 1, "height '?'"),
    ("0 0.5 0.5 0.2 0.2\n\n1 0.5 0.5 0 0.2\n", 3, "width '0': a box of no area"),
    ("0 0.5 0.5 0.2 0.0e0\n", 1, "height '0.0e0': a box of no area"),
])
def test_a_bad_line_names_the_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(DarkbpError) as caught:
        read_label_file(str(path), 3)
    assert (caught.value.file, caught.value.line) == (str(path), line)
    assert words in caught.value.message


def test_label_counts_report_missing_and_empty_once():
    counts = LabelCounts()
    for i in range(5):
        counts.add(f"images/{i}.jpg", None, 0)
    counts.add("images/5.jpg", "labels/5.txt", 0)
    counts.add("images/6.jpg", "labels/6.txt", 2)
    assert counts.warnings() == [
        "5 of 7 images have no label file, scored as images without objects (as Darknet): "
        "'labels/0.txt', 'labels/1.txt', 'labels/2.txt', ...",
        "1 of 7 images have an empty label file: images without objects"]
    assert LabelCounts().warnings() == []
