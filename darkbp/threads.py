"""How many threads NumPy's BLAS uses, changed at run time.

OpenBLAS reads OPENBLAS_NUM_THREADS / OMP_NUM_THREADS only when it is loaded,
which happens when numpy is imported: too early for a `--threads` option. So,
as threadpoolctl does (it is not a dependency), we find the OpenBLAS that this
process has loaded and call its own `openblas_set_num_threads` through ctypes.
numpy 2.x wheels bundle it as `libscipy_openblas64_` with prefixed, suffixed
symbols (`scipy_openblas_set_num_threads64_`); distribution builds export the
plain names. The environment variables are set too, for child processes.

    set_threads(2)
    get_threads()   # -> 2, read back from the library itself
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from darkbp.errors import DarkbpError

# Symbol spellings across OpenBLAS builds: plain, 64-bit-int (`64_`, `_64`), and
# the scipy-openblas wheels' `scipy_` prefix.
_PREFIXES = ("", "scipy_")
_SUFFIXES = ("", "64_", "_64")
_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class _OpenBLAS:
    path: str
    library: ctypes.CDLL   # keeps the handle, and so the functions, alive
    get: Callable[[], int]
    set: Callable[[int], None]


def default_threads() -> int:
    """The number of cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_threads(n: int) -> None:
    """Make NumPy's BLAS use `n` threads from now on (and child processes too).

    Raises DarkbpError when no supported BLAS is loaded, or when the library
    does not accept `n` (OpenBLAS caps it at the MAX_THREADS it was built with).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
    n = int(n)
    blas = _blas()
    blas.set(n)
    got = blas.get()
    if got != n:
        raise DarkbpError(f"asked for {n} BLAS threads, but {Path(blas.path).name} "
                          f"runs {got} (the most it was built for)")
    for name in _ENV:
        os.environ[name] = str(n)


def get_threads() -> int:
    """The number of threads NumPy's BLAS uses now, as the library reports it."""
    return int(_blas().get())


def blas_library() -> str:
    """The path of the BLAS library that set_threads controls."""
    return _blas().path


@functools.lru_cache(maxsize=1)
def _blas() -> _OpenBLAS:
    tried = []
    for path in _candidate_paths():
        tried.append(path)
        found = _bind(path)
        if found is not None:
            return found
    vendor = _numpy_blas_name()
    where = f" (looked at: {', '.join(tried)})" if tried else ""
    raise DarkbpError(f"cannot set the number of threads: NumPy's BLAS is {vendor}, and "
                      f"darkbp can only control OpenBLAS{where}; set OMP_NUM_THREADS "
                      "before starting darkbp instead")


def _candidate_paths() -> list[str]:
    """OpenBLAS libraries of this process: NumPy's own first, then any other loaded one."""
    numpy_dir = Path(np.__file__).resolve().parent
    bundled = [numpy_dir.parent / "numpy.libs", numpy_dir / ".dylibs"]   # Linux, macOS wheels
    paths = [str(p) for folder in bundled if folder.is_dir()
             for p in sorted(folder.iterdir()) if "openblas" in p.name.lower()]
    paths += [p for p in _loaded_libraries() if "openblas" in p.lower()]
    return list(dict.fromkeys(paths))


def _loaded_libraries() -> list[str]:
    """Shared objects mapped into this process, from /proc/self/maps (Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/") and ".so" in fields[5]:
            paths.append(fields[5])
    return list(dict.fromkeys(paths))


def _bind(path: str) -> _OpenBLAS | None:
    try:
        # Same file as the one numpy loaded: the loader hands back that copy, not a second one.
        library = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
    except OSError:
        return None   # not loaded by this process (RTLD_NOLOAD), or not loadable
    for prefix in _PREFIXES:
        for suffix in _SUFFIXES:
            get = getattr(library, f"{prefix}openblas_get_num_threads{suffix}", None)
            set_ = getattr(library, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                return _OpenBLAS(path, library, get, set_)
    return None


def _numpy_blas_name() -> str:
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return str(info.get("name", "unknown"))
    except Exception:  # the config's layout is not part of numpy's API
        return "unknown"
