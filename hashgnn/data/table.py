"""Reader of interaction tables: CSV, TSV or Parquet with named user and item columns.

Ids may be any hashable values (strings or integers); they are kept as read and mapped to
contiguous indices later. An optional rating column (with a threshold for "positive") and an
optional time column are read and validated. Errors name the file and the line (CSV/TSV) or row
(Parquet); line numbers are worked out only on the error path.

Speed: a CSV/TSV table whose user and item ids are all integers is read by pyarrow's multi-threaded
CSV reader straight into int64 columns (about a second per 10^7 rows here, no Python object per
row); any other table, or one the fast reader refuses (empty cells, ragged rows, a byte-order mark),
is read by pandas as text, which is slower and is where every error message comes from.
"""

from __future__ import annotations

import csv
import lzma
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hashgnn.data.files import read_bytes
from hashgnn.errors import ConfigError, DataError

TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zip")
_LIKELY_SEPS = [",", "\t", ";", "|", " "]
_SEP_NAMES = {",": "','", "\t": "'\\t' (tab)", ";": "';'", "|": "'|'", " ": "' ' (space)"}
_INT_RE = re.compile(r"[+-]?\d{1,18}")
_EMPTY_ID = "empty cell in id column {!r} (every row needs a user and an item id)"


@dataclass
class TableRows:
    """The rows of a table that pass the rating threshold.

    ``users`` / ``items`` hold the ids as read (int64 when every id is an integer, else strings);
    ``time`` the timestamps (float64 or int64 nanoseconds) or None; ``rows`` the 0-based data-row
    position of each kept row in the file (for error messages and row order).
    """

    path: Path
    users: np.ndarray
    items: np.ndarray
    time: np.ndarray | None
    rows: np.ndarray
    n_read: int
    n_below_min_rating: int
    header: bool
    sep: str | None

    def line_of(self, k: int) -> int | None:
        """The 1-based file line of kept row ``k`` (None for Parquet); only for error messages."""
        return _row_line(self.path, int(self.rows[k]), self.header, self.sep)


