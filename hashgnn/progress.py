"""The one progress display of the project: a tqdm bar on a terminal, plain lines in a log.

Every long loop (training batches, evaluation, downloads, ``recommend --all``) asks
:func:`progress_bar` for its bar. When stderr is a terminal that is a ``tqdm`` bar; when it is a file
or a pipe (a log, CI, ``make demo > log``) a carriage-return bar would write thousands of
overwritten updates into the log, so the bar becomes :class:`LineProgress`, which writes one plain
line every ``HASHGNN_PROGRESS_SECONDS`` seconds (default 30) and one when the loop ends::

    epoch 3: 120/480 batch (25%), 8.1 batch/s, ETA 44 s, loss=0.3121 beta=1.00

``enabled=False`` (``--quiet``) silences both. ``HASHGNN_PROGRESS=bar`` or ``=lines`` forces one
kind whatever stderr is.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, TextIO

ENV_SECONDS = "HASHGNN_PROGRESS_SECONDS"
ENV_KIND = "HASHGNN_PROGRESS"
DEFAULT_SECONDS = 30.0
# A loop shorter than this writes no closing line in a log (a fetch from the cache, a tiny eval).
MIN_CLOSING_SECONDS = 1.0


def _interval() -> float:
    raw = os.environ.get(ENV_SECONDS, "")
    try:
        value = float(raw) if raw else DEFAULT_SECONDS
    except ValueError:
        return DEFAULT_SECONDS
    return value if value >= 0 else DEFAULT_SECONDS


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def _fmt_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _fmt_amount(n: float, unit: str, scale: bool) -> str:
    if not scale:
        return f"{n:,.0f}"
    for prefix in ("", "Ki", "Mi", "Gi", "Ti"):
        if abs(n) < 1024 or prefix == "Ti":
            return f"{n:.0f} {prefix}{unit}" if not prefix else f"{n:.1f} {prefix}{unit}"
        n /= 1024
    raise AssertionError("unreachable")


class LineProgress:
    """tqdm's interface (``update``, ``set_postfix``, ``close``, context manager) as timed log lines."""

    def __init__(
        self,
        total: int | float | None,
        desc: str,
        unit: str,
        file: TextIO,
        interval: float,
        unit_scale: bool = False,
    ) -> None:
        self.total, self.desc, self.unit, self.file = total, desc, unit, file
        self.interval, self.unit_scale = interval, unit_scale
        self.n: float = 0
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """Values shown at the end of each line (``loss=0.31``)."""
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: float = 1) -> None:
        """Count ``n`` more units; write a line when ``interval`` seconds passed since the last."""
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._write(now, done=False)

    def line(self, now: float, done: bool) -> str:
        """The text of one progress line."""
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        unit_rate = f"{_fmt_amount(rate, self.unit, True)}/s" if self.unit_scale else f"{rate:,.1f} {self.unit}/s"
        amount = _fmt_amount(self.n, self.unit, self.unit_scale)
        if self.total:
            of = _fmt_amount(self.total, self.unit, self.unit_scale)
            head = f"{amount}/{of}" + ("" if self.unit_scale else f" {self.unit}")
            head += f" ({100.0 * self.n / self.total:.0f}%)"
        else:
            head = amount + ("" if self.unit_scale else f" {self.unit}")
        parts = [f"{self.desc}: {head}", unit_rate]
        if done:
            parts.append(f"done in {_fmt_seconds(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {_fmt_seconds(max(self.total - self.n, 0) / rate)}")
        text = ", ".join(parts)
        return f"{text}, {self.postfix}" if self.postfix else text

    def _write(self, now: float, done: bool) -> None:
        # A closed or full log must not stop the work it reports on.
        with contextlib.suppress(OSError, ValueError):
            print(self.line(now, done), file=self.file, flush=True)

    def close(self) -> None:
        """Write the closing line (when the loop took at least a second) once."""
        if self.closed:
            return
        self.closed = True
        now = time.monotonic()
        if now - self.start >= min(MIN_CLOSING_SECONDS, self.interval):
            self._write(now, done=True)


def progress_bar(
    total: int | float | None,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
    *,
    unit_scale: bool = False,
    leave: bool = False,
    file: TextIO | None = None,
) -> Any:
    """A progress display for a loop of ``total`` units: a tqdm bar, timed lines, or nothing.

    Returns an object with tqdm's ``update(n)``, ``set_postfix(**values)``, ``close()`` and the
    context manager protocol (a disabled tqdm when ``enabled`` is false).
    """
    from tqdm.auto import tqdm

    stream = file if file is not None else sys.stderr
    kind = os.environ.get(ENV_KIND, "").strip().lower()
    if not enabled:
        return tqdm(total=total, disable=True)
    if kind == "lines" or (kind != "bar" and not _is_terminal(stream)):
        return LineProgress(total, desc, unit, stream, _interval(), unit_scale=unit_scale)
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        unit_divisor=1024 if unit_scale else 1000,
        file=stream,
        leave=leave,
        dynamic_ncols=True,
    )


__all__ = ["LineProgress", "progress_bar"]
