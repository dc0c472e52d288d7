"""Queries per second of a finished run's codes with the retrieval engine (hashgnn.index).

Every test user of the run's data set is a query; its training items are excluded, as in the
evaluation, and the top ``k`` items are retrieved in three ways: :class:`~hashgnn.index.HammingIndex`
on the packed codes (own numba kernel), :class:`~hashgnn.index.HierarchicalIndex` (Hamming top-C,
re-ranked with z) and :class:`~hashgnn.index.FloatIndex` (exact inner product of z, faiss). Each is
warmed up (numba compiles, faiss allocates) and then timed on all queries, best of ``repeats``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

INDEX_MODES = ("hamming", "hierarchical", "continuous")


def _best_time(fn: Callable[[], Any], repeats: int, budget_s: float) -> float:
    """Shortest of up to ``repeats`` timed calls; stops early once ``budget_s`` has been spent."""
    best, spent = float("inf"), 0.0
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
        if spent > budget_s:
            break
    return best


def measure_qps(run_dir: str | Path, k: int = 20, candidates: int | None = None, threads: int | None = None,
                repeats: int = 3, budget_s: float = 5.0, modes: tuple[str, ...] = INDEX_MODES) -> dict[str, Any]:
    """Queries per second of each retrieval mode on the run's saved codes and vectors.

    Returns ``{"queries": n, "items": m, "k": k, "candidates": C, "threads": t, "<mode>_qps": ...}``.
    """
    import numba

    from hashgnn.codes.artifacts import load_codes
    from hashgnn.config import RunConfig
    from hashgnn.data import load_interactions
    from hashgnn.index import FloatIndex, HammingIndex, HierarchicalIndex

    run_dir = Path(run_dir)
    cfg = RunConfig.load(run_dir / "config.yaml")
    codes = load_codes(run_dir)
    data = load_interactions(cfg.data, progress=False)
    users = np.flatnonzero(np.diff(data.test.indptr) > 0)
    exclude = data.train[users]
    uc, uz = codes.user_codes[users], np.ascontiguousarray(codes.user_z[users])
    c = int(candidates or cfg.eval.candidates)
    warm = slice(0, min(len(users), 64))
    out: dict[str, Any] = {"queries": int(len(users)), "items": codes.n_items, "k": k, "candidates": c,
                           "bits": codes.bits, "dim": int(codes.item_z.shape[1]),
                           "threads": int(threads or numba.get_num_threads())}
    if "hamming" in modes:
        h = HammingIndex(codes.bits, "own", threads=threads)
        h.add(codes.item_codes)
        h.search(uc[warm], k, exclude=exclude[warm])
        out["hamming_qps"] = len(users) / _best_time(lambda: h.search(uc, k, exclude=exclude), repeats, budget_s)
    if "hierarchical" in modes:
        hi = HierarchicalIndex(codes.bits, codes.item_z.shape[1], c, threads=threads)
        hi.add(codes.item_codes, codes.item_z)
        hi.search(uc[warm], uz[warm], k, exclude=exclude[warm])
        out["hierarchical_qps"] = len(users) / _best_time(lambda: hi.search(uc, uz, k, exclude=exclude), repeats,
                                                          budget_s)
    if "continuous" in modes:
        f = FloatIndex(codes.item_z.shape[1], "faiss", threads=threads)
        f.add(codes.item_z)
        f.search(uz[warm], k, exclude=exclude[warm])
        out["continuous_qps"] = len(users) / _best_time(lambda: f.search(uz, k, exclude=exclude), repeats, budget_s)
    return out
