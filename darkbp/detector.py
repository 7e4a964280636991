"""Darknet's `detector test` on images: letterboxed inputs, every head's boxes, NMS, and the
detections as plain data.

    network = parse_network("cfg/yolo-digits.cfg").initialize(0, np.float32)
    load_weights("backup/yolo-digits_final.weights", network.layers)
    check_detector(network)
    for image in detect_files(network, ["dog.jpg"], names=names):
        image["path"], image["width"], image["height"]
        for d in image["detections"]:       # one per (box, class) above thresh, after NMS
            d["class"], d["name"], d["confidence"], d["objectness"], d["box"], d["pixels"]

The steps are Darknet's (pjreddie's test_detector): the image read as load_image_color
reads it and letterboxed to the network's size (darkbp.classifier.letterboxed), the
network run in evaluation mode, each head's predictions decoded in order of the heads
(the layers' `boxes`: get_network_boxes), the boxes made relative to the photo
(boxes.correct_boxes), do_nms_sort (boxes.nms_sort), and the (box, class) pairs whose
probability is above the threshold listed in the order Darknet's draw_detections prints
them. Pure library code: `darkbp detect` and `darkbp map` render or score the results.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from darkbp.boxes import correct_boxes, nms_sort
from darkbp.classifier import MAX_PASS, PASS_BYTES, check_input, letterboxed
from darkbp.errors import DarkbpError
from darkbp.network import Network
from darkbp.parallel import Runner, head_outputs
from darkbp.threads import get_threads, set_threads

THRESH, HIER, NMS = 0.5, 0.5, 0.45      # test_detector's defaults

F32 = np.float32


def check_detector(network: Network) -> int:
    """The number of classes the network's detection heads share; a DarkbpError naming the
    cfg unless it takes letterboxed images and has at least one head, all with the same
    `classes`."""
    check_input(network, command=None)
    heads = network.heads
    if not heads:
        raise DarkbpError("has no detection head ([yolo], [region] or [detection]): "
                          "use darkbp predict for a classifier", file=network.file)
    for head in heads[1:]:
        if head.classes != heads[0].classes:
            raise DarkbpError(f"[{head.header}] has classes={head.classes}, but the "
                              f"[{heads[0].header}] at line {heads[0].line} has "
                              f"classes={heads[0].classes}: every head must detect the "
                              "same classes", file=network.file, line=head.line)
    return heads[0].classes


def network_boxes(network: Network, outputs: Sequence[np.ndarray],
                  sizes: Sequence[tuple[int, int]], thresh: float = THRESH,
                  hier: float = HIER, nms: float = NMS
                  ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image, Darknet's detections after do_nms_sort, in the order it leaves them:
    (boxes (k, 4) relative to the photo (unclipped centre form), objectness (k,),
    probabilities (k, classes) after NMS; AlexeyAB's DIoU NMS where the last [yolo] sets
    nms_kind). outputs: head_outputs; sizes: each photo's (width, height). nms 0 skips NMS,
    as Darknet does."""
    _, neth, netw = network.input_shape
    per_head = [head.boxes(y, thresh, hier, netw, neth)
                for head, y in zip(network.heads, outputs)]
    # AlexeyAB's nms_kind is the last layer's (its detector reads net.layers[net.n - 1])
    overlap = getattr(network.heads[-1], "nms_overlap", lambda: None)()
    result = []
    for image, (width, height) in enumerate(sizes):
        parts = [found[image] for found in per_head]
        boxes = correct_boxes(np.concatenate([p[0] for p in parts]), width, height, netw, neth)
        objectness = np.concatenate([p[1] for p in parts])
        probs = np.concatenate([p[2] for p in parts])
        if nms:
            order, probs = nms_sort(boxes, objectness, probs, nms, overlap)
            boxes, objectness, probs = boxes[order], objectness[order], probs[order]
        result.append((boxes, objectness, probs))
    return result


