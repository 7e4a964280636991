"""Darknet's `.weights` files (SPEC 7): read and write them so weights travel both ways.

Little-endian. Header: int32 major, minor, revision, then `seen` (images trained
on) as uint64 when major·10 + minor >= 2 and major, minor < 1000, else int32
(load_weights_upto in pjreddie/darknet src/parser.c). darkbp writes 0, 2, 0.
Then float32 arrays, layer by layer in cfg order, in the order each layer type
gives (`Layer.weights_order`), e.g.

    convolutional   biases, [scales, rolling_mean, rolling_variance], weights
    connected       biases, weights, [scales, rolling_mean, rolling_variance]

Convolution weights are (filters, channels/groups, size, size) and connected
weights (outputs, inputs), both C order; when major or minor is above 1000
Darknet stored the arrays a layer lists in `transposed` (connected weights)
transposed, (inputs, outputs).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from darkbp.atomic import atomic_open
from darkbp.errors import DarkbpError
from darkbp.layers.base import Layer

_VERSION = struct.Struct("<iii")


class WeightsHeader(NamedTuple):
    major: int
    minor: int
    revision: int
    seen: int

    @property
    def transposed(self) -> bool:
        """Connected weights stored (inputs, outputs), as Darknet reads major/minor > 1000."""
        return self.major > 1000 or self.minor > 1000


def save_weights(path: str | os.PathLike, layers: Sequence[Layer], seen: int) -> None:
    """Write `layers` as a Darknet .weights file, atomically, float32 whatever their dtype."""
    if not 0 <= seen < 2 ** 64:
        raise ValueError(f"seen must fit in a uint64, got {seen}")
    header = _VERSION.pack(0, 2, 0) + struct.pack("<Q", seen)
    with atomic_open(path) as f:
        f.write(header)
        for layer in layers:
            for name in layer.weights_order():
                f.write(np.ascontiguousarray(getattr(layer, name), dtype="<f4").tobytes())


def read_header(path: str | os.PathLike) -> WeightsHeader:
    """(major, minor, revision, seen) of a .weights file."""
    with _open(path) as f:
        return _read_header(f, path)


def load_weights(path: str | os.PathLike, layers: Sequence[Layer]) -> int:
    """Fill the layers' arrays in place from a .weights file (converted to their dtype).

    The file is checked before anything is touched: one with too few or too many
    floats, or with a NaN or an infinity (Darknet's format has no checksum, and a
    damaged byte often makes one), is a DarkbpError and leaves the layers as they
    were. Returns seen.
    """
    with _open(path) as f:
        header = _read_header(f, path)
        size = os.fstat(f.fileno()).st_size - f.tell()
        expected = sum(getattr(layer, name).size for layer in layers for name in layer.weights_order())
        if size != 4 * expected:
            stray = f" and {size % 4} stray bytes" if size % 4 else ""
            raise DarkbpError(f"expected {expected} floats after the header, "
                              f"found {size // 4}{stray}", file=str(path))
        values = np.fromfile(f, dtype="<f4", count=expected)
    _check_finite(values, layers, path)
    pos = 0
    for layer in layers:
        for name in layer.weights_order():
            target = getattr(layer, name)
            chunk = values[pos:pos + target.size]
            pos += target.size
            if header.transposed and name in layer.transposed:
                outputs, inputs = target.shape
                chunk = chunk.reshape(inputs, outputs).T
            target[...] = chunk.reshape(target.shape)
    return header.seen


def _check_finite(values: np.ndarray, layers: Sequence[Layer], path) -> None:
    """A DarkbpError naming the first array that holds a NaN or an infinity, if any does."""
    finite = np.isfinite(values)
    if finite.all():
        return
    first, pos = int(np.argmin(finite)), 0
    for i, layer in enumerate(layers):
        for name in layer.weights_order():
            pos += getattr(layer, name).size
            if first < pos:
                raise DarkbpError(f"{values.size - int(finite.sum())} values are NaN or "
                                  f"infinite, the first in layer {i} {name}: the "
                                  "file is corrupt", file=str(path))


def _open(path):
    try:
        return open(path, "rb")
    except OSError as e:
        raise DarkbpError(f"cannot read weights: {e.strerror}", file=str(path)) from e


def _read_header(f, path) -> WeightsHeader:
    raw = f.read(_VERSION.size)
    if len(raw) == _VERSION.size:
        major, minor, revision = _VERSION.unpack(raw)
        wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
        seen_format = "<Q" if wide else "<i"
        raw += f.read(struct.calcsize(seen_format))
        if len(raw) == _VERSION.size + struct.calcsize(seen_format):
            (seen,) = struct.unpack_from(seen_format, raw, _VERSION.size)
            return WeightsHeader(major, minor, revision, seen)
    raise DarkbpError(f"too short for a .weights header ({len(raw)} bytes)", file=str(path))
