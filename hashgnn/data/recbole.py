"""Reader of RecBole atomic files: ``DATA.inter`` (interactions), ``DATA.user`` / ``DATA.item`` (attributes).

An atomic file is tab-separated UTF-8 with a typed header, ``name:type`` per column, the type one of
``token``, ``token_seq``, ``float``, ``float_seq`` (RecBole's docs, "Atomic Files")::

    user_id:token   item_id:token   rating:float    timestamp:float
    196             242             3               881250949

``DATA.inter`` is read as an interaction table whose columns are found by their names: ``user_id``,
``item_id``, and, when present, ``rating`` and ``timestamp`` (``--user-col`` etc. name others; a type
suffix there is accepted and ignored). Every row is an interaction (``--min-rating`` keeps rows with a
rating at or above it); the split is made per user like any table's (``--split``). When
``DATA.user`` / ``DATA.item`` lie beside it, their ``token``, ``token_seq`` and ``float`` columns
are the nodes' attributes (:mod:`hashgnn.data.features`).

Reading is pandas' C parser (no Python loop per row). Errors name the file, the line and the column.
"""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hashgnn.data.features import FEATURE_TYPES
from hashgnn.data.files import read_bytes
from hashgnn.errors import DataError

INTER_SUFFIX = ".inter"
ATOMIC_SUFFIXES = (".inter", ".user", ".item")
_FIELD = re.compile(r"^(?P<name>[^:\s][^:]*):(?P<type>[A-Za-z_]+)$")


@dataclass
class AtomicFile:
    """The columns of an atomic file as strings, under their bare names, and their declared types."""

    path: Path
    frame: pd.DataFrame
    types: dict[str, str]

    def line_of(self, row: int) -> int:
        """The 1-based file line of 0-based data row ``row`` (blank lines are skipped by the parser)."""
        from hashgnn.data.table import _row_line

        return _row_line(self.path, row, True, "\t") or row + 2


def is_atomic(path: Path) -> bool:
    """Whether ``path`` names a RecBole atomic file by its suffix."""
    return path.suffix.lower() in ATOMIC_SUFFIXES


def bare(name: str | None) -> str | None:
    """``user_id:token`` -> ``user_id`` (a column option may be given with its type suffix)."""
    if name is None:
        return None
    m = _FIELD.match(name)
    return m.group("name") if m and m.group("type") in FEATURE_TYPES else name


def read_header(path: Path, first_line: str) -> dict[str, str]:
    """The ``name -> type`` of a typed header line; a :class:`DataError` names the bad column."""
    fields = first_line.rstrip("\r\n").split("\t")
    types: dict[str, str] = {}
    for k, field in enumerate(fields, start=1):
        m = _FIELD.match(field.strip())
        if not m or m.group("type") not in FEATURE_TYPES:
            raise DataError(
                f"column {k} of the header is {field[:60]!r}; a RecBole atomic file's header names each "
                f"column as name:type with type one of {', '.join(FEATURE_TYPES)} (e.g. user_id:token), "
                "separated by tabs",
                path,
                1,
            )
        name = m.group("name").strip()
        if name in types:
            raise DataError(f"column {k} of the header repeats the name {name!r}", path, 1)
        types[name] = m.group("type")
    return types


def read_atomic(path: str | Path) -> AtomicFile:
    """Read one atomic file; ``float`` columns are checked to be numbers (empty: missing)."""
    path = Path(path).expanduser()
    head = read_bytes(path, limit=1 << 16, expected="a RecBole atomic file")
    if b"\x00" in head or head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError("is not a UTF-8 text file (binary data or UTF-16); expected a RecBole atomic file", path)
    first = head.split(b"\n", 1)[0]
    try:
        first_line = first.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"the header is not UTF-8 text (undecodable byte at offset {e.start})", path, 1) from None
    if not first_line.strip():
        raise DataError("is empty or starts with a blank line; expected a typed header (user_id:token ...)", path, 1)
    types = read_header(path, first_line)
    names = list(types)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                sep="\t",
                header=0,
                names=names,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                quoting=csv.QUOTE_NONE,
                encoding="utf-8-sig",
                index_col=False,
                engine="c",
            )
    except pd.errors.ParserWarning:
        raise DataError(f"a row has more fields than the {len(names)} columns of the header", path) from None
    except pd.errors.ParserError as e:
        m = re.search(r"line (\d+)", str(e))
        raise DataError(
            f"cannot be parsed as tab-separated columns ({str(e).strip()[:200]})", path, int(m.group(1)) if m else None
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError("is empty; expected a typed header line, then one row per line", path) from None
    except UnicodeDecodeError as e:
        raise DataError(f"is not a UTF-8 text file (undecodable byte at offset {e.start})", path) from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot be read ({type(e).__name__}: {e})", path) from None
    atomic = AtomicFile(path, frame, types)
    for name, kind in types.items():
        col = frame[name]
        if kind == "float":
            s = col.astype(str).str.strip()
            bad = np.flatnonzero((pd.to_numeric(s, errors="coerce").isna() & (s != "")).to_numpy())
            if len(bad):
                k = int(bad[0])
                raise DataError(
                    f"column {name!r} is declared float but holds {s.iloc[k][:40]!r}", path, atomic.line_of(k)
                )
        elif kind == "float_seq":
            continue
    return atomic


def siblings(inter: Path) -> dict[str, Path]:
    """The ``.user`` / ``.item`` files beside ``DATA.inter`` that exist (side -> path)."""
    out = {}
    for side in ("user", "item"):
        p = inter.with_suffix(f".{side}")
        if p.is_file():
            out[side] = p
    return out


__all__ = ["ATOMIC_SUFFIXES", "INTER_SUFFIX", "AtomicFile", "bare", "is_atomic", "read_atomic", "siblings"]
