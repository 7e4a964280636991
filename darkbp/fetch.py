"""Downloading a dataset: `darkbp data fetch NAME`.

The only code in darkbp that touches the network, and only when the user asks.
Each file is fetched from the dataset's public mirrors in turn (or from one
`mirror` the user gives), checked against its published md5, and written
atomically: a temporary file in the destination folder, fsync, os.replace. A
failed or interrupted download never leaves a partial file under the final
name. Standard library only (urllib, tarfile).

A dataset published as one archive (CIFAR-10's .tar.gz) is downloaded the same
way, then unpacked into a temporary folder beside its final one: only regular
files directly inside the archive's one folder, anything else (a `../` or
absolute path, a link, a device) refuses the whole archive. The folder is
checked as complete, renamed into place, and the archive removed.

The mirrors, the published md5s and the archives (`MIRRORS`, `MD5`,
`ARCHIVES`) are in `darkbp.catalogue`; this module only downloads.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from darkbp.catalogue import ARCHIVES, MD5, MIRRORS, NAMES, Archive, cache_dir, candidates
from darkbp.cifar import check_lengths
from darkbp.errors import DarkbpError

TIMEOUT = 30.0  # seconds without an answer (connecting, or between two reads)
CHUNK = 1 << 16

# A member of an archive darkbp unpacks: a plain file name, nothing that could
# leave the folder or hide in it ("..", "/", NUL).
_MEMBER_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")

# on_progress(filename, bytes_done, bytes_total or None), called as bytes arrive.
ProgressCallback = Callable[[str, int, int | None], None]


@dataclass
class FetchReport:
    """What `fetch` did: the folder, and which files it downloaded or found already there.

    For an archive dataset, `downloaded` holds the archive (unpacked into
    dest/ARCHIVES[name].folder, then removed) and `present` the folder.
    """

    name: str
    dest: Path
    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


class _Failed(Exception):
    """One URL did not give a good file; the next mirror may."""


def fetch(name: str, dest: str | os.PathLike | None = None, mirror: str | None = None,
          on_progress: ProgressCallback | None = None) -> FetchReport:
    """Download dataset `name` into `dest` (default: the cache, see `cache_dir`).

    Files already in `dest` with the right md5 are kept, as is an archive's
    complete unpacked folder. `mirror` replaces the built-in list of mirrors by
    one base URL (http, https or file).
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
    if name in ARCHIVES:
        _fetch_archive(ARCHIVES[name], report, bases, on_progress)
        return report
    for filename, md5 in MD5[name].items():
        target = dest / filename
        if target.is_file() and _md5(target) == md5:
            report.present.append(filename)
            continue
        partial = _partial(target)
        try:
            _download_to(partial, filename, bases, md5, name, on_progress)
            try:
                os.replace(partial, target)
            except OSError as error:
                raise DarkbpError(f"cannot write: {error.strerror or error}",
                                  file=str(target)) from None
            _fsync_folder(dest)
        finally:
            partial.unlink(missing_ok=True)
        report.downloaded.append(filename)
    return report


def _fetch_archive(archive: Archive, report: FetchReport, bases: tuple[str, ...],
                   on_progress: ProgressCallback | None) -> None:
    """Download, check and unpack `archive` into report.dest, unless a complete copy is there."""
    try:
        # cifar10 is the one archive dataset: its reader says what complete is.
        check_lengths(report.dest)
        report.present.append(archive.folder)
        return
    except DarkbpError:
        pass
    partial = _partial(report.dest / archive.file)
    try:
        _download_to(partial, archive.file, bases, MD5[report.name][archive.file],
                     report.name, on_progress)
        _unpack(partial, archive, report.dest)
    finally:
        partial.unlink(missing_ok=True)
    report.downloaded.append(archive.file)


def _download_to(partial: Path, filename: str, bases: tuple[str, ...], md5: str, name: str,
                 on_progress: ProgressCallback | None) -> None:
    """`filename` from the first of `bases` that gives the right file, into `partial`."""
    failures = []
    for base in bases:
        url = base.rstrip("/") + "/" + filename
        try:
            _receive(url, partial, md5, filename, on_progress)
            return
        except _Failed as failure:
            failures.append(f"{url}: {failure}")
    raise DarkbpError(_failure_message(name, failures))


