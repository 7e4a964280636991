"""IDX files (the MNIST format), read and written with NumPy.

An IDX file is a 4-byte magic number — two zero bytes, a type code, the number
of dimensions — then one big-endian uint32 per dimension, then the data in C
order. darkbp reads the two kinds MNIST-style datasets use, both unsigned bytes:

    0x00000801  labels  (N,)
    0x00000803  images  (N, rows, cols)

Files may be gzip-compressed or plain; which one is decided by the gzip magic
bytes, not by the name. Anything that is not exactly a valid file of those two
kinds — a wrong magic, a corrupt gzip stream, a data section shorter or longer
than the dimensions say — is a `DarkbpError` naming the file: never a silently
short dataset.
"""

from __future__ import annotations

import gzip as gziplib
import os
import zlib
from pathlib import Path

import numpy as np

from darkbp.errors import DarkbpError

GZIP_MAGIC = b"\x1f\x8b"
UNSIGNED_BYTE = 0x08
LABELS_MAGIC = 0x00000801
IMAGES_MAGIC = 0x00000803

# The other type codes of the IDX format, named only to say what a file holds.
_OTHER_TYPES = {0x09: "signed byte", 0x0B: "int16", 0x0C: "int32",
                0x0D: "float32", 0x0E: "float64"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an unsigned-byte IDX file with 1 or 3 dimensions.

    Returns: uint8 array, (N,) for labels or (N, rows, cols) for images.
    """
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DarkbpError(f"not an IDX file: {len(raw)} bytes, too short for the "
                          "4-byte magic number", file=str(path))
    zeros, type_code, ndim = raw[0:2], raw[2], raw[3]
    magic = int.from_bytes(raw[0:4], "big")
    if zeros != b"\0\0":
        raise DarkbpError(f"not an IDX file: magic number 0x{magic:08X} (expected "
                          f"0x{LABELS_MAGIC:08X} for labels or 0x{IMAGES_MAGIC:08X} "
                          "for images)", file=str(path))
    if type_code != UNSIGNED_BYTE:
        kind = _OTHER_TYPES.get(type_code, "an unknown type")
        raise DarkbpError(f"IDX magic 0x{magic:08X}: type code 0x{type_code:02X} "
                          f"({kind}) is not supported; darkbp reads unsigned-byte "
                          "IDX files (type code 0x08)", file=str(path))
    if ndim not in (1, 3):
        raise DarkbpError(f"IDX magic 0x{magic:08X}: {ndim} dimensions; darkbp reads "
                          "1 (labels, 0x00000801) or 3 (images, 0x00000803)",
                          file=str(path))

    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DarkbpError(f"truncated: the header needs {header} bytes, the file has "
                          f"{len(raw)}", file=str(path))
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = 1
    for d in dims:
        expected *= d  # Python int: no overflow for absurd headers
    found = len(raw) - header
    shape = " x ".join(str(d) for d in dims)
    if found < expected:
        raise DarkbpError(f"truncated: expected {expected} bytes of data ({shape}), "
                          f"found {found}", file=str(path))
    if found > expected:
        raise DarkbpError(f"too long: expected {expected} bytes of data ({shape}), "
                          f"found {found} ({found - expected} extra)", file=str(path))
    # copy(): an owned, writable array rather than a read-only view of `raw`.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def write_idx(path: str | os.PathLike, array: np.ndarray, gzip: bool = True) -> None:
    """Write a uint8 array of 1 (labels) or 3 (images) dimensions as an IDX file.

    With gzip=True the file is gzip-compressed with a zero timestamp, so the
    same array always gives the same bytes.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (1, 3):
        raise ValueError(f"write_idx takes uint8 arrays of 1 or 3 dimensions, "
                         f"not {array.dtype} with {array.ndim}")
    header = bytes([0, 0, UNSIGNED_BYTE, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array).tobytes()
    if gzip:
        data = gziplib.compress(data, compresslevel=9, mtime=0)
    Path(path).write_bytes(data)


def _read_bytes(path: str | os.PathLike) -> bytes:
    """The file's content, decompressed if it starts with the gzip magic."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise DarkbpError(f"cannot read: {error.strerror or error}", file=str(path))
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gziplib.decompress(raw)
    except EOFError:
        raise DarkbpError("corrupt gzip stream: the compressed data ends early "
                          "(truncated download?)", file=str(path)) from None
    except (OSError, zlib.error) as error:
        raise DarkbpError(f"corrupt gzip stream: {error}", file=str(path)) from None
