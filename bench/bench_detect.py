"""How fast darkbp detects: `darkbp detect` on one photo, start-up included, and `darkbp map`
against the forward passes alone.

    python bench/bench_detect.py                  # both, on bench/yolo_tiny_128.cfg
    python bench/bench_detect.py --images 1000 --runs 5 --threads 1

detect: the whole command (a fresh process: imports, cfg, weights, decoding, letterbox,
forward, boxes, NMS, the picture) on a 640 x 480 JPEG, --runs times; the median and the
fastest. The weights are the cfg's random initialisation (the work does not depend on
them, except NMS's, which a random net gives plenty of: thresh 0.005 as map's).

map: --images random 128 x 128 PNG photos with 1 to 4 random boxes each, written once
to a temporary folder, scored by `darkbp map` in this process; against the images per
second of the forward passes alone (letterboxed batches of the same size through
Network.forward). The ratio map/forward is what decoding, NMS and matching leave of the
network's throughput.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import darkbp
from darkbp.classifier import letterboxed
from darkbp.threads import set_threads

HERE = Path(__file__).parent
CFG = HERE / "yolo_tiny_128.cfg"
PHOTO = HERE.parent.parent / "shared" / "darknet-golden" / "yolo_detect" / "dog.jpg"


def time_detect(folder: Path, runs: int, threads: int) -> list[float]:
    photo = folder / "photo.jpg"
    if PHOTO.is_file():
        Image.open(PHOTO).convert("RGB").resize((640, 480)).save(photo, quality=90)
    else:
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), np.uint8)).save(photo, quality=90)
    command = [sys.executable, "-m", "darkbp", "detect", str(CFG), str(folder / "net.weights"),
               str(photo), "--out", str(folder), "--threads", str(threads)]
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return seconds


def make_valid_set(folder: Path, images: int) -> Path:
    rng = np.random.default_rng(1)
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    paths = []
    for i in range(images):
        path = folder / "images" / f"{i:06d}.png"
        Image.fromarray(rng.integers(0, 256, (128, 128, 3), np.uint8)).save(path)
        boxes = rng.uniform(0.2, 0.8, (rng.integers(1, 5), 2))
        sizes = rng.uniform(0.1, 0.3, boxes.shape)
        lines = [f"{rng.integers(10)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}"
                 for (x, y), (w, h) in zip(boxes, sizes)]
        (folder / "labels" / f"{i:06d}.txt").write_text("\n".join(lines) + "\n")
        paths.append(str(path))
    (folder / "valid.txt").write_text("\n".join(paths) + "\n")
    (folder / "digits.names").write_text("".join(f"{k}\n" for k in range(10)))
    data = folder / "bench.data"
    data.write_text(f"classes=10\nvalid={folder / 'valid.txt'}\n"
                    f"names={folder / 'digits.names'}\n")
    return data


def time_forward(net, paths: list[str], threads: int) -> float:
    """Images per second of letterboxing plus the forward passes (64 at a time)."""
    set_threads(threads)
    started = time.perf_counter()
    for start in range(0, len(paths), 64):
        x = np.stack([letterboxed(p, net.network.input_shape) for p in paths[start:start + 64]])
        net.network.forward(x)
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        net = darkbp.load(CFG)
        net.save_weights(folder / "net.weights")
        seconds = time_detect(folder, args.runs, args.threads)
        print(f"darkbp detect, one 640 x 480 JPEG, {CFG.name}, {args.threads} thread(s): "
              f"median {statistics.median(seconds):.3f} s, fastest {min(seconds):.3f} s "
              f"({args.runs} runs)")
        data = make_valid_set(folder, args.images)
        paths = (folder / "valid.txt").read_text().split()
        forward = time_forward(net, paths, args.threads)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "darkbp", "map", str(CFG),
                                 str(folder / "net.weights"), "--data", str(data),
                                 "--threads", str(args.threads)],
                                capture_output=True, text=True, env=os.environ)
        elapsed = time.perf_counter() - started
        if result.returncode:
            sys.exit(f"darkbp map failed: {result.stderr}")
        rate = args.images / elapsed
        print(f"darkbp map, {args.images} images of 128 x 128: {rate:.0f} img/s, whole command; "
              f"letterbox + forward alone: {forward:.0f} img/s; map/forward = "
              f"{rate / forward:.2f}")


if __name__ == "__main__":
    main()
