"""Atomic file writes: a reader sees the old file or the new one, never half of one.

`atomic_open(path)` yields a binary file that is really a temporary file in the
same folder; on success it is flushed, fsynced and renamed over `path`
(os.replace), and the folder is fsynced so the rename itself survives a crash.
On any exception the temporary file is removed and `path` is untouched. A
process killed mid-write leaves `path` as it was, plus a hidden `.NAME.*.tmp`.

`append_whole(path, data)` is the same promise for a line appended to a log.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from darkbp.errors import DarkbpError


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """`with atomic_open(p) as f: f.write(...)` replaces p only if the block succeeds."""
    path = Path(path)
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise DarkbpError(f"cannot write {path}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file 0600; give it the mode a plain open() would.
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise DarkbpError(f"cannot write {path}: {e.strerror or e}") from e
        raise
    _fsync_dir(folder)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], object]) -> None:
    """Call write_fn(f) on a temporary file and move it over `path` if it returns."""
    with atomic_open(path) as f:
        write_fn(f)


def append_whole(path: str | os.PathLike, data: bytes) -> None:
    """Append `data` to the file at `path` (created if need be), all of it or none: a write
    that fails part-way (a full disk) is cut off again, so that a log of lines keeps no half
    line for the next run to append to. Raises the OSError."""
    with open(path, "ab", buffering=0) as f:
        size = f.seek(0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[f.write(view):]
        except OSError:
            f.truncate(size)
            raise


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create the folder if needed and prove it takes files; DarkbpError naming it if not."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DarkbpError(f"{path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DarkbpError(f"cannot create the folder {path}: {e.strerror}") from e
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".darkbp-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DarkbpError(f"cannot write into the folder {path}: {e.strerror}") from e
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
