"""darkbp: Darknet-style .cfg networks in NumPy.

Parse a cfg, print Darknet's layer table, train with vectorised backprop and
check every gradient numerically. From Python (darkbp/api.py):

    import darkbp
    net = darkbp.load("cfg/mnist.cfg", "mnist.weights")   # weights optional
    probabilities = net.predict(x)                       # x: (N, 1, 28, 28) in [0, 1]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from darkbp.errors import DarkbpError

if TYPE_CHECKING:
    from darkbp.api import Net, load

__version__ = "0.1.0"
__all__ = ["DarkbpError", "Net", "__version__", "load"]


def __getattr__(name: str):
    # darkbp.api imports NumPy and every layer module (~0.15 s): only on first use, so that
    # `import darkbp` stays cheap, and with it every CLI command's start (the CLI reads
    # __version__ from here).
    if name in ("Net", "load"):
        from darkbp import api
        return getattr(api, name)
    raise AttributeError(f"module 'darkbp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