def table_kind(path: Path) -> str | None:
    """``"parquet"``, ``"text"`` (CSV/TSV, possibly compressed) or None for other files."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    if not suffixes:
        return None
    if suffixes[-1] in PARQUET_SUFFIXES:
        return "parquet"
    if suffixes[-1] in TEXT_SUFFIXES:
        return "text"
    return None


def parse_sep(sep: str | None) -> str | None:
    """Accept the spellings of a tab a shell user types (``\\t``, ``tab``)."""
    if sep is None:
        return None
    if sep in ("\\t", "tab", "TAB"):
        return "\t"
    if sep in ("space",):
        return " "
    if sep == "":
        raise ConfigError("--sep: an empty separator; give the character between columns, e.g. ',' or '\\t'")
    return sep


def read_table(
    path: str | Path,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str | None = None,
    min_rating: float | None = None,
    time_col: str | None = None,
    sep: str | None = None,
    names: list[str] | None = None,
) -> TableRows:
    """Read and validate an interaction table.

    ``sep`` defaults to the extension's (``.csv`` comma, ``.tsv`` tab). ``names`` reads a file without
    a header line under these column names (lastfm's raw files, for instance).
    """
    path = Path(path)
    sep = parse_sep(sep)
    if min_rating is not None and rating_col is None:
        raise ConfigError("--min-rating needs --rating-col (the column the threshold applies to)")
    wanted = [c for c in (user_col, item_col, rating_col, time_col) if c is not None]
    if len(set(wanted)) != len(wanted):
        raise ConfigError(f"the user, item, rating and time columns must differ; got {wanted}")
    kind = table_kind(path)
    if kind == "parquet":
        df = _read_parquet(path, wanted)
        header = True
    else:
        if sep is None:
            base = path.name.lower()
            for c in COMPRESSION_SUFFIXES:
                base = base.removesuffix(c)
            sep = TEXT_SUFFIXES.get(Path(base).suffix, ",")
        df = _read_text_fast(path, sep, names, wanted, user_col, item_col, rating_col)
        if df is None:
            df = _read_text(path, sep, names)
        header = names is None
        _check_columns(path, df, wanted, sep, header)
    rows = TableRows(
        path,
        np.empty(0),
        np.empty(0),
        None,
        np.empty(0, np.int64),
        len(df),
        0,
        header,
        sep if kind != "parquet" else None,
    )
    if len(df) == 0:
        raise DataError(
            ("has a header line but no rows" if header else "is empty") + "; expected one interaction per row", path
        )

    users = _ids(df[user_col], rows, user_col)
    items = _ids(df[item_col], rows, item_col)
    keep = np.ones(len(df), dtype=bool)
    if rating_col is not None:
        rating = _numbers(df[rating_col], rows, rating_col, "rating")
        if min_rating is not None:
            keep = rating >= min_rating
    time = _times(df[time_col], rows, time_col) if time_col is not None else None
    idx = np.flatnonzero(keep)
    rows.users, rows.items = users[idx], items[idx]
    rows.time = time[idx] if time is not None else None
    rows.rows = idx.astype(np.int64)
    rows.n_below_min_rating = int(len(df) - len(idx))
    if len(idx) == 0:
        raise DataError(f"no row has {rating_col} >= {min_rating}; lower --min-rating", path)
    return rows


def _read_text(path: Path, sep: str, names: list[str] | None) -> pd.DataFrame:
    head = read_bytes(path, limit=1 << 16, expected="a table file")
    compressed = path.suffix.lower() in COMPRESSION_SUFFIXES
    if not compressed and (b"\x00" in head or head[:2] in (b"\xff\xfe", b"\xfe\xff")):
        raise DataError("is not a UTF-8 text file (binary data or UTF-16); expected a CSV/TSV table", path)
    if path.suffix.lower() == ".zip":
        _check_zip(path)
    try:
        with warnings.catch_warnings():
            # pandas only warns (and drops data) when a row has more fields than the header.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                path,
                sep=sep,
                header=None if names is not None else "infer",
                names=names,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                encoding="utf-8-sig",
                skip_blank_lines=True,
                index_col=False,
                engine="c" if len(sep) == 1 else "python",
            )
    except pd.errors.ParserWarning:
        n_cols, line = _first_long_line(path, sep, names)
        raise DataError(
            f"a row has more fields than the {n_cols} column(s) of the header; quote fields "
            f"that contain the separator {_sep_name(sep)}, or pass the right one with --sep",
            path,
            line,
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(
            "is empty; expected a header line with the column names, then one row per interaction", path
        ) from None
    except UnicodeDecodeError as e:
        raise DataError(f"is not a UTF-8 text file (undecodable byte at offset {e.start})", path) from None
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError, zlib.error) as e:  # e.g. a broken .gz
        raise DataError(f"cannot be read ({type(e).__name__}: {e})", path) from None
    except pd.errors.ParserError as e:
        msg = str(e).strip()
        m = re.search(r"line (\d+)", msg)
        hint = " (a quoting problem, or a different separator: pass --sep)"
        raise DataError(
            f"cannot be parsed as a table with separator {_sep_name(sep)}: {msg}{hint}",
            path,
            int(m.group(1)) if m else None,
        ) from None


def _read_text_fast(
    path: Path,
    sep: str,
    names: list[str] | None,
    wanted: list[str],
    user_col: str,
    item_col: str,
    rating_col: str | None,
) -> pd.DataFrame | None:
    """The wanted columns via pyarrow's CSV reader, ids as int64; None when it cannot (use pandas).

    Only a clean table takes this path: any parse error, a missing column, a non-integer id or an
    empty cell sends the file to the pandas reader, whose messages name the line.
    """
    if len(sep) != 1 or path.suffix.lower() == ".zip" or not path.is_file():
        return None
    import pyarrow as pa
    import pyarrow.csv as pacsv

    types = {user_col: pa.int64(), item_col: pa.int64()}
    if rating_col is not None:
        types[rating_col] = pa.float64()
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=wanted, strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
    except (pa.ArrowException, OSError, ValueError):
        return None
    if table.num_rows == 0 or any(table.column(c).null_count for c in wanted):
        return None
    return table.to_pandas()


def _check_zip(path: Path) -> None:
    """A zipped table is one file in the archive; anything else is a DataError, not pandas' ValueError."""
    try:
        with zipfile.ZipFile(path) as z:
            members = [i.filename for i in z.infolist() if not i.is_dir()]
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot be read as a zip archive ({e})", path) from None
    if len(members) != 1:
        shown = ", ".join(members[:5]) + (" ..." if len(members) > 5 else "")
        raise DataError(
            f"holds {len(members)} files ({shown or 'none'}); a zipped table holds exactly one CSV/TSV file", path
        )


def _first_long_line(path: Path, sep: str, names: list[str] | None) -> tuple[int, int | None]:
    """The number of header columns and the line of the first longer row (error path only)."""
    if len(sep) != 1:
        return (len(names) if names else 0), None
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        n_cols = len(names) if names else len(next(reader, []))
        for row in reader:
            if len(row) > n_cols:
                return n_cols, reader.line_num
    return n_cols, None


def _read_parquet(path: Path, wanted: list[str]) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise DataError("no such file", path)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"is not a readable Parquet file ({e})", path) from None
    missing = [c for c in wanted if c not in schema.names]
    if missing:
        raise DataError(
            f"has no column {', '.join(map(repr, missing))}; columns found: {schema.names}. "
            "Name the columns with --user-col / --item-col / --rating-col / --time-col",
            path,
        )
    try:
        return pq.read_table(path, columns=wanted).to_pandas()
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"is not a readable Parquet file ({e})", path) from None


