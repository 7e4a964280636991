"""`darkbp predict` (darkbp.classifier, imagedata.letterbox): Darknet's `classifier predict`.

The references: letterboxes worked out by hand from src/image.c (letterbox_image,
resize_image, embed_image), a loop transcription of letterbox_image over the loop
transcription of resize_image in tests/test_imagedata.py, Darknet's printf format as
literals, and `Net.predict` on inputs the reference letterboxed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import darkbp
from darkbp import classifier
from darkbp.cli import main
from darkbp.errors import DarkbpError
from darkbp.imagedata import letterbox
from darkbp.network import parse_network
from darkbp.train import Trainer, TrainOptions
from tests.conftest import CFG_DIR, assert_error
from tests.test_imagedata import c_div, darknet_resize_image, last_row_quirk

# Three classes of 2 x 2 grey images: a [connected] with zero weights gives softmax(biases).
TINY_CFG = "[net]\nwidth=2\nheight=2\nchannels=1\n[connected]\noutput=3\nactivation=linear\n"
TINY_P = [0.0123, 0.9, 0.0877]


def write_weights(path: Path, *arrays) -> Path:
    """A Darknet .weights file written by hand: int32 major 0, minor 2, revision 0, uint64
    seen 0, then the arrays as little-endian float32."""
    header = np.array([0, 2, 0], "<i4").tobytes() + np.array([0], "<u8").tobytes()
    path.write_bytes(header + b"".join(np.asarray(a, "<f4").tobytes() for a in arrays))
    return path


@pytest.fixture
def tiny(tmp_path) -> tuple[str, str]:
    """(cfg, weights) of a network that gives every image the outputs TINY_P."""
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY_CFG + "[softmax]\n")
    biases = np.log(np.array(TINY_P, np.float64))
    return str(cfg), str(write_weights(tmp_path / "tiny.weights", biases, np.zeros((3, 4))))


@pytest.fixture
def image(tmp_path) -> str:
    path = tmp_path / "one.png"
    Image.fromarray(np.full((5, 3), 200, np.uint8)).save(path)
    return str(path)


def run(*args: str):
    return CliRunner().invoke(main, ["predict", *args])


# ---------------------------------------------------------------------- letterbox by hand

def test_letterbox_4x2_into_4x4_adds_a_row_of_grey_above_and_below():
    # w/W = 1 < h/H = 2: the width fills, new_h = 2*4/4 = 2, no resize, dy = (4-2)/2 = 1.
    im = np.array([[[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]]], np.float32)
    boxed = letterbox(im, 4, 4)
    assert boxed.dtype == np.float32
    np.testing.assert_array_equal(boxed[0], np.array(
        [[.5, .5, .5, .5], [.1, .2, .3, .4], [.5, .6, .7, .8], [.5, .5, .5, .5]], np.float32))


def test_letterbox_4x2_into_5x5_resizes_and_puts_the_odd_row_below():
    # w/W = 1.25 < h/H = 2.5: new_w = 5, new_h = 2*5/4 = 2 (C's division), dy = 3/2 = 1.
    # resize_image's columns: c·3/4 = 0, .75, 1.5, 2.25, then the last pixel.
    im = np.array([[[0, .5, 1, .25], [1, 1, 0, 0]]], np.float32)
    # .375 = .25·0 + .75·.5, .75 = .5·.5 + .5·1, .8125 = .75·1 + .25·.25
    content = [[0, .375, .75, .8125, .25],
               [1, 1, .5, 0, 0]]
    expected = np.full((5, 5), .5, np.float32)
    expected[1:3] = content
    np.testing.assert_array_equal(letterbox(im, 5, 5)[0], expected)


def test_letterbox_tall_image_fills_the_height_and_centres_the_column():
    # 2 x 4 (w x h) into 5 x 3: w/W = 2.5 >= h/H = .75, so new_h = 3, new_w = 2*3/4 = 1;
    # dx = (5 - 1)/2 = 2. A width of 1 keeps the last column; rows at r·3/2 = 0, 1.5, 3.
    im = np.array([[[9, 0], [9, .25], [9, .75], [9, 1]]], np.float32)
    expected = np.full((3, 5), .5, np.float32)
    expected[:, 2] = [0, .5, 1]
    np.testing.assert_array_equal(letterbox(im, 5, 3)[0], expected)


def test_letterbox_of_an_image_scaled_to_no_rows_is_the_grey_canvas():
    # 100 x 1 into 4 x 4: new_h = 1*4/100 = 0; Darknet embeds nothing.
    np.testing.assert_array_equal(letterbox(np.zeros((3, 1, 100), np.float32), 4, 4),
                                  np.full((3, 4, 4), .5, np.float32))


def test_letterbox_of_the_networks_size_is_the_image():
    im = np.random.default_rng(0).random((3, 6, 7), dtype=np.float32)
    np.testing.assert_array_equal(letterbox(im, 7, 6), im)


# ---------------------------------------------------------------------- against C

def darknet_letterbox(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """src/image.c letterbox_image, loop by loop in float32: (C, H, W) -> (C, h, w)."""
    c, ih, iw = im.shape
    f32 = np.float32
    if f32(w) / f32(iw) < f32(h) / f32(ih):
        new_w, new_h = w, c_div(ih * w, iw)
    else:
        new_w, new_h = c_div(iw * h, ih), h
    resized = darknet_resize_image(im, new_w, new_h)
    boxed = np.empty((c, h, w), f32)
    for i in range(c * h * w):                            # fill_image(boxed, .5)
        boxed.flat[i] = f32(.5)
    dx, dy = c_div(w - new_w, 2), c_div(h - new_h, 2)
    for k in range(c):                                    # embed_image
        for y in range(new_h):
            for x in range(new_w):
                if 0 <= dx + x < w and 0 <= dy + y < h:   # set_pixel's bounds check
                    boxed[k, dy + y, dx + x] = resized[k, y, x]
    return boxed


@pytest.mark.parametrize("ih, iw, h, w", [
    (2, 4, 5, 5), (30, 40, 28, 28), (40, 30, 28, 28), (37, 50, 24, 32), (13, 7, 30, 20),
    (50, 5, 28, 28), (64, 48, 32, 32), (17, 29, 17, 29), (28, 28, 22, 33), (9, 9, 31, 8),
])
def test_letterbox_is_darknets_letterbox_image(ih, iw, h, w):
    im = np.random.default_rng(ih * 100 + iw).random((3, ih, iw), dtype=np.float32)
    expected = darknet_letterbox(im, w, h)
    f32 = np.float32
    new_h = c_div(ih * w, iw) if f32(w) / f32(iw) < f32(h) / f32(ih) else h
    assert not last_row_quirk(ih, new_h)                 # sizes where resize is Darknet's
    np.testing.assert_array_equal(letterbox(im, w, h), expected)


# ---------------------------------------------------------------------- output

def test_one_image_prints_darknets_lines(tiny, image):
    result = run(*tiny, image, "--top", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout == "90.00%: 1\n 8.77%: 2\n 1.23%: 0\n"     # "%5.2f%%: %s"
    line, = result.stderr.splitlines()
    assert line.startswith(f"{image}: Predicted in ") and line.endswith(" seconds.")


def test_top_defaults_to_1_and_is_capped_at_the_classes(tiny, image):
    assert run(*tiny, image).stdout == "90.00%: 1\n"
    assert run(*tiny, image, "--top", "2").stdout == "90.00%: 1\n 8.77%: 2\n"
    assert run(*tiny, image, "--top", "50").stdout == "90.00%: 1\n 8.77%: 2\n 1.23%: 0\n"


def test_names_from_a_file(tiny, image, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbig bird\n")
    result = run(*tiny, image, "--top", "3", "--names", str(names))
    assert result.stdout == "90.00%: dog\n 8.77%: big bird\n 1.23%: cat\n"


def test_names_and_top_from_a_data_file(tiny, image, tmp_path, monkeypatch):
    folder = tmp_path / "cfgs"
    folder.mkdir()
    (folder / "labels.txt").write_text("c0\nc1\nc2\n")
    (folder / "names.txt").write_text("zero\none\ntwo\n")
    data = folder / "x.data"
    monkeypatch.chdir(tmp_path)            # names= is found beside the .data file
    data.write_text("classes=3\nlabels = labels.txt\nnames = names.txt\ntop=2\n")
    assert run(*tiny, image, "--data", str(data)).stdout == "90.00%: one\n 8.77%: two\n"
    assert run(*tiny, image, "--data", str(data), "--top", "1").stdout == "90.00%: one\n"
    data.write_text("labels=labels.txt\n")              # labels= when there is no names=
    assert run(*tiny, image, "--data", str(data)).stdout == "90.00%: c1\n"
    data.write_text("classes=3\ntop=2\n")
    assert_error(run(*tiny, image, "--data", str(data)), str(data), "no names= or labels=")
    data.write_text("names=names.txt\ntop=two\n")
    assert_error(run(*tiny, image, "--data", str(data)), f"{data}:2:", "top=two")


def test_names_must_count_the_networks_outputs(tiny, image, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    assert_error(run(*tiny, image, "--names", str(names)), str(names),
                 "holds 2 names", "has 3 outputs")
    data = tmp_path / "x.data"
    data.write_text(f"names={names}\n")
    assert_error(run(*tiny, image, "--data", str(data)), str(names), "holds 2 names")


def test_names_and_data_together_is_a_usage_error(tiny, image, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n")
    result = run(*tiny, image, "--names", str(names), "--data", str(names))
    assert result.exit_code == 2 and "not both" in result.stderr


def test_json(tiny, image, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    result = run(*tiny, image, image, "--top", "2", "--names", str(names), "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    one = {"path": image, "top": [{"class": 1, "name": "dog", "probability": pytest.approx(.9)},
                                  {"class": 2, "name": "bird",
                                   "probability": pytest.approx(.0877)}]}
    assert document == {"images": [one, one]}


def test_several_images_and_a_folder_in_order(tiny, image, tmp_path):
    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.PNG", "a.jpg", "c.jpeg", ".hidden.png", "sub/d.png"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / name,
                                                            "JPEG" if "jp" in name else "PNG")
    (folder / "notes.txt").write_text("not an image")
    expected = [image, str(folder / "a.jpg"), str(folder / "b.PNG"), str(folder / "c.jpeg")]
    assert classifier.image_paths([image, str(folder)]) == expected
    result = run(*tiny, image, str(folder))
    assert result.exit_code == 0, result.output
    assert result.stdout == "\n".join(f"{path}\n90.00%: 1\n" for path in expected)


def test_outputs_that_are_not_probabilities_are_printed_as_darknet_does(tmp_path, image):
    # No [softmax]: Darknet prints the raw outputs x 100; a [cost] shows what it reads.
    cfg = tmp_path / "raw.cfg"
    cfg.write_text(TINY_CFG)
    weights = write_weights(tmp_path / "raw.weights", [3, -1.5, .25], np.zeros((3, 4)))
    result = run(str(cfg), str(weights), image, "--top", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout == "300.00%: 0\n25.00%: 2\n-150.00%: 1\n"
    cfg.write_text(TINY_CFG + "[cost]\ntype=sse\n")
    assert run(str(cfg), str(weights), image, "--top", "3").stdout == result.stdout


# ---------------------------------------------------------------------- bad input

def test_bad_images(tiny, tmp_path):
    assert_error(run(*tiny, str(tmp_path / "nope.png")), str(tmp_path / "nope.png"),
                 "no such file or folder")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(empty / "sub" / "x.png")
    assert_error(run(*tiny, str(empty)), str(empty), "no .png, .jpg or .jpeg")
    broken = tmp_path / "broken.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20), np.uint8)).save(broken)
    broken.write_bytes(broken.read_bytes()[:200])
    assert_error(run(*tiny, str(broken)), str(broken), "cannot decode")
    junk = tmp_path / "junk.jpg"
    junk.write_text("not a jpeg")
    assert_error(run(*tiny, str(junk)), str(junk), "not a PNG or JPEG")


def test_weights_that_do_not_fit_the_cfg(tiny, image, tmp_path):
    short = write_weights(tmp_path / "short.weights", np.zeros(3), np.zeros(11))
    assert_error(run(tiny[0], str(short), image), str(short), "expected 15 floats", "found 14")


@pytest.mark.parametrize("cfg, words", [
    ("[net]\ninputs=4\n[connected]\noutput=3\n[softmax]\n", "a flat input of 4"),
    ("[net]\nwidth=2\nheight=2\nchannels=2\n[connected]\noutput=3\n[softmax]\n",
     "2 x 2 x 2"),
    ("[net]\nwidth=2\nheight=2\nchannels=1\n[connected]\noutput=3\n[softmax]\ntree=t.tree\n",
     "can only be tabulated"),
])
def test_networks_that_cannot_predict_images(tmp_path, image, cfg, words):
    path = tmp_path / "net.cfg"
    path.write_text(cfg)
    weights = write_weights(tmp_path / "w.weights", np.zeros(15))
    assert_error(run(str(path), str(weights), image), str(path), words)
    with pytest.raises(DarkbpError, match=words):
        darkbp.load(path).classify(image)


# ---------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def lenet(tmp_path_factory, sample) -> tuple[str, str]:
    """(cfg/mnist.cfg, weights after one epoch on the shipped sample)."""
    out = tmp_path_factory.mktemp("lenet")
    trainer = Trainer(parse_network(CFG_DIR / "mnist.cfg"), sample,
                      TrainOptions(out=out, epochs=1, threads=1))
    trainer.run()
    return str(CFG_DIR / "mnist.cfg"), str(trainer.path("final"))


def test_predicted_digits_are_net_predict_on_the_letterboxed_pixels(lenet, sample, tmp_path):
    digits = sample.test_images[:12].reshape(12, 28, 28)
    labels = sample.test_labels[:12]
    paths, inputs = [], []
    for i, digit in enumerate(digits):
        if i % 3 == 2:      # a wider colour JPEG: letterboxed into 28 x 21 rows of digit
            path = tmp_path / f"{i:02d}.jpg"
            Image.fromarray(digit).resize((40, 30)).convert("RGB").save(path, quality=95)
            pixels = np.asarray(Image.open(path).convert("L"))    # luma, as Pillow reads it
        else:
            path = tmp_path / f"{i:02d}.png"
            Image.fromarray(digit).save(path)
            pixels = digit
        paths.append(str(path))
        inputs.append(darknet_letterbox(pixels[None].astype(np.float32) / 255, 28, 28))
    net = darkbp.load(*lenet)
    expected = net.predict(np.stack(inputs))
    assert (expected.argmax(axis=1) == labels).sum() >= 10, expected.argmax(axis=1)  # learned

    result = run(*lenet, str(tmp_path), "--top", "10", "--format", "json")
    assert result.exit_code == 0, result.output
    images = json.loads(result.stdout)["images"]
    assert [image["path"] for image in images] == paths
    for image, p in zip(images, expected):
        assert [entry["class"] for entry in image["top"]] == list(np.argsort(-p, kind="stable"))
        np.testing.assert_allclose([entry["probability"] for entry in image["top"]],
                                   np.sort(p)[::-1], rtol=1e-5, atol=1e-7)
    for path, p in zip(paths, expected):
        np.testing.assert_allclose(net.classify(path), p, rtol=1e-5, atol=1e-7)


def test_threads_split_the_passes_left_once_they_are_long(lenet, tmp_path, monkeypatch):
    for i in range(12):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (28, 28), np.uint8)).save(
            tmp_path / f"{i:02d}.png")
    args = [*lenet, str(tmp_path), "--top", "10", "--format", "json"]
    one = run(*args, "--threads", "1")
    assert one.exit_code == 0, one.output
    split = []

    class Spy(classifier.Runner):
        def __init__(self, *args):
            super().__init__(*args)
            split.append(self.split)

    monkeypatch.setattr(classifier, "Runner", Spy)
    monkeypatch.setattr(classifier, "MAX_PASS", 4)
    two = run(*args, "--threads", "2")
    assert two.exit_code == 0, two.output
    assert split == []                      # 8 images left of LeNet: far below a second
    monkeypatch.setattr(classifier, "SPLIT_ABOVE", 0.0)
    two = run(*args, "--threads", "2")
    assert two.exit_code == 0, two.output
    assert split == [True] and two.stderr.count("4 images: Predicted in") == 3
    for mine, theirs in zip(json.loads(one.stdout)["images"], json.loads(two.stdout)["images"]):
        assert mine["path"] == theirs["path"]
        assert [e["class"] for e in mine["top"]] == [e["class"] for e in theirs["top"]]
        np.testing.assert_allclose([e["probability"] for e in mine["top"]],
                                   [e["probability"] for e in theirs["top"]], rtol=1e-5,
                                   atol=1e-7)
