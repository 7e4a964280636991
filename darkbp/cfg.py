"""Darknet's cfg dialect: text -> sections of options, read the way Darknet reads them.

Darknet removes every whitespace character from a line before looking at it,
skips empty lines and lines starting with `#` or `;`, opens a section at a
line starting with `[`, and stores `key=value` lines in the last section. When
a key appears twice the first one counts. This module does exactly that and
keeps the line of every section and option, so that every later error or
warning can name the file and line. Which sections and options exist is for
the layer registry (darkbp/layers/) and the network builder to say.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from darkbp.errors import DarkbpError

NET_HEADERS = ("net", "network")

# Every section Darknet's parser knows (string_to_layer_type in pjreddie/darknet src/parser.c).
DARKNET_SECTIONS = frozenset({
    "shortcut", "crop", "cost", "detection", "region", "yolo", "iseg", "local", "deconv",
    "deconvolutional", "conv", "convolutional", "activation", "logistic", "l2norm", "net",
    "network", "crnn", "gru", "lstm", "rnn", "conn", "connected", "max", "maxpool", "reorg",
    "avg", "avgpool", "dropout", "lrn", "normalization", "batchnorm", "soft", "softmax",
    "route", "upsample",
})


@dataclass(frozen=True)
class CfgWarning:
    """Something the user should know that does not stop the run."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: warning: {self.message}"


@dataclass
class Section:
    """One `[name]` section: its canonical name and its options in file order."""

    header: str          # as written, e.g. "conv"
    file: str
    line: int
    options: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (value, line)
    notes: dict[str, CfgWarning] = field(default_factory=dict)   # key -> how its value was read

    def error(self, message: str, line: int | None = None) -> DarkbpError:
        return DarkbpError(message, file=self.file, line=line or self.line, section=self.header)

    def warnings(self, implemented: frozenset[str], ignored: frozenset[str]) -> list[CfgWarning]:
        """One warning per option not in `implemented`: those Darknet knows (`ignored`), and
        unknown ones with a hint."""
        found = list(self.notes.values())
        for key, (_, line) in self.options.items():
            if key in implemented:
                continue
            if key in ignored:
                message = f"[{self.header}] option '{key}' is known to Darknet but not used by darkbp"
            else:
                message = f"[{self.header}] unknown option '{key}' (Darknet: Unused field)"
                close = difflib.get_close_matches(key, sorted(implemented | ignored), n=1)
                if close:
                    message += f"; did you mean '{close[0]}'?"
            found.append(CfgWarning(self.file, line, message))
        return found

    # Typed readers. A missing key gives the default; a bad value is an error at its line.

    def _raw(self, key: str) -> tuple[str, int] | None:
        return self.options.get(key)

    def _number_raw(self, key: str, listed: bool = False) -> tuple[str, int] | None:
        """The text of a numeric option (or list) up to a '#', as Darknet reads it: C's atoi
        and atof stop at the first character that is not part of a number, so
        `filters=40#32` is 40 and `layers=-1,271###S4` is -1,271 in both Darknets (the
        part after '#' reads as a comment). Noted once per key, as a warning. listed: the
        value is a comma-separated list, whose entries Darknet counts by the commas."""
        raw = self._raw(key)
        if raw is None or "#" not in raw[0][1:]:      # no number before a '#': bad as it is
            return raw
        text, line = raw
        value, _, rest = text.partition("#")
        if listed and "," in rest:
            raise self.error(f"'{key}={text}': Darknet would count the ',' after the '#' as "
                             f"one more value; remove the text after '#'", line)
        self.notes.setdefault(key, CfgWarning(
            self.file, line, f"[{self.header}] '{key}={text}': Darknet reads the number before "
            f"'#' (C's atoi/atof stop there) and ignores '#{rest}'; so does darkbp"))
        return value, line

    def get_int(self, key: str, default: int, minimum: int | None = None) -> int:
        raw = self._number_raw(key)
        if raw is None:
            return default
        text, line = raw
        if not _INT.fullmatch(text):
            raise self.error(f"'{key}' must be a whole number, got '{text}'", line)
        value = _int_or_none(text)
        if value is None:
            raise self.error(f"'{key}' is out of range (Darknet reads a 32-bit int), got {text}",
                             line)
        if minimum is not None and value < minimum:
            raise self.error(f"'{key}' must be at least {minimum}, got {value}", line)
        return value

    def get_float(self, key: str, default: float, minimum: float | None = None,
              positive: bool = False) -> float:
        raw = self._number_raw(key)
        if raw is None:
            return default
        text, line = raw
        value = _to_float(text)
        if value is None:
            raise self.error(f"'{key}' must be a number, got '{text}'", line)
        if positive and not value > 0:
            raise self.error(f"'{key}' must be greater than 0, got {text}", line)
        if minimum is not None and value < minimum:
            raise self.error(f"'{key}' must be at least {minimum:g}, got {text}", line)
        return value

    def get_str(self, key: str, default: str) -> str:
        raw = self._raw(key)
        return default if raw is None else raw[0]

    def line_of(self, key: str) -> int:
        raw = self._raw(key)
        return self.line if raw is None else raw[1]

    def get_ints(self, key: str) -> tuple[int, ...]:
        return tuple(self._list(key, _int_or_raise, "whole numbers"))

    def get_floats(self, key: str) -> tuple[float, ...]:
        return tuple(self._list(key, _float_or_raise, "numbers"))

    def _list(self, key, convert, kind):
        raw = self._number_raw(key, listed=True)
        if raw is None:
            return []
        text, line = raw
        try:
            return [convert(item) for item in text.split(",")]
        except ValueError:
            raise self.error(f"'{key}' must be a comma-separated list of {kind}, got '{text}'",
                             line) from None


