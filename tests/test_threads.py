"""BLAS threads set at run time, read back from the library's own getter (no timing)."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from darkbp import threads
from darkbp.cli.options import threads_option
from darkbp.errors import DarkbpError


@pytest.fixture(autouse=True)
def restore_threads():
    env = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    before = threads.get_threads()
    yield
    threads.set_threads(before)
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.mark.parametrize("n", [1, 2, 1, 3])
def test_set_then_read_back_from_the_library(n):
    threads.set_threads(n)
    assert threads.get_threads() == n
    assert os.environ["OMP_NUM_THREADS"] == str(n)
    assert os.environ["OPENBLAS_NUM_THREADS"] == str(n)


def test_child_processes_start_with_the_same_count():
    threads.set_threads(1)
    child = subprocess.run(
        [sys.executable, "-c", "from darkbp.threads import get_threads; print(get_threads())"],
        capture_output=True, text=True, check=True)
    assert child.stdout == "1\n"


def test_controls_the_openblas_this_process_has_loaded():
    path = threads.blas_library()
    assert "openblas" in path.lower()
    with open("/proc/self/maps") as maps:
        assert path in maps.read()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_rejects_a_count_that_is_not_a_positive_integer(bad):
    with pytest.raises(ValueError):
        threads.set_threads(bad)


def test_more_threads_than_the_library_was_built_for_is_an_error():
    with pytest.raises(DarkbpError, match="asked for 100000 BLAS threads"):
        threads.set_threads(100_000)


def test_no_supported_blas_is_a_clear_error(monkeypatch):
    # Real libraries of this process that are not OpenBLAS (numpy's extension modules are
    # left out: symbol look-up through them reaches the OpenBLAS they link to), and one
    # that is not loaded.
    others = [p for p in threads._loaded_libraries()
              if "openblas" not in p.lower() and "numpy" not in p][:3]
    assert others
    with monkeypatch.context() as patch:
        patch.setattr(threads, "_candidate_paths", lambda: others + ["/nowhere/libblas.so"])
        threads._blas.cache_clear()
        try:
            with pytest.raises(DarkbpError, match="can only control OpenBLAS") as error:
                threads.set_threads(1)
        finally:
            threads._blas.cache_clear()
    assert others[0] in str(error.value) and "OMP_NUM_THREADS" in str(error.value)
    assert "openblas" in threads.blas_library().lower()   # found again once unpatched


def _command():
    @click.command()
    @threads_option
    def probe(threads: int) -> None:
        click.echo(f"threads={threads}")
    return probe


@pytest.mark.parametrize("n", [1, 2])
def test_option_passes_the_count(n):
    result = CliRunner().invoke(_command(), ["--threads", str(n)])
    assert result.exit_code == 0, result.output
    assert result.output == f"threads={n}\n"


def test_option_defaults_to_the_cores_this_process_may_use():
    result = CliRunner().invoke(_command(), [])
    assert result.output == f"threads={len(os.sched_getaffinity(0))}\n"


def test_option_rejects_zero():
    result = CliRunner().invoke(_command(), ["--threads", "0"])
    assert result.exit_code == 2
    assert "--threads" in result.output
