"""Turn (user, item) index pairs into :class:`Interactions`: duplicates and unseen test rows handled.

The same rules apply to every source:

- a user-item pair listed more than once in a split is kept once; the dropped copies are counted in a
  :class:`~hashgnn.errors.DataWarning` naming the file;
- a test interaction whose user or item has no train interaction cannot be scored by a model that
  learns from train alone: it is dropped with a counted warning, or raises
  :class:`~hashgnn.errors.DataError` (file and line of the first one) when ``strict``;
- a test pair that also occurs in train is kept (the evaluator masks train items, so it can never be
  hit); it is counted in ``meta["n_test_in_train"]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hashgnn.arrays import unique_ints
from hashgnn.data.dataset import Interactions, interactions_matrix
from hashgnn.errors import DataError, DataWarning


def assemble(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    n_users: int,
    n_items: int,
    *,
    train_path: Path | str,
    test_path: Path | str,
    test_line_of: Callable[[int], int | None] | None = None,
    strict: bool = False,
    user_ids: np.ndarray | None = None,
    item_ids: np.ndarray | None = None,
    meta: dict[str, Any] | None = None,
) -> Interactions:
    """Build the train and test matrices of shape ``(n_users, n_items)`` from index arrays.

    ``test_line_of(k)`` gives the file line of test interaction ``k`` for the strict-mode error.
    """
    meta = dict(meta or {})
    tr_u, tr_i = (np.asarray(a, np.int64) for a in train)
    te_u, te_i = (np.asarray(a, np.int64) for a in test)
    if len(tr_u) == 0:
        raise DataError("has no interactions; the train split must not be empty", train_path)

    train_m = interactions_matrix(tr_u, tr_i, n_users, n_items)
    _warn_duplicates(train_path, len(tr_u) - train_m.nnz, "train")
    meta["n_train_duplicates"] = int(len(tr_u) - train_m.nnz)

    user_seen = np.diff(train_m.indptr) > 0
    item_seen = np.bincount(train_m.indices, minlength=n_items) > 0
    unseen = ~user_seen[te_u] | ~item_seen[te_i]
    meta["n_test_raw"] = len(te_u)
    n_unseen = int(unseen.sum())
    if n_unseen:
        bad_users = unique_ints(te_u[~user_seen[te_u]])
        bad_items = unique_ints(te_i[~item_seen[te_i]])
        counts = (
            f"{n_unseen} test interaction(s) whose user or item never occurs in train "
            f"({len(bad_users)} user(s), {len(bad_items)} item(s))"
        )
        if strict:
            k = int(np.flatnonzero(unseen)[0])
            u, i = int(te_u[k]), int(te_i[k])
            who = f"user {_show(user_ids, u)}" if not user_seen[u] else f"item {_show(item_ids, i)}"
            raise DataError(
                f"test {who} never occurs in train; {counts} in all. A model learned from train cannot "
                "score them: fix the split, or drop --strict (strict=False) to drop them with a warning",
                test_path,
                test_line_of(k) if test_line_of is not None else None,
            )
        warnings.warn(
            f"{test_path}: dropped {counts}; use --strict (strict=True) to make this an error",
            DataWarning,
            stacklevel=3,
        )
        te_u, te_i = te_u[~unseen], te_i[~unseen]
    meta["n_test_unseen_dropped"] = n_unseen

    test_m = interactions_matrix(te_u, te_i, n_users, n_items)
    _warn_duplicates(test_path, len(te_u) - test_m.nnz, "test")
    meta["n_test_duplicates"] = int(len(te_u) - test_m.nnz)
    meta["n_test_in_train"] = int(train_m.multiply(test_m).nnz)
    return Interactions(
        name=name, train=train_m, test=test_m, valid=None, user_ids=user_ids, item_ids=item_ids, meta=meta
    )


def dedupe_first(users: np.ndarray, items: np.ndarray, order: np.ndarray, n_items: int) -> np.ndarray:
    """Indices (ascending) of the first occurrence, in ``order``, of each (user, item) pair."""
    key = users[order].astype(np.int64) * n_items + items[order]
    _, first = np.unique(key, return_index=True)
    return np.sort(order[first])


def _warn_duplicates(path: Path | str, n: int, split: str) -> None:
    if n:
        warnings.warn(
            f"{path}: dropped {n} duplicate {split} interaction(s) (a user-item pair listed "
            "more than once is kept once)",
            DataWarning,
            stacklevel=4,
        )


def _show(ids: np.ndarray | None, k: int) -> str:
    return repr(ids[k].item()) if ids is not None else str(k)
