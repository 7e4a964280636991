"""Atomic writes: the old file survives exceptions and SIGKILL; unwritable places are errors."""

import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from darkbp.atomic import atomic_open, atomic_write, ensure_writable_dir
from darkbp.errors import DarkbpError


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "a.weights"
    target.write_bytes(b"old")
    with atomic_open(target) as f:
        f.write(b"new content")
    assert target.read_bytes() == b"new content"
    assert leftovers(tmp_path) == []


def test_new_file_gets_an_ordinary_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "x", lambda f: f.write(b"1"))
    finally:
        os.umask(mask)
    assert (tmp_path / "x").stat().st_mode & 0o777 == 0o644


def test_exception_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.weights"
    target.write_bytes(b"old")
    with pytest.raises(ZeroDivisionError):
        with atomic_open(target) as f:
            f.write(b"half of the new")
            1 / 0
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_exception_leaves_no_file_where_there_was_none(tmp_path):
    def fail(f):
        f.write(b"partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(tmp_path / "new.weights", fail)
    assert list(tmp_path.iterdir()) == []


def test_sigkill_during_a_large_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "last.weights"
    old = bytes(range(256)) * 4096
    target.write_bytes(old)
    child = textwrap.dedent(f"""
        import sys, time
        from darkbp.atomic import atomic_open
        with atomic_open({str(target)!r}) as f:
            for _ in range(16):
                f.write(b"N" * (1 << 20))
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
            f.write(b"never reached")
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"writing\n"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
    assert target.read_bytes() == old
    # the killed writer's temporary file is left beside it, hidden, and never read as the target
    (tmp,) = leftovers(tmp_path)
    assert tmp.startswith(".last.weights.") and tmp.endswith(".tmp")


@pytest.mark.parametrize("where", ["under_a_file", "/sys", "/proc"])
def test_unwritable_place_is_a_darkbp_error(tmp_path, where):
    if where == "under_a_file":
        (tmp_path / "plain").write_text("a regular file")
        target = tmp_path / "plain" / "x.weights"
    else:
        target = os.path.join(where, "darkbp-test.weights")
    with pytest.raises(DarkbpError, match=re.escape(f"cannot write {target}")):
        atomic_write(target, lambda f: f.write(b"x"))


def test_ensure_writable_dir_creates_nested_folders(tmp_path):
    out = ensure_writable_dir(tmp_path / "backup" / "run1")
    assert out == tmp_path / "backup" / "run1"
    assert out.is_dir()
    assert list(out.iterdir()) == []  # the probe file is gone
    assert ensure_writable_dir(str(out)) == out  # existing folder: fine


def test_ensure_writable_dir_under_a_file(tmp_path):
    (tmp_path / "plain").write_text("x")
    folder = tmp_path / "plain" / "out"
    with pytest.raises(DarkbpError, match=re.escape(f"cannot create the folder {folder}")):
        ensure_writable_dir(folder)


def test_ensure_writable_dir_on_a_file(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(DarkbpError, match="is a file, not a folder"):
        ensure_writable_dir(tmp_path / "plain")


def test_ensure_writable_dir_read_only_folder():
    # /sys refuses new files even to root
    with pytest.raises(DarkbpError, match="cannot write into the folder /sys"):
        ensure_writable_dir("/sys")
