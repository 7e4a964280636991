"""Downloading a dataset's four files: `darkbp data fetch NAME`.

The only code in darkbp that touches the network, and only when the user asks.
Each file is fetched from the dataset's public mirrors in turn (or from one
`mirror` the user gives), checked against its published md5, and written
atomically: a temporary file in the destination folder, fsync, os.replace. A
failed or interrupted download never leaves a partial file under the final
name. Standard library only (urllib).

The mirrors and the published md5s (`MIRRORS`, `MD5`) are in `darkbp.catalogue`;
this module only downloads.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from darkbp.catalogue import MD5, MIRRORS, NAMES, cache_dir, candidates
from darkbp.errors import DarkbpError

TIMEOUT = 30.0  # seconds without an answer (connecting, or between two reads)
CHUNK = 1 << 16

# on_progress(filename, bytes_done, bytes_total or None), called as bytes arrive.
ProgressCallback = Callable[[str, int, int | None], None]


@dataclass
class FetchReport:
    """What `fetch` did: the folder, and which files it downloaded or found already there."""

    name: str
    dest: Path
    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


class _Failed(Exception):
    """One URL did not give a good file; the next mirror may."""


def fetch(name: str, dest: str | os.PathLike | None = None, mirror: str | None = None,
          on_progress: ProgressCallback | None = None) -> FetchReport:
    """Download dataset `name` into `dest` (default: the cache, see `cache_dir`).

    Files already in `dest` with the right md5 are kept. `mirror` replaces the
    built-in list of mirrors by one base URL (http, https or file).
    """
    if name not in NAMES:
        raise DarkbpError(f"unknown dataset {name!r} (known: {', '.join(NAMES)})")
    if mirror is not None and urllib.parse.urlsplit(mirror).scheme not in ("http", "https", "file"):
        raise DarkbpError(f"mirror {mirror!r} is not a URL such as http://host/path/")
    dest = Path(dest) if dest is not None else cache_dir(name)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DarkbpError(f"cannot create the folder: {error.strerror or error}", file=str(dest))

    report = FetchReport(name=name, dest=dest)
    bases = (mirror,) if mirror is not None else MIRRORS[name]
    for filename, md5 in MD5[name].items():
        target = dest / filename
        if target.is_file() and _md5(target) == md5:
            report.present.append(filename)
            continue
        failures = []
        for base in bases:
            url = base.rstrip("/") + "/" + filename
            try:
                _download(url, target, md5, on_progress)
                break
            except _Failed as failure:
                failures.append(f"{url}: {failure}")
        else:
            raise DarkbpError(_failure_message(name, failures))
        report.downloaded.append(filename)
    return report


def _download(url: str, target: Path, md5: str, on_progress: ProgressCallback | None) -> None:
    """Stream `url` into `target` through a temporary file; _Failed if it is not the right file."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(partial, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            digest, done = hashlib.md5(), 0
            if on_progress:
                on_progress(target.name, done, total)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if on_progress:
                    on_progress(target.name, done, total)
            # http.client returns b"" when the server closes early: count ourselves.
            if total is not None and done < total:
                raise _Failed(f"truncated transfer: received {done} of {total} bytes")
            if digest.hexdigest() != md5:
                raise _Failed(f"checksum mismatch: md5 {digest.hexdigest()}, expected {md5}")
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
        _fsync_folder(target.parent)
    except urllib.error.HTTPError as error:
        raise _Failed(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise _Failed(f"cannot connect: {error.reason}") from None
    except TimeoutError:
        raise _Failed(f"no answer within {TIMEOUT:g} s") from None
    except (OSError, http.client.HTTPException) as error:
        raise _Failed(f"transfer failed: {error!r}") from None
    finally:
        partial.unlink(missing_ok=True)


def _failure_message(name: str, failures: list[str]) -> str:
    files = ", ".join(MD5[name])
    folders = ", ".join(str(folder) for folder in candidates(name))
    return (f"cannot download {name}: {'; '.join(failures)}. darkbp looks for {name} in: "
            f"{folders}. Without network, put the four files ({files}) by hand into one "
            f"of these folders, e.g. {cache_dir(name)}")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
