"""Reader of the one-line-per-user format: ``user item item ...`` with 0-based integer ids.

This is the format of gowalla, yelp2018, amazon-book (LightGCN / NGCF), ml-1m and music_toy
(BGCH / BiGeaR): one line per user, the user id first, then the ids of the items the user interacted
with, separated by spaces. A line may list a user with no items; blank lines are ignored; Windows line
endings and a UTF-8 byte-order mark are accepted.

The reader is vectorised over the whole file (no Python loop per token or line): the bytes are
validated with one regular expression, token boundaries and line numbers come from numpy over the
byte array, and the numbers are parsed in one call. Line numbers are computed only to report errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashgnn.arrays import unique_ints
from hashgnn.data.files import read_bytes
from hashgnn.errors import DataError

# Ids index the rows and columns of the interaction matrix (the format counts users and items as
# max id + 1), so a stray huge id would size every table after it. Above this many ids, or 100 times
# more ids than distinct ones, the file is refused rather than allocated.
MAX_ID_SPACE = 50_000_000
_SPARSE_FACTOR = 100
_SMALL_ID_SPACE = 1_000_000  # always fine, whatever the number of distinct ids

_BOM = b"\xef\xbb\xbf"
_NOT_ALLOWED = re.compile(rb"[^0-9 \t\n]")
_MAX_DIGITS = 18  # int64 holds every 18-digit number
_FORMAT_HINT = "expected one line per user, `user item item ...`, with integer ids separated by spaces"


@dataclass
class UserLines:
    """The interactions of one one-line-per-user file.

    ``users`` / ``items`` hold one entry per interaction (file order), ``lines`` its 1-based line
    number; ``listed_users`` every user id that starts a line (including users with no items).
    """

    path: Path
    users: np.ndarray
    items: np.ndarray
    lines: np.ndarray
    listed_users: np.ndarray


def read_user_lines(path: str | Path) -> UserLines:
    """Read one file of the one-line-per-user format; a :class:`DataError` names file and line."""
    path = Path(path)
    data = read_bytes(path)
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    elif data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError("is UTF-16 text; save it as UTF-8 (or plain ASCII) and try again", path)
    if b"\r" in data:
        # A Windows line end counts as one line end, so line numbers stay those an editor shows.
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    bad = _NOT_ALLOWED.search(data)
    if bad is not None:
        _raise_bad_byte(path, data, bad.start())

    buf = np.frombuffer(data, dtype=np.uint8)
    is_digit = buf >= ord("0")  # only digits, blanks and newlines remain
    edges = np.diff(is_digit.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    if len(starts) == 0:
        raise DataError(("is empty" if not data else "has only blank lines") + "; " + _FORMAT_HINT, path)
    newlines = np.flatnonzero(buf == ord("\n"))
    token_line = np.searchsorted(newlines, starts)  # 0-based line of each token

    too_long = np.flatnonzero(ends - starts > _MAX_DIGITS)
    if len(too_long):
        k = int(too_long[0])
        raise DataError(
            f"id {data[starts[k] : ends[k]].decode()[:40]} is far too large for an index; " + _huge_id_advice(),
            path,
            int(token_line[k]) + 1,
        )

    values = np.fromstring(data, dtype=np.int64, sep=" ")  # whitespace-separated; validated above
    if len(values) != len(starts):  # pragma: no cover - defensive: never seen after validation
        values = np.array(data.split(), dtype=np.bytes_).astype(np.int64)

    first = np.ones(len(starts), dtype=bool)
    first[1:] = token_line[1:] != token_line[:-1]
    line_user = values[first]
    user_of_token = line_user[np.cumsum(first) - 1]
    is_item = ~first
    lines = UserLines(
        path=path,
        users=user_of_token[is_item],
        items=values[is_item],
        lines=token_line[is_item] + 1,
        listed_users=line_user,
    )
    _check_id_space(path, line_user, token_line[first] + 1, "user")
    _check_id_space(path, lines.items, lines.lines, "item")
    return lines


def _check_id_space(path: Path, ids: np.ndarray, lines: np.ndarray, kind: str) -> None:
    """Refuse ids whose max + 1 would make an absurdly large (or absurdly sparse) index space."""
    if len(ids) == 0:
        return
    top = int(ids.max())
    if top < _SMALL_ID_SPACE:
        return
    distinct = len(unique_ints(ids))
    limit = min(MAX_ID_SPACE, max(_SMALL_ID_SPACE, _SPARSE_FACTOR * distinct))
    if top >= limit:
        k = int(np.flatnonzero(ids >= limit)[0])
        raise DataError(
            f"{kind} id {int(ids[k])} is too large: this format indexes {kind}s by id (max id + 1 = "
            f"{top + 1} {kind}s for {distinct} distinct ids); " + _huge_id_advice(),
            path,
            int(lines[k]),
        )


def _huge_id_advice() -> str:
    return (
        f"ids must be 0-based indices below {MAX_ID_SPACE} and not much larger than the number of "
        "distinct ids. For arbitrary ids use a table file (.csv/.tsv/.parquet with user and item "
        "columns), which maps ids to contiguous indices."
    )


def _raise_bad_byte(path: Path, data: bytes, pos: int) -> None:
    """Explain the first byte that cannot be part of the format (only on the error path)."""
    line = data.count(b"\n", 0, pos) + 1
    if b"\x00" in data or not _is_utf8(data):
        raise DataError(f"is not a text file (binary or non-UTF-8 data at byte {pos}); " + _FORMAT_HINT, path, line)
    line_start = data.rfind(b"\n", 0, pos) + 1
    line_end = data.find(b"\n", pos)
    text = data[line_start : len(data) if line_end < 0 else line_end].decode("utf-8")
    col = len(data[line_start:pos].decode("utf-8"))
    token = _token_at(text, col)
    shown = token if len(token) <= 40 else token[:37] + "..."
    if re.fullmatch(r"-\d+", token):
        what = f"negative id {shown}; ids are non-negative integers"
    elif re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?", token):
        what = f"fractional id {shown}; ids are whole numbers written without a decimal point"
    else:
        what = f"non-integer id {shown!r}"
    raise DataError(f"{what} ({_FORMAT_HINT})", path, line)


def _token_at(text: str, col: int) -> str:
    """The whitespace-delimited token of ``text`` covering column ``col`` (or the character there)."""
    for m in re.finditer(r"\S+", text):
        if m.start() <= col < m.end():
            return m.group()
    return text[col : col + 1]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
