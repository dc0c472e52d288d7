"""Whether this process was asked to stop (SIGTERM, or Ctrl-C in the ``hashgnn`` command).

A signal raises :class:`KeyboardInterrupt` wherever the main thread happens to be, which may be
inside a third-party import or a destructor that swallows it or leaves a half-initialised module
behind. The command therefore also records the request here, and the long loops (the experiment
runner, the command's last line) consult it, so that a stop request always ends as an interruption
(exit status 130) rather than as a later, unrelated-looking error.

:func:`deferred` holds such a request back for the few statements that must not be cut in two (an
atomic write between its temporary file and the rename), and delivers it right after them.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_requested = threading.Event()


def request() -> None:
    """Record that the process was asked to stop."""
    _requested.set()


def requested() -> bool:
    """True once :func:`request` was called in this process."""
    return _requested.is_set()


def check() -> None:
    """Raise :class:`KeyboardInterrupt` if a stop was requested; call it between units of work."""
    if _requested.is_set():
        raise KeyboardInterrupt


_HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs; deliver the first one that came, after it.

    A signal's handler runs between any two statements of the main thread, so an interrupt can land
    after a temporary file was created and before the ``try`` that removes it, or inside that
    cleanup. Inside this block the signal is only noted; on leaving, the handlers in force before
    are restored and the signal is passed to its own handler (which raises KeyboardInterrupt for
    Ctrl-C and, in the ``hashgnn`` command, for SIGTERM) or, under the default action, re-sent.
    Blocks nest. Outside the main thread it does nothing: Python runs signal handlers only there.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, FrameType | None]] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        pending.append((signum, frame))

    previous = {s: signal.signal(s, hold) for s in _HELD}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if pending:
            signum, frame = pending[0]
            handler = previous[signal.Signals(signum)]
            if callable(handler):
                handler(signum, frame)
            elif handler != signal.SIG_IGN:  # SIG_DFL, or a handler installed outside Python
                os.kill(os.getpid(), signum)
