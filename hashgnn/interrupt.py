"""Whether this process was asked to stop (SIGTERM, or Ctrl-C in the ``hashgnn`` command).

A signal raises :class:`KeyboardInterrupt` wherever the main thread happens to be, which may be
inside a third-party import or a destructor that swallows it or leaves a half-initialised module
behind. The command therefore also records the request here, and the long loops (the experiment
runner, the command's last line) consult it, so that a stop request always ends as an interruption
(exit status 130) rather than as a later, unrelated-looking error.
"""

from __future__ import annotations

import threading

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
