"""``load_interactions``: from a data set name, a folder or a table file to :class:`Interactions`.

``cfg.dataset`` is resolved in this order:

1. a registered name (``hashgnn data list``), unless it is written as a path (contains a path
   separator or starts with ``.`` or ``~``): fetched into the cache, then read in its format;
2. a folder holding ``train.txt`` and ``test.txt`` in the one-line-per-user format (pre-split);
3. a table file (``.csv``, ``.tsv``, ``.parquet``, CSV/TSV optionally compressed), split per user
   as ``cfg.split`` / ``cfg.test_fraction`` / ``cfg.seed`` ask;
4. a RecBole atomic file ``DATA.inter`` (:mod:`hashgnn.data.recbole`), split like a table; its
   ``DATA.user`` / ``DATA.item`` siblings give node attributes unless ``cfg.atomic_features`` is off.

Attributes from ``cfg.user_features`` / ``cfg.item_features`` (any table, or a ``.user`` / ``.item``
file) are attached to every kind of source (:mod:`hashgnn.data.features`).

Loading never writes anything except verified files in the cache (see :mod:`hashgnn.data.fetch`).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hashgnn.config import DataConfig
from hashgnn.data.assemble import assemble, dedupe_first
from hashgnn.data.dataset import Interactions
from hashgnn.data.fetch import fetch_dataset
from hashgnn.data.recbole import INTER_SUFFIX
from hashgnn.data.registry import REGISTRY, DatasetSpec, get_spec
from hashgnn.data.split import split_per_user
from hashgnn.data.table import TableRows, read_table, table_kind
from hashgnn.data.txt import read_user_lines
from hashgnn.errors import DataError, DataWarning

ACCEPTED = (
    "a registered data set name ({names}), a folder holding train.txt and test.txt "
    "(one line per user: `user item item ...`), a table file (.csv, .tsv, .parquet; CSV/TSV "
    "may be compressed), or a RecBole atomic file (.inter)"
)


def load_interactions(cfg: DataConfig | str, progress: bool = True) -> Interactions:
    """Load the interactions ``cfg`` names, split as the source defines (``valid`` is None).

    ``cfg`` may be a plain string, read as ``DataConfig(dataset=cfg)``. Duplicates and test
    users/items unseen in train are dropped with a :class:`~hashgnn.errors.DataWarning`
    (a :class:`~hashgnn.errors.DataError` for the unseen ones when ``cfg.strict``).
    """
    if isinstance(cfg, str):
        cfg = DataConfig(dataset=cfg)
    return attach_features(_load(cfg, progress), cfg)


def _load(cfg: DataConfig, progress: bool) -> Interactions:
    ds = str(cfg.dataset)
    if ds in REGISTRY and not _written_as_path(ds):
        folder = fetch_dataset(ds, mirror=cfg.mirror, cache_dir=cfg.cache_dir, progress=progress)
        return load_registered(get_spec(ds), folder, strict=cfg.strict)
    path = Path(ds).expanduser()
    if path.is_dir():
        return load_txt_folder(path, strict=cfg.strict)
    if path.suffix.lower() == INTER_SUFFIX:
        return load_recbole(path, cfg)
    if table_kind(path) is not None:
        return load_table(path, cfg)
    accepted = ACCEPTED.format(names=", ".join(REGISTRY))
    if path.exists():
        raise DataError(f"is not a table file nor a folder; expected {accepted}", path)
    raise DataError(f"{ds!r} is neither a registered data set nor an existing folder or file; expected {accepted}")


def load_registered(spec: DatasetSpec, folder: Path, strict: bool = False) -> Interactions:
    """Read the fetched files of a registered data set from ``folder``."""
    meta = {"source": "registry", "format": spec.fmt, "path": str(folder)}
    if spec.fmt == "txt":
        return load_txt_folder(
            folder, strict=strict, name=spec.name, train_file=spec.train_file, test_file=spec.test_file, meta=meta
        )
    if spec.fmt == "lastfm":
        return load_one_based_pairs(
            folder / spec.train_file, folder / spec.test_file, spec.name, strict=strict, meta=meta
        )
    raise AssertionError(f"registry format {spec.fmt!r} has no reader")  # a registry bug, not user input


def load_txt_folder(
    folder: Path,
    strict: bool = False,
    name: str | None = None,
    train_file: str = "train.txt",
    test_file: str = "test.txt",
    meta: dict | None = None,
) -> Interactions:
    """Read a pre-split folder in the one-line-per-user format; ids are indices (max id + 1)."""
    missing = [f for f in (train_file, test_file) if not (folder / f).is_file()]
    if missing:
        # The folder's other entries are not listed: the path may come from a received config.
        raise DataError(
            f"has no {' or '.join(missing)}; a data folder holds {train_file} and {test_file} "
            "(one line per user: `user item item ...`)",
            folder,
        )
    tr = read_user_lines(folder / train_file)
    te = read_user_lines(folder / test_file)
    n_users = int(max(tr.listed_users.max(), te.listed_users.max())) + 1
    n_items = int(max([a.max() for a in (tr.items, te.items) if len(a)], default=-1)) + 1
    meta = {"source": "folder", "format": "txt", "path": str(folder), **(meta or {})}
    return assemble(
        name or folder.resolve().name,
        (tr.users, tr.items),
        (te.users, te.items),
        n_users,
        n_items,
        train_path=tr.path,
        test_path=te.path,
        test_line_of=lambda k: int(te.lines[k]),
        strict=strict,
        meta=meta,
    )


def load_one_based_pairs(
    train_path: Path, test_path: Path, name: str, strict: bool = False, meta: dict | None = None
) -> Interactions:
    """Read lastfm-style files: tab-separated ``user item count`` rows, 1-based integer ids.

    Index = id - 1 and the id space is max id (as LightGCN-PyTorch counts it: 1,892 users, 4,489
    items), so ``user_ids[k] == k + 1``.
    """
    names = ["user", "item", "count"]
    tr = read_table(train_path, sep="\t", names=names)
    te = read_table(test_path, sep="\t", names=names)
    for rows in (tr, te):
        for col, ids in (("user", rows.users), ("item", rows.items)):
            if ids.dtype.kind != "i":
                k = int(np.flatnonzero(~pd.Series(ids).str.fullmatch(r"[+-]?\d+").to_numpy())[0])
                raise DataError(
                    f"{col} ids must be integers (this format has 1-based integer ids)", rows.path, rows.line_of(k)
                )
            if ids.min() < 1:
                k = int(np.argmin(ids))
                raise DataError(
                    f"{col} id {int(ids[k])} is below 1 (this format has 1-based ids)", rows.path, rows.line_of(k)
                )
    n_users = int(max(tr.users.max(), te.users.max()))
    n_items = int(max(tr.items.max(), te.items.max()))
    meta = {"source": "files", "format": "lastfm", "path": str(train_path.parent), **(meta or {})}
    return assemble(
        name,
        (tr.users - 1, tr.items - 1),
        (te.users - 1, te.items - 1),
        n_users,
        n_items,
        train_path=train_path,
        test_path=test_path,
        test_line_of=te.line_of,
        strict=strict,
        user_ids=np.arange(1, n_users + 1),
        item_ids=np.arange(1, n_items + 1),
        meta=meta,
    )


def load_table(path: Path, cfg: DataConfig) -> Interactions:
    """Read a table, map ids to contiguous indices (sorted ids), drop duplicates, split per user."""
    rows = read_table(
        path,
        user_col=cfg.user_col,
        item_col=cfg.item_col,
        rating_col=cfg.rating_col,
        min_rating=cfg.min_rating,
        time_col=cfg.time_col,
        sep=cfg.sep,
    )
    return split_rows(path, rows, cfg, "table")


def load_recbole(path: Path, cfg: DataConfig) -> Interactions:
    """Read a RecBole ``.inter`` file: columns by name (``user_id``, ``item_id``, ``rating``, ``timestamp``)."""
    from hashgnn.data.recbole import AtomicFile, bare, read_atomic
    from hashgnn.data.table import TableRows, _ids, _numbers, _times

    atomic: AtomicFile = read_atomic(path)
    frame = atomic.frame
    default = DataConfig(dataset="")
    user_col = (bare(cfg.user_col) if cfg.user_col != default.user_col else None) or "user_id"
    item_col = (bare(cfg.item_col) if cfg.item_col != default.item_col else None) or "item_id"
    rating_col = bare(cfg.rating_col) or ("rating" if "rating" in frame.columns else None)
    time_col = bare(cfg.time_col) or ("timestamp" if "timestamp" in frame.columns else None)
    if cfg.min_rating is not None and rating_col is None:
        raise DataError("--min-rating needs a rating column; this file has none (name it with --rating-col)", path, 1)
    for what, col in (("user", user_col), ("item", item_col), ("rating", rating_col), ("time", time_col)):
        if col is not None and col not in frame.columns:
            raise DataError(
                f"has no {what} column {col!r}; columns found: {list(frame.columns)}. Name it with --{what}-col",
                path,
                1,
            )
    if len(frame) == 0:
        raise DataError("has a header line but no rows; expected one interaction per row", path)
    rows = TableRows(path, np.empty(0), np.empty(0), None, np.empty(0, np.int64), len(frame), 0, True, "\t")
    users = _ids(frame[user_col], rows, user_col)
    items = _ids(frame[item_col], rows, item_col)
    keep = np.ones(len(frame), dtype=bool)
    if rating_col is not None and cfg.min_rating is not None:
        keep = _numbers(frame[rating_col], rows, rating_col, "rating") >= cfg.min_rating
    time = _times(frame[time_col], rows, time_col) if time_col is not None else None
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        raise DataError(f"no row has {rating_col} >= {cfg.min_rating}; lower --min-rating", path)
    rows.users, rows.items, rows.rows = users[idx], items[idx], idx.astype(np.int64)
    rows.time = time[idx] if time is not None else None
    rows.n_below_min_rating = int(len(frame) - len(idx))
    return split_rows(path, rows, cfg, "recbole")


def split_rows(path: Path, rows: TableRows, cfg: DataConfig, fmt: str) -> Interactions:
    """Map the ids of table rows to contiguous indices (sorted ids), drop duplicates, split per user."""
    user_ids, users = np.unique(rows.users, return_inverse=True)
    item_ids, items = np.unique(rows.items, return_inverse=True)
    n_users, n_items = len(user_ids), len(item_ids)
    n = len(users)
    order = np.arange(n) if rows.time is None else np.lexsort((np.arange(n), rows.time))
    keep = dedupe_first(users, items, order, n_items)
    n_dup = n - len(keep)
    if n_dup:
        warnings.warn(
            f"{path}: dropped {n_dup} duplicate interaction(s) (a user-item pair listed more "
            "than once is kept once, its earliest row)",
            DataWarning,
            stacklevel=3,
        )
    users, items = users[keep], items[keep]
    time = rows.time[keep] if rows.time is not None else None
    is_test = split_per_user(users, n_users, cfg.split, cfg.test_fraction, cfg.seed, time)
    test_rows = keep[is_test]
    meta = {
        "source": "table",
        "format": fmt,
        "path": str(path),
        "split": cfg.split,
        "test_fraction": float(cfg.test_fraction),
        "split_seed": int(cfg.seed),
        "n_rows": rows.n_read,
        "n_below_min_rating": rows.n_below_min_rating,
        "n_duplicates": n_dup,
    }
    if cfg.split == "loo":
        meta["loo_order"] = "time" if time is not None else "row"
    if not is_test.any():
        warnings.warn(
            f"{path}: the test split is empty (no user has enough interactions to give one to "
            "test while keeping one in train)",
            DataWarning,
            stacklevel=3,
        )
    return assemble(
        path.name.split(".")[0] or path.name,
        (users[~is_test], items[~is_test]),
        (users[is_test], items[is_test]),
        n_users,
        n_items,
        train_path=path,
        test_path=path,
        test_line_of=lambda k: rows.line_of(int(test_rows[k])),
        strict=cfg.strict,
        user_ids=user_ids,
        item_ids=item_ids,
        meta=meta,
    )


def attach_features(data: Interactions, cfg: DataConfig) -> Interactions:
    """``data`` with the node attributes ``cfg`` asks for (explicit files, else a .inter's siblings)."""
    from hashgnn.data.features import read_feature_table
    from hashgnn.data.recbole import siblings

    sources: dict[str, Path] = {}
    path = Path(str(cfg.dataset)).expanduser()
    if cfg.atomic_features and path.suffix.lower() == INTER_SUFFIX and not _registered(str(cfg.dataset)):
        sources.update(siblings(path))
    for side, given in (("user", cfg.user_features), ("item", cfg.item_features)):
        if given:
            sources[side] = Path(given).expanduser()
    if not sources:
        return data
    found: dict[str, Any] = {}
    for side, src in sources.items():
        ids = data.user_ids if side == "user" else data.item_ids
        n = data.n_users if side == "user" else data.n_items
        found[f"{side}_features"] = read_feature_table(src, side, None, ids, n)
    return dataclasses.replace(data, **found)


def _registered(name: str) -> bool:
    return name in REGISTRY and not _written_as_path(name)


def absolute_dataset(dataset: str) -> str:
    """A data set as saved in a run's config: a registered name as it is, a path made absolute.

    A run folder records where its data came from so that it can be evaluated from anywhere.
    """
    if dataset in REGISTRY and not _written_as_path(dataset):
        return dataset
    return str(Path(dataset).expanduser().resolve())


def _written_as_path(s: str) -> bool:
    return os.sep in s or "/" in s or s.startswith((".", "~"))
