"""Top-K ranking metrics, vectorised over a batch of users.

Input is a batch of ranked lists ``top`` (int array (B, L), item indices best first, ``-1`` for an
empty slot) and the test items of the same users (the CSR rows ``test[users]``). For every cut-off K:

- ``recall@K``     hits in the first K / number of test items of the user;
- ``precision@K``  hits in the first K / K;
- ``hit@K``        1 if the first K hold at least one test item, else 0;
- ``ndcg@K``       DCG@K / IDCG@K with the standard ideal: ``IDCG@K = sum_{i=1}^{min(K, |test|)} 1/log2(i+1)``;
- ``ndcg_legacy@K`` DCG@K / IDCG with the ideal built from the hits found in the list, as the code of
  NGCF (``utility/metrics.py: ndcg_at_k``), HashGNN (``metrics_rs.py``) and BiGeaR (``src/utils.py:
  NDCG_K``) computes it: those codes build the 0/1 hit vector ``r`` of the top ``D = max(Ks)`` items
  and divide ``dcg(r[:K])`` by ``dcg(sorted(r, reverse=True)[:K])``, i.e.
  ``IDCG_legacy@K = sum_{i=1}^{min(K, hits@D)} 1/log2(i+1)`` (0 when there is no hit). The depth D is
  ``legacy_depth`` here, by default the largest K evaluated, so ``ndcg_legacy@K`` depends on which
  cut-offs are evaluated together, exactly as in those codes.

with ``DCG@K = sum_{j=1}^{K} hit_j / log2(j+1)`` (positions from 1). Users without test items are
left out of every average.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from hashgnn.arrays import repeat_rows
from hashgnn.errors import ConfigError

METRICS: tuple[str, ...] = ("recall", "ndcg", "ndcg_legacy", "precision", "hit")


def check_ks(ks: Sequence[int] | int) -> list[int]:
    """Validate cut-offs: positive integers, duplicates dropped, order kept."""
    if isinstance(ks, (int, np.integer)):
        ks = [int(ks)]
    out: list[int] = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 1:
            raise ConfigError(f"cut-off K must be a positive integer, got {k!r}")
        if int(k) not in out:
            out.append(int(k))
    if not out:
        raise ConfigError("give at least one cut-off K (for example 20)")
    return out


def metric_keys(ks: Sequence[int]) -> list[str]:
    """The result keys in print order: every metric at every K (``recall@20``, ``recall@50``, ...)."""
    return [f"{m}@{k}" for m in METRICS for k in ks]


def hit_matrix(top: np.ndarray, test_rows: sp.csr_matrix) -> np.ndarray:
    """Bool (B, L): whether ``top[b, j]`` is a test item of row b (``-1`` slots are never hits)."""
    top = np.asarray(top, dtype=np.int64)
    b, n_items = test_rows.shape[0], test_rows.shape[1]
    if top.ndim != 2 or top.shape[0] != b:
        raise ValueError(f"top has shape {top.shape}, expected ({b}, L)")
    # One integer key per (row, item) pair turns the membership test into a single np.isin.
    lengths = np.diff(test_rows.indptr)
    test_keys = repeat_rows(lengths) * n_items + test_rows.indices
    top_keys = np.arange(b, dtype=np.int64)[:, None] * n_items + top
    return np.isin(top_keys, test_keys) & (top >= 0)


def per_user_metrics(
    top: np.ndarray,
    test_rows: sp.csr_matrix,
    ks: Sequence[int],
    legacy_depth: int | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every metric at every K for every row of the batch.

    Returns ``(values, valid)``: ``values[key]`` is a float64 array (B,), ``valid`` a bool array (B,)
    that is False for users without test items (their values are meaningless and must be skipped).
    ``top`` needs at least ``max(max(ks), legacy_depth)`` columns; shorter lists are an error.
    """
    ks = check_ks(ks)
    depth = max(ks) if legacy_depth is None else int(legacy_depth)
    need = max(*ks, depth)
    top = np.asarray(top, dtype=np.int64)
    if top.shape[1] < need:
        raise ValueError(f"ranked lists hold {top.shape[1]} items, need {need} (max K / legacy depth)")
    hits = hit_matrix(top[:, :need], test_rows)
    n_test = np.diff(test_rows.indptr).astype(np.int64)
    valid = n_test > 0
    n_test_safe = np.maximum(n_test, 1)

    discount = 1.0 / np.log2(np.arange(2, need + 2, dtype=np.float64))
    ideal = np.cumsum(discount)  # ideal[m - 1] = DCG of m hits at the top
    dcg_prefix = np.cumsum(hits * discount, axis=1)
    hit_prefix = np.cumsum(hits, axis=1, dtype=np.int64)
    hits_depth = hit_prefix[:, depth - 1]

    values: dict[str, np.ndarray] = {}
    for k in ks:
        n_hit = hit_prefix[:, k - 1].astype(np.float64)
        dcg = dcg_prefix[:, k - 1]
        values[f"recall@{k}"] = n_hit / n_test_safe
        values[f"precision@{k}"] = n_hit / k
        values[f"hit@{k}"] = (n_hit > 0).astype(np.float64)
        values[f"ndcg@{k}"] = dcg / ideal[np.minimum(k, n_test_safe) - 1]
        m = np.minimum(k, hits_depth)
        values[f"ndcg_legacy@{k}"] = np.where(m > 0, dcg / ideal[np.maximum(m, 1) - 1], 0.0)
    return {key: values[key] for key in metric_keys(ks)}, valid


def mean_metrics(
    top: np.ndarray,
    test_rows: sp.csr_matrix,
    ks: Sequence[int],
    legacy_depth: int | None = None,
) -> dict[str, float]:
    """Averages of :func:`per_user_metrics` over the users with at least one test item."""
    values, valid = per_user_metrics(top, test_rows, ks, legacy_depth)
    n = int(valid.sum())
    out = {key: (float(v[valid].sum()) / n if n else 0.0) for key, v in values.items()}
    out["n_users"] = n
    return out
