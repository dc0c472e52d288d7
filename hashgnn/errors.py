"""User-facing errors.

Every error a user can cause (bad input file, unknown data set, wrong code width, ...) is raised as a
:class:`HashgnnError`. The command-line interface prints its message as one paragraph and exits with
status 2, without a Python traceback; library users can catch it like any exception.
"""

from __future__ import annotations


class HashgnnError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do."""


class DataError(HashgnnError):
    """Bad or missing interaction data. The message names the file and, where it applies, the line."""

    def __init__(self, message: str, path: object | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.line = line


class ChecksumError(DataError):
    """A downloaded or cached file does not match its recorded SHA-256."""


class ConfigError(HashgnnError):
    """An invalid configuration value or combination of options."""


class DataWarning(UserWarning):
    """Something in the input data was dropped (duplicates, test users/items unseen in train).

    Issued with :func:`warnings.warn`; the message names the file and says how many. The CLI prints it
    as one ``warning:`` line on stderr.
    """
