"""Queries per second of a finished run's codes with the retrieval engine (hashgnn.index).

Every test user of the run's data set is a query, and the top ``k`` items are retrieved in three
ways: :class:`~hashgnn.index.HammingIndex` on the packed codes (own numba kernel),
:class:`~hashgnn.index.HierarchicalIndex` (Hamming top-C, re-ranked with z) and
:class:`~hashgnn.index.FloatIndex` (exact inner product of z; the faster of faiss and torch). Each is
warmed up (numba compiles, faiss allocates) and then timed on all queries, best of ``repeats``.

Two timings per mode: ``<mode>_qps`` is the search alone, ``<mode>_qps_excluding_train`` also removes
each user's training items from the results (as the evaluation and ``hashgnn recommend`` do). The
exclusion has its own cost, largest on dense data (ml-1m users have 132 training items on average
against 20 results; docs/BENCHMARKS.md, "Exclusions"); the search alone is what the paper's speed
claim is about.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hashgnn.experiment.results import read_json, run_dir, stale_diff, suite_dir, write_json
from hashgnn.experiment.suite import Suite
from hashgnn.methods import ALL_MODES
from hashgnn.run import Run


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


def measure_qps(
    run_dir: str | Path,
    k: int = 20,
    candidates: int | None = None,
    threads: int | None = None,
    repeats: int = 3,
    budget_s: float = 5.0,
    modes: tuple[str, ...] = ALL_MODES,
) -> dict[str, Any]:
    """Queries per second of each retrieval mode on the run's saved codes and vectors (weighted only
    for a run with query vectors against its item codes; the others skip it).

    Returns ``{"queries": n, "items": m, "k": k, "candidates": C, "threads": t, "<mode>_qps": ...,
    "<mode>_qps_excluding_train": ..., "continuous_backend": "faiss" | "torch" | "asymmetric"}``.
    """
    import numba

    from hashgnn.codes.artifacts import load_codes
    from hashgnn.threads import start_numba_threads

    start_numba_threads()  # numba.get_num_threads() below would start the pool and reset torch's threads
    from hashgnn.config import RunConfig
    from hashgnn.data import load_interactions
    from hashgnn.index import FloatIndex, HammingIndex, HierarchicalIndex
    from hashgnn.index.recommend import item_vectors_are_the_codes

    run_dir = Path(run_dir)
    cfg = RunConfig.load(run_dir / Run.CONFIG)
    codes = load_codes(run_dir)
    data = load_interactions(cfg.data, progress=False)
    users = np.flatnonzero(np.diff(data.test.indptr) > 0)
    exclude = data.train[users]
    uc, uz = codes.user_codes[users], np.ascontiguousarray(codes.user_z[users])
    c = int(candidates or cfg.eval.candidates)
    dim = int(codes.item_z.shape[1])
    warm = slice(0, min(len(users), 64))
    out: dict[str, Any] = {
        "queries": len(users),
        "items": codes.n_items,
        "k": k,
        "candidates": c,
        "bits": codes.bits,
        "dim": dim,
        "threads": int(threads or numba.get_num_threads()),
    }

    def timed(search: Callable[[Any, Any], Any]) -> tuple[float, float]:
        rates = []
        for ex in (None, exclude):
            search(warm, None if ex is None else ex[warm])
            rates.append(len(users) / _best_time(partial(search, slice(None), ex), repeats, budget_s))
        return rates[0], rates[1]

    if "hamming" in modes:
        h = HammingIndex(codes.bits, "own", threads=threads)
        h.add(codes.item_codes)
        out["hamming_qps"], out["hamming_qps_excluding_train"] = timed(lambda s, ex: h.search(uc[s], k, exclude=ex))
    if "hierarchical" in modes:
        hi = HierarchicalIndex(codes.bits, dim, c, threads=threads)
        hi.add(codes.item_codes, codes.item_z)
        out["hierarchical_qps"], out["hierarchical_qps_excluding_train"] = timed(
            lambda s, ex: hi.search(uc[s], uz[s], k, exclude=ex)
        )
    query_run = item_vectors_are_the_codes(codes)
    if "continuous" in modes and query_run:
        # served by AsymmetricIndex from the packed codes (Retriever), so that is what is timed
        from hashgnn.index.asymmetric import AsymmetricIndex

        a = AsymmetricIndex(codes.bits, threads=threads)
        a.add(codes.item_codes)
        out["continuous_qps"], out["continuous_qps_excluding_train"] = timed(
            lambda s, ex: a.search(uz[s], k, exclude=ex)
        )
        out["continuous_backend"] = "asymmetric"
    elif "continuous" in modes:
        best: tuple[float, float, str] | None = None
        for backend in ("faiss", "torch"):
            f = FloatIndex(dim, backend, threads=threads)
            f.add(codes.item_z)

            def search(s: slice, ex: Any, f: FloatIndex = f) -> Any:  # f bound now, not at call time
                return f.search(uz[s], k, exclude=ex)

            plain, excl = timed(search)
            out[f"continuous_{backend}_qps"], out[f"continuous_{backend}_qps_excluding_train"] = plain, excl
            if best is None or plain > best[0]:
                best = (plain, excl, backend)
        assert best is not None
        out["continuous_qps"], out["continuous_qps_excluding_train"], out["continuous_backend"] = best
    if "weighted" in modes and query_run:
        from hashgnn.codes.query_weights import quantise_queries
        from hashgnn.index.weighted import WeightedHammingIndex

        w = WeightedHammingIndex(codes.bits, threads=threads)
        w.add(codes.item_codes)
        wq = quantise_queries(uz, w.planes)
        out["weighted_qps"], out["weighted_qps_excluding_train"] = timed(
            lambda s, ex: w.search(wq.codes[s], wq.weights[s], k, exclude=ex)
        )
    return out


QPS_FILE = "qps.json"  # per suite folder: the cached measurements


def measure_suite_qps(
    suite: Suite, out: Path, progress: bool = True, measure: bool = True
) -> dict[str, dict[str, Any]]:
    """q/s of the first seed's run of each report.qps_methods x dataset x bits x variant; cached in qps.json.

    ``measure=False`` only reads the cache (entries of runs whose codes changed since are left out).
    """
    cache_path = suite_dir(out, suite) / QPS_FILE
    cache = read_json(cache_path) or {}
    seen: set[tuple[str, int, str]] = set()
    result: dict[str, dict[str, Any]] = {}
    for p in suite.points():
        key = (p.dataset, p.bits, p.label)
        if p.method not in suite.report.qps_methods or key in seen:
            continue
        folder = run_dir(out, suite, p)
        codes_json = folder / Run.CODES_HEADER
        if not (folder / Run.FINAL_METRICS).exists() or not codes_json.exists() or stale_diff(folder, p):
            continue
        seen.add(key)
        stamp = codes_json.stat().st_mtime
        c = cache.get(p.run_id)
        if (
            not c
            or c.get("codes_mtime") != stamp
            or c.get("k") != suite.report.qps_k
            or "hamming_qps_excluding_train" not in c
        ):
            if not measure:
                continue
            if progress:
                print(f"[{suite.name}] measuring queries/second of {p.run_id}", file=sys.stderr, flush=True)
            c = measure_qps(folder, k=suite.report.qps_k)
            c.update(
                codes_mtime=stamp,
                dataset=p.dataset,
                bits=p.bits,
                method=p.method,
                label=p.label,
                seed=p.seed,
                measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            cache[p.run_id] = c
            write_json(cache_path, cache)
        result[p.run_id] = c
    return result


def suite_qps(suite: Suite, out: Path) -> dict[str, dict[str, Any]]:
    """The cached measurements of :func:`measure_suite_qps` that still match the runs' codes."""
    return measure_suite_qps(suite, out, progress=False, measure=False)
