"""faiss with each user's training items excluded: one over-fetch for the batch, or one per group.

    python bench/faiss_exclusions.py --dataset gowalla ml-1m --queries 2000 --threads 1 \
        --out bench/results/faiss_exclusions-2026-12-06.jsonl

faiss cannot skip excluded items, so ``HammingIndex(backend="faiss")`` and ``FloatIndex`` fetch more
than k and filter (``hashgnn.index._common.search_over_fetched``). Ungrouped, every query of a batch
fetches k plus the longest exclusion list of the batch; grouped, each query fetches k plus its own,
rounded up to a power of two, in one search per group. For each data set (``--queries`` random
users, their training items excluded, random 64-bit codes and 64-wide float vectors of the data
set's shape, k = 20) this times both for faiss's binary flat index and its flat inner-product index,
checks that they return the same results (float scores: to the last bits of a differently batched
product), and prints one JSON row per measurement (appended to
``--out``). Best of ``--repeat`` calls after a warm-up.

``--milvus`` adds ``MilvusIndex`` (BIN_FLAT on an embedded Milvus 2.3.5 server on loopback, started
and stopped here) on the same binary codes and exclusions, checked against the own kernel's
distances. It over-fetches the same way since 2026-12-06; to time the code before that, run this
file from a checkout of an older commit (the row's ``hashgnn`` field says which code ran).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np


def best_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """(shortest wall time of ``repeat`` calls after one untimed call, the last result)."""
    out = fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def draws(name: str, queries: int, seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """(the drawn users' training items as a sorted CSR, item vectors, query vectors) of one data set.

    Random 64-wide vectors of the data set's shape; every backend's rows use the same draws.
    """
    import hashgnn as hg

    ex_all = hg.load_dataset(name).train.tocsr()
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(ex_all.shape[0], min(queries, ex_all.shape[0]), replace=False))
    ex_m = ex_all[users]
    ex_m.sort_indices()
    vec = rng.standard_normal((ex_all.shape[1], 64)).astype(np.float32)
    q = rng.standard_normal((len(users), 64)).astype(np.float32)
    return ex_m, vec, q


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", nargs="+", default=["gowalla"])
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--milvus", action="store_true", help="also time MilvusIndex (BIN_FLAT) on the binary codes")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    import faiss

    from hashgnn.index._common import faiss_threads, search_over_fetched

    rows = []
    for name in args.dataset:
        ex_m, vec, q = draws(name, args.queries, args.seed)
        ex = (ex_m.indptr.astype(np.int64), ex_m.indices.astype(np.int64))
        n = len(vec)
        binary = faiss.IndexBinaryFlat(64)
        binary.add(np.packbits(vec > 0, axis=1))
        flat = faiss.IndexFlatIP(64)
        flat.add(vec)
        lengths = np.diff(ex[0])
        for kind, index, qq in (("binary flat", binary, np.packbits(q > 0, axis=1)), ("flat IP", flat, q)):

            def search(x: np.ndarray, f: int, index: Any = index) -> tuple[np.ndarray, np.ndarray]:
                with faiss_threads(args.threads):
                    s, pos = index.search(x, f)
                return s, pos

            fill = -1 if kind == "binary flat" else -np.inf
            results = {}
            for grouped in (False, True):
                call = partial(search_over_fetched, search, qq, args.k, ex, n, fill, grouped=grouped)
                dt, results[grouped] = best_time(call, args.repeat)
                row = {
                    "dataset": name,
                    "index": kind,
                    "grouped": grouped,
                    "queries": len(q),
                    "k": args.k,
                    "threads": args.threads,
                    "exclusions_median_max": [float(np.median(lengths)), int(lengths.max())],
                    "qps": len(q) / dt,
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "cpu": platform.processor() or platform.machine(),
                }
                if grouped:
                    row["same_results"] = bool(
                        np.array_equal(results[True][0], results[False][0])
                        and np.array_equal(results[True][1], results[False][1])
                    )
                    # float scores of differently batched products can differ in their last bits
                    a, b = results[True][0].astype(np.float64), results[False][0].astype(np.float64)
                    both = np.isfinite(a) & np.isfinite(b)
                    row["max_score_difference"] = float(np.abs(a - b)[both].max()) if both.any() else 0.0
                    row["rows_with_other_ids"] = int((results[True][1] != results[False][1]).any(1).sum())
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.milvus:
        rows += milvus_rows(args)
    if args.out:
        with args.out.open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return 0


def milvus_rows(args: argparse.Namespace) -> list[dict]:
    """``MilvusIndex.search`` with each data set's exclusions, on the codes the faiss rows use."""
    import tempfile

    import hashgnn as hg
    from hashgnn.index import HammingIndex
    from hashgnn.index.milvus import MilvusIndex, start_local_server

    rows = []
    with tempfile.TemporaryDirectory(prefix="hashgnn-exclusions-") as tmp, start_local_server(tmp) as uri:
        for name in args.dataset:
            ex_m, vec, q = draws(name, args.queries, args.seed)
            items, queries = np.packbits(vec > 0, axis=1), np.packbits(q > 0, axis=1)
            index = MilvusIndex(64, uri, f"exclusions_{name.replace('-', '_')}")
            index.add(items)
            own = HammingIndex(64)
            own.add(items)
            dt, (d, i) = best_time(partial(index.search, queries, args.k, exclude=ex_m), args.repeat)
            want = own.search(queries, args.k, exclude=ex_m)
            excluded = (np.asarray(ex_m[np.arange(len(queries))[:, None], np.maximum(i, 0)].todense()) != 0) & (i >= 0)
            lengths = np.diff(ex_m.indptr)
            row = {
                "dataset": name,
                "index": "milvus BIN_FLAT",
                "queries": len(queries),
                "k": args.k,
                "exclusions_median_max": [float(np.median(lengths)), int(lengths.max())],
                "qps": len(queries) / dt,
                "distances_equal": bool(np.array_equal(d, want[0])),
                "excluded_returned": int(excluded.sum()),
                "hashgnn": str(Path(hg.__file__).resolve().parent),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "cpu": platform.processor() or platform.machine(),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
            index.drop()
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