def pixels(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(k, 4) relative centre-form boxes -> (k, 4) int (left, top, right, bottom) pixels of a
    width x height image, as draw_detections computes them ((x − w/2.)·width, truncated
    toward zero as C's int conversion), clipped to the image (NaN: 0)."""
    b = np.asarray(boxes, F32).astype(np.float64)
    edges = np.stack([(b[:, 0] - b[:, 2] / 2) * width, (b[:, 1] - b[:, 3] / 2) * height,
                      (b[:, 0] + b[:, 2] / 2) * width, (b[:, 1] + b[:, 3] / 2) * height],
                     axis=1)
    high = np.array([width - 1, height - 1, width - 1, height - 1], np.float64)
    edges = np.clip(np.nan_to_num(edges, nan=0.0), 0, high)
    return np.trunc(edges).astype(np.int64)


def detections(boxes: np.ndarray, objectness: np.ndarray, probs: np.ndarray, width: int,
               height: int, thresh: float = THRESH, names: Sequence[str] | None = None
               ) -> list[dict]:
    """One image's (box, class) pairs whose probability is above `thresh`, in the order
    Darknet's draw_detections prints them (detection by detection, classes in order), as
    plain data: {"class", "name", "confidence" (prob[k] = objectness·class), "objectness",
    "box" [x, y, w, h] relative, unclipped, "pixels" [x1, y1, x2, y2] clipped}."""
    rows, classes = np.nonzero(probs > F32(thresh))        # row-major: Darknet's order
    corners = pixels(boxes[rows], width, height)
    return [{"class": int(k), "name": names[k] if names is not None else str(k),
             "confidence": float(probs[i, k]), "objectness": float(objectness[i]),
             "box": [float(v) for v in boxes[i]], "pixels": [int(v) for v in corner]}
            for i, k, corner in zip(rows, classes, corners)]


def detect_passes(network: Network, paths: Sequence[str], thresh: float = THRESH,
                  hier: float = HIER, nms: float = NMS, threads: int = 1,
                  names: Sequence[str] | None = None, pjreddie_batchnorm: bool = False,
                  forward: Callable[[np.ndarray], list[np.ndarray]] | None = None
                  ) -> Iterator[tuple[list[dict], float]]:
    """(the images of one forward pass as `detect_files` gives them, the seconds of that
    pass), pass by pass: as many letterboxed images as fit in darkbp.classifier's
    PASS_BYTES (at most MAX_PASS) go through the network at once. With `threads` > 1 and
    at least 2·threads images each pass is split across `threads` workers
    (darkbp.parallel.Runner, started here, whose start costs ~0.2 s); else `threads`
    threads work in its matrix products. After the last pass BLAS has its thread count of
    before (a training Runner's workers run beside it). Only the detections are kept, so
    memory stays bounded over any number of images. `forward`: the heads' outputs of a
    batch in place of the network's own (`head_outputs`), e.g. another framework's twin of
    it, or a training Runner's `head_outputs` (then no workers are started here)."""
    for chunk, sizes, found, seconds in _passes(network, paths, thresh, hier, nms, threads,
                                                pjreddie_batchnorm, forward):
        yield [{"path": path, "width": w, "height": h,
                "detections": detections(*image, w, h, thresh, names)}
               for path, (w, h), image in zip(chunk, sizes, found)], seconds


def detected_arrays(network: Network, paths: Sequence[str], thresh: float = THRESH,
                    hier: float = HIER, nms: float = NMS, threads: int = 1,
                    forward: Callable[[np.ndarray], list[np.ndarray]] | None = None
                    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image, in order, the (box, class) pairs `detect_files` lists, as arrays for
    scoring: (boxes (n, 4) float32, classes (n,) int64, probabilities (n,) float32), equal
    to darkbp.mapeval.as_arrays of its dicts, without making a dict per pair (an untrained
    network has thousands an image). Arguments as for detect_passes."""
    for _, _, found, _ in _passes(network, paths, thresh, hier, nms, threads, False, forward):
        for boxes, _, probs in found:
            rows, classes = np.nonzero(probs > F32(thresh))    # detections' order
            yield boxes[rows], classes.astype(np.int64), probs[rows, classes]


def _passes(network, paths, thresh, hier, nms, threads, pjreddie_batchnorm, forward):
    """(the paths of one pass, their photos' (width, height), network_boxes of each, the
    seconds of the pass's forward), pass by pass, as detect_passes describes."""
    check_detector(network)
    shape = network.input_shape
    per_pass = max(1, min(MAX_PASS, PASS_BYTES // (4 * int(np.prod(shape)))))
    before = get_threads()
    set_threads(threads)
    runner = None
    try:
        if forward is None and threads > 1 and len(paths) >= 2 * threads:
            runner = Runner(network, threads)       # with workers, BLAS on 1 thread
            forward = functools.partial(runner.head_outputs,
                                        pjreddie_batchnorm=pjreddie_batchnorm)
        for start in range(0, len(paths), per_pass):
            chunk = paths[start:start + per_pass]
            inputs = [letterboxed(path, shape, with_size=True) for path in chunk]
            x = np.stack([image for image, _ in inputs])
            sizes = [size for _, size in inputs]
            started = time.perf_counter()
            outputs = (forward(x) if forward is not None else
                       head_outputs(network, x, pjreddie_batchnorm))
            seconds = time.perf_counter() - started
            found = network_boxes(network, outputs, sizes, thresh, hier, nms)
            yield chunk, sizes, found, seconds
    finally:
        if runner is not None:
            runner.close()
        set_threads(before)


def detect_files(network: Network, paths: Sequence[str], thresh: float = THRESH,
                 hier: float = HIER, nms: float = NMS, threads: int = 1,
                 names: Sequence[str] | None = None, pjreddie_batchnorm: bool = False,
                 forward: Callable[[np.ndarray], list[np.ndarray]] | None = None
                 ) -> Iterator[dict]:
    """Per image, in order: {"path", "width", "height", "detections": [...]} (see
    `detections`), one element of `darkbp detect --format json`'s "images"; `forward` as
    for detect_passes."""
    for images, _ in detect_passes(network, paths, thresh, hier, nms, threads, names,
                                   pjreddie_batchnorm, forward):
        yield from images
