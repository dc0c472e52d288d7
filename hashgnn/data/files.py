"""Reading a user's file with errors that name it."""

from __future__ import annotations

from pathlib import Path

from hashgnn.errors import DataError


def read_bytes(path: Path, limit: int | None = None, expected: str = "a file") -> bytes:
    """The bytes of ``path`` (at most ``limit``), with a :class:`DataError` for a missing or unreadable file."""
    try:
        with open(path, "rb") as f:
            return f.read() if limit is None else f.read(limit)
    except FileNotFoundError:
        raise DataError("no such file", path) from None
    except IsADirectoryError:
        raise DataError(f"is a folder, expected {expected}", path) from None
    except OSError as e:
        raise DataError(f"cannot be read ({e.strerror or e})", path) from None