def _check_columns(path: Path, df: pd.DataFrame, wanted: list[str], sep: str, header: bool) -> None:
    missing = [c for c in wanted if c not in df.columns]
    if not missing:
        return
    found = [str(c) for c in df.columns]
    if len(found) == 1 and len(wanted) > 1:
        guess = [s for s in _LIKELY_SEPS if s != sep and s in found[0]]
        suggestion = (
            f"; it seems separated by {_sep_name(guess[0])}: pass --sep "
            f"'{guess[0] if guess[0] != chr(9) else chr(92) + 't'}'"
            if guess
            else "; pass the right one with --sep"
        )
        raise DataError(
            f"separator mismatch: read with separator {_sep_name(sep)}, the table has one "
            f"column ({found[0][:60]!r}) where at least {len(wanted)} ({', '.join(wanted)}) "
            f"were expected{suggestion}",
            path,
            1,
        )
    raise DataError(
        f"has no column {', '.join(map(repr, missing))}; columns found: {found}. Name the "
        "columns with --user-col / --item-col / --rating-col / --time-col (the first line "
        "must be a header with the column names)",
        path,
        1 if header else None,
    )


def _ids(col: pd.Series, rows: TableRows, name: str) -> np.ndarray:
    """Ids as int64 when all are integers, else as strings; empty cells are an error."""
    if pd.api.types.is_integer_dtype(col.dtype) and not col.isna().any():
        return col.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(col.dtype):
        vals = col.to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(vals))
        if len(bad):
            _fail(rows, int(bad[0]), _EMPTY_ID.format(name))
        if np.all(vals == np.round(vals)) and np.abs(vals).max() < 2**53:
            return vals.astype(np.int64)
        col = col.astype(str)
    if col.isna().any():
        _fail(rows, int(np.flatnonzero(col.isna().to_numpy())[0]), _EMPTY_ID.format(name))
    s = col.astype(str).str.strip()
    empty = np.flatnonzero((s == "").to_numpy())
    if len(empty):
        _fail(rows, int(empty[0]), _EMPTY_ID.format(name))
    if s.str.fullmatch(_INT_RE.pattern).all():
        return s.astype(np.int64).to_numpy()
    return s.to_numpy(dtype=str)


