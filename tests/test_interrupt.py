"""A stop request (Ctrl-C, SIGTERM) that lands inside an atomic write: delivered after it, no debris.

The signal is sent from inside the write itself (from the call that creates the temporary file, or
from the fsync before the rename), so each test hits the window it names on every run, rather
than by the timing luck of an outside ``kill``.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hashgnn import interrupt
from hashgnn.io import atomic_write


@pytest.fixture
def handlers() -> Iterator[None]:
    """Python's own Ctrl-C handler, and a SIGTERM handler that raises as the ``hashgnn`` command's does."""

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, terminate)
    yield
    for s, h in before.items():
        signal.signal(s, h)


def _debris(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("where", ["after_mkstemp", "before_rename"])
def test_a_stop_inside_an_atomic_write_is_delivered_after_it_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handlers: None, signum: int, where: str
) -> None:
    target = tmp_path / "experiment.json"
    target.write_text("old")
    real_mkstemp, real_fsync = tempfile.mkstemp, os.fsync

    def mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        made = real_mkstemp(*args, **kwargs)  # type: ignore[call-overload]
        if where == "after_mkstemp":
            os.kill(os.getpid(), signum)  # its handler runs at the next statement: before any try
        return made

    def fsync(fd: int) -> None:
        real_fsync(fd)
        if where == "before_rename":
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, "new and whole")
    monkeypatch.undo()
    # The stop was not lost, the write it interrupted finished, and nothing else is in the folder.
    assert target.read_text() == "new and whole"
    assert _debris(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiment.json"]


def _kill(signum: int) -> None:
    os.kill(os.getpid(), signum)  # the handler runs when this returns, at the caller's next statement


def _nested_stops(ran: list[str]) -> None:
    with interrupt.deferred():
        with interrupt.deferred():
            _kill(signal.SIGINT)
            _kill(signal.SIGTERM)
            ran.append("inner")
        ran.append("outer")  # the inner block hands its stop to the outer one, which holds it
    ran.append("never")


def test_deferred_delivers_one_stop_after_the_block_and_nests(handlers: None) -> None:
    ran: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        _nested_stops(ran)
    assert ran == ["inner", "outer"]
    # Both handlers are back in force afterwards.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        _kill(signal.SIGTERM)


def test_deferred_keeps_an_ignored_signal_ignored() -> None:
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with interrupt.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


def test_an_atomic_write_outside_the_main_thread_works(tmp_path: Path) -> None:
    # signal.signal may not be called there; the write must neither fail nor touch the handlers.
    errors: list[BaseException] = []
    before = signal.getsignal(signal.SIGINT)

    def write() -> None:
        try:
            atomic_write(tmp_path / "a.json", "{}")
        except BaseException as e:  # reported to the main thread
            errors.append(e)

    t = threading.Thread(target=write)
    t.start()
    t.join()
    assert errors == []
    assert (tmp_path / "a.json").read_text() == "{}"
    assert signal.getsignal(signal.SIGINT) is before