# Plain decimal numbers only: Python's int()/float() would also take "1_0", "nan" or "inf".
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _int_or_none(text: str) -> int | None:
    """The value of a decimal integer that fits Darknet's 32-bit int, else None."""
    if len(text) > 11 or abs(int(text)) > 2**31 - 1:
        return None
    return int(text)


def _int_or_raise(text: str) -> int:
    value = _int_or_none(text) if _INT.fullmatch(text) else None
    if value is None:
        raise ValueError(text)
    return value


def _to_float(text: str) -> float | None:
    if not _FLOAT.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _float_or_raise(text: str) -> float:
    value = _to_float(text)
    if value is None:
        raise ValueError(text)
    return value


def read_cfg_text(text: str, file: str) -> list[Section]:
    """Split cfg text into sections, Darknet's way. The first section must be [net]/[network]."""
    sections: list[Section] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = "".join(raw_line.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            sections.append(_open_section(line, file, number, first=not sections))
            continue
        if not sections:
            raise DarkbpError(f"option '{line}' is outside any section (a cfg starts with [net])",
                              file=file, line=number)
        key, sep, value = line.partition("=")
        section = sections[-1]
        if not sep or not key:
            raise section.error(f"cannot parse '{line}': expected key=value", number)
        if not value:
            raise section.error(f"'{key}' has no value", number)
        section.options.setdefault(key, (value, number))  # Darknet: the first one counts
    if not sections:
        raise DarkbpError("empty cfg: no [net] section and no layers", file=file)
    return sections


def _open_section(line: str, file: str, number: int, first: bool) -> Section:
    if not line.endswith("]") or len(line) < 3:
        raise DarkbpError(f"malformed section header '{line}': expected [name]",
                          file=file, line=number)
    header = line[1:-1]
    if first and header not in NET_HEADERS:
        raise DarkbpError(f"the first section must be [net] or [network], found [{header}]",
                          file=file, line=number)
    if not first and header in NET_HEADERS:
        raise DarkbpError(f"[{header}] may only be the first section", file=file, line=number)
    return Section(header=header, file=file, line=number)


def read_cfg(path: str | Path) -> list[Section]:
    """Read a cfg file; a missing, unreadable, binary or empty file is a DarkbpError."""
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DarkbpError("no such file", file=file) from None
    except IsADirectoryError:
        raise DarkbpError("is a folder, not a cfg file", file=file) from None
    except OSError as error:
        raise DarkbpError(f"cannot read: {error.strerror}", file=file) from None
    if b"\0" in data:
        raise DarkbpError("is a binary file, not a cfg text file", file=file)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DarkbpError("is not UTF-8 text (is it a cfg file?)", file=file, line=line) from None
    return read_cfg_text(text, file)
