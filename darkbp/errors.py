"""The one exception type for bad input, caught once at the CLI boundary."""

from __future__ import annotations


class DarkbpError(Exception):
    """Bad input the user can act on.

    Carries where the problem is (file, line, section) so the CLI can print one
    clear line and exit with code 2, without a traceback.
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None,
                 line: int | None = None, section: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.section = section

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        if self.section is not None:
            where += f"[{self.section}]: "
        return where + self.message


class RunFailed(DarkbpError):
    """A run that started well but could not finish (e.g. the loss became NaN): exit 1."""

    exit_code = 1