def _partial(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.part")


def _receive(url: str, partial: Path, md5: str, label: str,
             on_progress: ProgressCallback | None) -> None:
    """Stream `url` into `partial`, fsynced; _Failed if it is not the file with this md5."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(partial, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            digest, done = hashlib.md5(), 0
            if on_progress:
                on_progress(label, done, total)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if on_progress:
                    on_progress(label, done, total)
            # http.client returns b"" when the server closes early: count ourselves.
            if total is not None and done < total:
                raise _Failed(f"truncated transfer: received {done} of {total} bytes")
            if digest.hexdigest() != md5:
                raise _Failed(f"checksum mismatch: md5 {digest.hexdigest()}, expected {md5}")
            out.flush()
            os.fsync(out.fileno())
    except urllib.error.HTTPError as error:
        raise _Failed(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise _Failed(f"cannot connect: {error.reason}") from None
    except TimeoutError:
        raise _Failed(f"no answer within {TIMEOUT:g} s") from None
    except (OSError, http.client.HTTPException) as error:
        raise _Failed(f"transfer failed: {error!r}") from None


def _unpack(path: Path, archive: Archive, dest: Path) -> None:
    """Unpack the checked archive at `path` into dest/archive.folder, all or nothing.

    Into a temporary folder in `dest` first; that must then hold every file the
    reader needs, at its exact length, before it is renamed into place
    (replacing an incomplete or damaged copy).
    """
    try:
        staging = Path(tempfile.mkdtemp(dir=dest, prefix=f".{archive.folder}.", suffix=".tmp"))
        # mkdtemp makes the folder 0700; give it the mode a plain mkdir would.
        mask = os.umask(0)
        os.umask(mask)
        staging.chmod(0o777 & ~mask)
    except OSError as error:
        raise DarkbpError(f"cannot unpack {archive.file} here: {error.strerror or error}",
                          file=str(dest)) from None
    try:
        try:
            with tarfile.open(path, "r:gz") as tar:
                for member in tar:
                    if member.isdir() and member.name == archive.folder:
                        continue
                    target = staging / _member_file(member, archive)
                    # "xb": a name that comes twice is refused, not overwritten.
                    with tar.extractfile(member) as source, open(target, "xb") as out:
                        shutil.copyfileobj(source, out, CHUNK)
                        out.flush()
                        os.fsync(out.fileno())
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise DarkbpError(f"cannot unpack {archive.file}: {error}") from None
        except FileExistsError as error:
            raise DarkbpError(f"refusing to unpack {archive.file}: "
                              f"{Path(error.filename).name} comes twice") from None
        except OSError as error:
            raise DarkbpError(f"cannot unpack {archive.file}: {error.strerror or error}",
                              file=str(dest)) from None
        try:
            check_lengths(staging)
        except DarkbpError as error:
            inside = Path(error.file).relative_to(staging).as_posix()
            where = archive.folder if inside == "." else f"{archive.folder}/{inside}"
            raise DarkbpError(f"{where}: {error.message}", file=archive.file) from None
        _fsync_folder(staging)
        _replace_folder(staging, dest / archive.folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _member_file(member: tarfile.TarInfo, archive: Archive) -> str:
    """The file name of `member` inside archive.folder; DarkbpError for anything else."""
    folder, _, name = member.name.partition("/")
    if member.isreg() and folder == archive.folder and _MEMBER_NAME.fullmatch(name):
        return name
    if member.isreg():
        kind = "file"
    elif member.isdir():
        kind = "folder"
    elif member.issym() or member.islnk():
        kind = "link"
    else:
        kind = "special file"
    raise DarkbpError(f"refusing to unpack {archive.file}: it holds the {kind} "
                      f"{member.name!r}, and darkbp takes only plain files directly "
                      f"inside {archive.folder}/")


def _replace_folder(staging: Path, final: Path) -> None:
    """Rename `staging` to `final`; an old `final` is moved aside first and removed after."""
    old = final.with_name(f".{final.name}.{os.getpid()}.old")
    try:
        had_old = final.exists() or final.is_symlink()
        if had_old:
            os.rename(final, old)
        try:
            os.rename(staging, final)
        except OSError:
            if had_old:
                os.rename(old, final)
            raise
    except OSError as error:
        raise DarkbpError(f"cannot put the unpacked files in place: {error.strerror or error}",
                          file=str(final)) from None
    _fsync_folder(final.parent)
    if had_old:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _failure_message(name: str, failures: list[str]) -> str:
    folders = ", ".join(str(folder) for folder in candidates(name))
    if name in ARCHIVES:
        archive = ARCHIVES[name]
        by_hand = (f"unpack {archive.file} by hand (tar xzf {archive.file}) into one of "
                   f"these folders, e.g. {cache_dir(name)}, so that it holds {archive.folder}/")
    else:
        by_hand = (f"put the four files ({', '.join(MD5[name])}) by hand into one of these "
                   f"folders, e.g. {cache_dir(name)}")
    return (f"cannot download {name}: {'; '.join(failures)}. darkbp looks for {name} in: "
            f"{folders}. Without network, {by_hand}")


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
