"""kernel_buffers (darkbp/ops/buffers.py): a scoped ufunc buffer size."""

from __future__ import annotations

import threading

import numpy as np

from darkbp.ops.buffers import UFUNC_BUFFER, kernel_buffers


def test_buffer_size_inside_and_restored_after():
    seen = {}

    @kernel_buffers
    def kernel(x):
        seen["bufsize"] = np.getbufsize()
        seen["over"] = np.geterr()["over"]
        return x + 1

    before = np.getbufsize()
    with np.errstate(over="ignore"):
        assert kernel(1) == 2
    assert seen == {"bufsize": UFUNC_BUFFER, "over": "ignore"}   # the caller's error state holds
    assert np.getbufsize() == before


def test_restored_after_an_exception():
    @kernel_buffers
    def failing():
        raise ValueError

    before = np.getbufsize()
    try:
        failing()
    except ValueError:
        pass
    assert np.getbufsize() == before


def test_other_threads_keep_their_buffer_size():
    inside, other = threading.Event(), {}

    @kernel_buffers
    def kernel():
        inside.set()
        thread.join()

    def look():
        inside.wait()
        other["bufsize"] = np.getbufsize()

    thread = threading.Thread(target=look)
    thread.start()
    kernel()
    assert other["bufsize"] == 8192
