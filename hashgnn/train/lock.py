"""One process at a time per run folder: an advisory ``flock`` beside the folder.

``hashgnn train --out DIR`` and ``--resume DIR`` hold ``.DIR.hashgnn-lock`` (in DIR's parent, so
that the lock outlives ``--overwrite`` moving the old run aside) for as long as they write DIR. The
lock is the kernel's ``flock`` on that file, not the file's existence: the kernel releases it when
the holder exits, however it exits (SIGKILL, power loss of a network client aside), so a killed run
never leaves its folder stuck. The file holds the holder's pid and command for the refusal message,
and is removed on release; a process that opened the file just before it was removed notices that
the path now names another file (or none) and tries again.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hashgnn.errors import HashgnnError

SUFFIX = ".hashgnn-lock"


def lock_path(folder: Path) -> Path:
    """The lock file of run folder ``folder``: a hidden file beside it."""
    folder = Path(os.path.abspath(folder))
    return folder.with_name(f".{folder.name}{SUFFIX}")


class RunLock:
    """An exclusive, non-blocking lock on a run folder; a context manager.

    Raises :class:`~hashgnn.errors.HashgnnError` at once when another process holds it (naming that
    process), or when the lock file cannot be created (naming the folder and the reason).
    """

    def __init__(self, folder: str | Path, what: str = "--out") -> None:
        self.folder = Path(folder)
        self.path = lock_path(self.folder)
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise; see the class docstring."""
        for _ in range(100):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise HashgnnError(
                    f"{self.what} {self.folder}: cannot create the lock file {self.path} "
                    f"({e.strerror or e}); the folder's parent must be writable"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_holder(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise HashgnnError(
                        f"{self.what} {self.folder}: the run folder is in use by another hashgnn process"
                        f"{_describe(holder)}; wait for it to finish, stop it, or pick another folder"
                    ) from None
                raise HashgnnError(f"{self.path}: cannot lock ({e.strerror or e})") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file between our open and our lock
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            info = {"pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": sys.argv[:6]}
            os.write(fd, json.dumps(info).encode())
            self.fd = fd
            return self
        raise HashgnnError(f"{self.path}: could not take the lock (it kept being replaced)")

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self.fd is None:
            return
        # Removed while still held, so no other process can lock the old file after we let go.
        try:
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return ""
    text = f" (pid {holder['pid']}"
    if holder.get("since"):
        text += f", since {holder['since']}"
    return text + ")"
