"""How long `darkbp summary` takes on Darknet's largest stock cfgs, and that it allocates nothing.

    python bench/bench_summary.py [CFG ...]    # default: densenet201.cfg and yolov3.cfg (608x608)

For each cfg: the median of 5 in-process runs of parse + summary_data + darknet_text, and of
5 runs of the whole command `darkbp summary CFG --format darknet` (interpreter start-up and
imports included), and the peak memory of one such command.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from darkbp.network import parse_network
from darkbp.summary import darknet_text, summary_data

SHARED_CFG = Path(__file__).resolve().parent.parent.parent / "shared" / "darknet-cfg"
DEFAULT = [SHARED_CFG / "densenet201.cfg", SHARED_CFG / "yolov3.cfg"]
RUNS = 5


def in_process(path: Path) -> float:
    start = time.perf_counter()
    network = parse_network(path)
    summary_data(network)
    darknet_text(network)
    return time.perf_counter() - start


def command(path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "darkbp",
                             "summary", str(path), "--format", "darknet"],
                            capture_output=True, text=True, check=True)
    return time.perf_counter() - start, int(result.stderr.strip().splitlines()[-1])


def main() -> None:
    paths = [Path(arg) for arg in sys.argv[1:]] or DEFAULT
    print(f"{'cfg':<24} {'layers':>6} {'in process':>11} {'command':>9} {'peak RSS':>9}")
    for path in paths:
        layers = len(parse_network(path).layers)
        inner = statistics.median(in_process(path) for _ in range(RUNS))
        runs = [command(path) for _ in range(RUNS)]
        outer = statistics.median(seconds for seconds, _ in runs)
        peak = max(kb for _, kb in runs)
        print(f"{path.name:<24} {layers:>6} {inner * 1e3:>9.0f}ms {outer:>8.2f}s "
              f"{peak / 1024:>7.0f}MB")


if __name__ == "__main__":
    main()
