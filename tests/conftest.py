"""Shared test helpers: the repository's folders and a cfg writer."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CFG_DIR = ROOT / "cfg"
SHARED = ROOT.parent / "shared"


@pytest.fixture
def write_cfg(tmp_path):
    """write_cfg(text) -> path of a cfg file holding the dedented text."""
    def write(text: str, name: str = "net.cfg") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path
    return write


def data_root() -> Path | None:
    value = os.environ.get("DARKBP_DATA")
    return Path(value) if value else None
