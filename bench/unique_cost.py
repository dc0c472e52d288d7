"""What numpy's hash-based ``np.unique`` cost the pipeline, and what ``hashgnn.arrays.unique_ints`` saves.

    python bench/unique_cost.py --dataset ml-1m lastfm gowalla --synth-edges 1e7 --threads 2 \
        --out bench/results/unique_cost-2026-12-06.jsonl

Since numpy 2.3, ``np.unique`` on an integer array uses a hash table, which is slow when most values are
distinct; the pipeline's keys (query x item exclusion pairs, user x item pairs of a synthetic graph) are.
For each data set (every test user a query, its training items excluded, random 64-bit codes of the
data set's shape, k = 20) this times, in one process and one turn after another:

- ``exclusion_csr`` (the normalisation every exclusion goes through) with ``unique_ints`` and with
  ``np.unique`` in its place (``rule: np.unique``, the code before this change);
- ``HammingIndex.search`` without exclusions and with them, under both rules;

and, with ``--synth-edges``, ``synth_graph`` under both rules. Best of ``--repeat`` calls after a
warm-up. One JSON row per measurement on stdout (and appended to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def best_time(fn: Callable[[], Any], repeat: int) -> float:
    """Shortest wall time of ``repeat`` calls after one untimed call."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@contextmanager
def rule(name: str) -> Iterator[None]:
    """Run the block with ``unique_ints`` (``"unique_ints"``) or ``np.unique`` (``"np.unique"``) in the
    modules that call it on the measured paths."""
    import hashgnn.data.synth as synth
    import hashgnn.index._common as common

    saved = common.unique_ints, synth.unique_ints
    if name == "np.unique":
        common.unique_ints = synth.unique_ints = np.unique
    try:
        yield
    finally:
        common.unique_ints, synth.unique_ints = saved


def measure_dataset(
    name: str, data: Any, k: int, threads: int | None, repeat: int, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Rows for one data set: the search alone, then exclusion_csr and the search under both rules."""
    from hashgnn.index import HammingIndex
    from hashgnn.index._common import exclusion_csr

    users = np.flatnonzero(np.diff(data.test.indptr) > 0)
    exclude = data.train[users]
    n_items = data.train.shape[1]
    index = HammingIndex(64, "own", threads=threads)
    index.add(rng.integers(0, 256, (n_items, 8), dtype=np.uint8))
    queries = rng.integers(0, 256, (len(users), 8), dtype=np.uint8)
    base = {"dataset": name, "queries": len(users), "items": n_items, "excluded": int(exclude.nnz), "k": k}
    t = best_time(lambda: index.search(queries, k), repeat)
    rows = [{**base, "what": "search", "rule": "none", "seconds": t, "qps": len(users) / t}]
    for r in ("np.unique", "unique_ints"):
        with rule(r):
            t_csr = best_time(lambda: exclusion_csr(exclude, len(users), index._idmap), repeat)
            t = best_time(lambda: index.search(queries, k, exclude=exclude), repeat)
        rows.append({**base, "what": "exclusion_csr", "rule": r, "seconds": t_csr})
        rows.append({**base, "what": "search excluding train", "rule": r, "seconds": t, "qps": len(users) / t})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", nargs="*", default=["ml-1m"])
    ap.add_argument("--synth-edges", type=float, nargs="*", default=[])
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from hashgnn.config import DataConfig
    from hashgnn.data import load_interactions
    from hashgnn.data.synth import synth_graph
    from hashgnn.environment import machine_info
    from hashgnn.errors import DataWarning

    machine = machine_info()
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        row.update(numpy=np.__version__, cpu=machine.get("cpu"), threads=args.threads)
        print(json.dumps(row), flush=True)
        rows.append(row)

    rng = np.random.default_rng(0)
    for name in args.dataset:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            data = load_interactions(DataConfig(dataset=name), progress=False)
        for row in measure_dataset(name, data, args.k, args.threads, args.repeat, rng):
            emit(row)
    for e in args.synth_edges:
        n_edges = int(e)
        for r in ("np.unique", "unique_ints"):
            with rule(r):
                t0 = time.perf_counter()
                u, _ = synth_graph(n_edges // 50, n_edges // 150, n_edges, seed=0)
                t = time.perf_counter() - t0
            emit(
                {
                    "what": "synth_graph",
                    "rule": r,
                    "edges": n_edges,
                    "seconds": t,
                    "first_users_sum": int(u[:1000].sum()),
                }
            )
    if args.out:
        with args.out.open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
