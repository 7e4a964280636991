"""The size of NumPy's ufunc buffer while darkbp's kernels run.

A ufunc over operands that are not contiguous (a conv's strided windows, a
pool's taps, col2im's offset blocks: runs of 64 to ~1000 values) goes through
NumPy's buffered iterator, which with the default 8192-element buffer copies
the operands in and out of it: a strided `a += b` then runs ~3x slower than on
contiguous arrays.  With a 2048-element buffer it runs ~1.3x slower for runs of
a few hundred values and over 1.5x faster for runs of 64 (bench/bench_ops.py;
mixed-dtype ops such as dy·mask also gain).  The setting is scoped: NumPy
restores the buffer size, like the error state, when the `np.errstate` context
is left, and keeps it per thread.

    @kernel_buffers
    def forward(self, x, train): ...
"""

from __future__ import annotations

import functools

import numpy as np

UFUNC_BUFFER = 2048  # elements


def kernel_buffers(function):
    """Run `function` with NumPy's ufunc buffer at UFUNC_BUFFER elements."""
    @functools.wraps(function)
    def with_buffers(*args, **kwargs):
        with np.errstate():
            np.setbufsize(UFUNC_BUFFER)
            return function(*args, **kwargs)
    return with_buffers