def _numbers(col: pd.Series, rows: TableRows, name: str, what: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        vals = col.to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isnan(vals))
        if len(bad):
            _fail(rows, int(bad[0]), f"empty {what} in column {name!r}")
        return vals
    s = col.astype(str).str.strip()
    vals = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isnan(vals))
    if len(bad):
        k = int(bad[0])
        shown = s.iloc[k]
        what_bad = f"empty {what}" if shown == "" else f"{what} {shown[:40]!r} is not a number"
        _fail(rows, k, f"{what_bad} (column {name!r})")
    return vals


def _times(col: pd.Series, rows: TableRows, name: str) -> np.ndarray:
    """Timestamps as numbers (float64) or, for date strings, int64 nanoseconds since the epoch."""
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        if col.isna().any():
            _fail(rows, int(np.flatnonzero(col.isna().to_numpy())[0]), f"empty time in column {name!r}")
        return col.astype("datetime64[ns]").to_numpy().astype(np.int64)
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype) and not col.isna().any():
        return col.to_numpy(dtype=np.float64)  # read as numbers already (the fast CSV reader, Parquet)
    s = col.astype(str).str.strip()
    nums = pd.to_numeric(s, errors="coerce")
    if not nums.isna().any():
        return nums.to_numpy(dtype=np.float64)
    if not np.isnan(nums.iloc[0]):
        # The first value says the column holds numbers; report the first one that is not.
        _fail(rows, int(np.flatnonzero(nums.isna().to_numpy())[0]), _bad_time(s, nums.isna(), name))
    dates = pd.to_datetime(s, errors="coerce", format="mixed")
    if dates.isna().any():
        _fail(rows, int(np.flatnonzero(dates.isna().to_numpy())[0]), _bad_time(s, dates.isna(), name))
    return dates.astype("datetime64[ns]").to_numpy().astype(np.int64)


def _bad_time(s: pd.Series, bad: pd.Series, name: str) -> str:
    shown = s[bad.to_numpy()].iloc[0]
    if shown == "":
        return f"empty time (column {name!r})"
    return f"time {shown[:40]!r} is neither a number nor a date (column {name!r})"


def _fail(rows: TableRows, k: int, what: str) -> None:
    line = _row_line(rows.path, k, rows.header, rows.sep)
    if line is None:
        what = f"row {k + 1}: {what}"
    raise DataError(what, rows.path, line)


def _row_line(path: Path, row: int, header: bool, sep: str | None) -> int | None:
    """The 1-based line of 0-based data row ``row`` of a text table (None for Parquet).

    pandas skips blank lines, so count non-blank lines; a quoted field spanning lines would shift
    this, which is acceptable for an error message.
    """
    if sep is None or table_kind(path) == "parquet" or path.suffix.lower() in COMPRESSION_SUFFIXES:
        return None
    target = row + (1 if header else 0)
    seen = -1
    with open(path, encoding="utf-8-sig", errors="replace", newline=None) as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                seen += 1
                if seen == target:
                    return number
    return None


def _sep_name(sep: str) -> str:
    return _SEP_NAMES.get(sep, repr(sep))


def read_frame(path: str | Path, sep: str | None = None) -> pd.DataFrame:
    """Every column of a CSV/TSV/Parquet table (text tables as strings), for attribute tables."""
    path = Path(path)
    kind = table_kind(path)
    if kind is None:
        raise DataError("is not a table file (.csv, .tsv, .parquet, or a RecBole .user / .item file)", path)
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not path.exists():
            raise DataError("no such file", path)
        try:
            return pq.read_table(path).to_pandas()
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"is not a readable Parquet file ({e})", path) from None
    sep = parse_sep(sep)
    if sep is None:
        base = path.name.lower()
        for c in COMPRESSION_SUFFIXES:
            base = base.removesuffix(c)
        sep = TEXT_SUFFIXES.get(Path(base).suffix, ",")
    return _read_text(path, sep, None)
