"""Insert and search throughput of Milvus (embedded 2.3.5 standalone, loopback) against the own kernel.

    nice -n 10 python bench/milvus_throughput.py --run runs/lastfm-b64 --items 1000000 --queries 200 \\
        --k 100 --out bench/results/milvus_throughput.jsonl

Codes as in bench/search_scale.py (a Gaussian fitted to the run's item vectors; the run's user codes
as queries), or uniform bits with ``--uniform BITS``. Rows: insert (batched, items/s), flush + index
build + load (seconds), then searches: Milvus BIN_FLAT (exact distances; its search runs on all the
server's threads), Milvus BIN_IVF_FLAT (nlist, nprobe; tie-aware recall against exact), and the own
kernel (HammingIndex) with 1 thread and with all cores, on the same queries, each timed ``--repeat``
times after an untimed pass (queries/s: the best turn, and all turns). Milvus is timed through
pymilvus, so its figures include the gRPC round trip and the conversion of results to numpy.
For BIN_FLAT it also times ``--latency-turns`` searches of one query at each consistency level
(``Session``, the default of ``MilvusIndex``, and ``Strong``, which waits for a time tick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_scale import fit_gaussian, synth_codes, tie_recall, uniform_codes


def timed(search, queries: np.ndarray, k: int, repeat: int):  # type: ignore[no-untyped-def]
    """(the last result, queries/s of each of ``repeat`` turns): the cores' speed moves between turns."""
    qps = []
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        out = search(queries, k)
        qps.append(len(queries) / (time.perf_counter() - t))
    return out, qps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path)
    p.add_argument("--uniform", type=int, default=0)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--batch", type=int, default=50_000)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3, help="timed turns of every search; qps is the best, qps_all all")
    p.add_argument("--latency-turns", type=int, default=20, help="one-query searches per consistency level")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    from hashgnn.index import HammingIndex
    from hashgnn.index.milvus import MilvusIndex, start_local_server

    rng = np.random.default_rng(args.seed)
    if args.uniform:
        bits = args.uniform
        items = uniform_codes(args.items, bits, args.seed + 2)
        queries = uniform_codes(args.queries, bits, args.seed + 1)
        source = f"uniform random {bits} bits"
    else:
        from hashgnn.run import Run

        codes = Run.load(args.run).codes
        bits = int(codes.bits)
        mu, chol = fit_gaussian(np.asarray(codes.item_z, np.float32))
        items = synth_codes(mu, chol, args.items, args.seed + 2)
        users = rng.choice(codes.n_users, size=min(args.queries, codes.n_users), replace=False)
        queries = np.ascontiguousarray(codes.user_codes[users])
        source = f"Gaussian fit to item z of {args.run} ({codes.n_items} items, {bits} bits)"
    base = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, nproc {os.cpu_count()}",
        "load_avg_1m": os.getloadavg()[0],
        "command": "python " + " ".join(sys.argv),
        "codes": source,
        "items": args.items,
        "bits": bits,
        "k": args.k,
        "queries": len(queries),
    }
    rows: list[dict] = []

    def emit(row: dict) -> None:
        row = {**base, **row}
        rows.append(row)
        print(json.dumps(row), flush=True)

    own = HammingIndex(bits)
    own.add(items)
    own.search(queries[:8], args.k)
    exact = None
    for threads in (1, None):
        own.threads = threads
        exact, qps_all = timed(own.search, queries, args.k, args.repeat)
        emit({"method": "own", "threads": threads or os.cpu_count(), "qps": max(qps_all), "qps_all": qps_all})
    assert exact is not None

    with tempfile.TemporaryDirectory(prefix="hashgnn-milvus-bench-") as tmp, start_local_server(tmp) as uri:
        for index_type in ("BIN_FLAT", "BIN_IVF_FLAT"):
            index = MilvusIndex(
                bits, uri, f"bench_{index_type.lower()}", index_type=index_type, nlist=args.nlist, batch=args.batch
            )
            # add() = batched inserts, then flush, index build and load: timed apart here.
            index._create(False)
            t = time.perf_counter()
            for a in range(0, len(items), args.batch):
                b = min(len(items), a + args.batch)
                index._col.insert([list(range(a, b)), [r.tobytes() for r in items[a:b]]])
            t_insert = time.perf_counter() - t
            t = time.perf_counter()
            index._col.flush()
            index.build_index()
            t_index = time.perf_counter() - t
            emit(
                {
                    "method": f"milvus-{index_type}",
                    "phase": "insert",
                    "items_per_s": len(items) / t_insert,
                    "insert_s": t_insert,
                    "flush_index_load_s": t_index,
                    "batch": args.batch,
                }
            )
            for nprobe in args.nprobe if index_type == "BIN_IVF_FLAT" else [0]:
                index.nprobe = nprobe
                # A whole untimed pass: the first search after a load (or an nprobe change) ran at
                # half the speed of the next ones however many queries it had (2026-12-06).
                index.search(queries, args.k)
                (d, _), qps_all = timed(index.search, queries, args.k, args.repeat)
                emit(
                    {
                        "method": f"milvus-{index_type}",
                        "phase": "search",
                        "qps": max(qps_all),
                        "qps_all": qps_all,
                        "nlist": args.nlist if nprobe else None,
                        "nprobe": nprobe or None,
                        "recall": tie_recall(d.astype(np.int64), exact[0].astype(np.int64)),
                        "distances_equal": bool(np.array_equal(d, exact[0])),
                    }
                )
            if index_type == "BIN_FLAT":
                for level in ("Session", "Strong"):
                    index.consistency = level
                    ms = [1e3 / q for q in timed(index.search, queries[:1], args.k, args.latency_turns)[1]]
                    emit(
                        {
                            "method": f"milvus-{index_type}",
                            "phase": "one-query latency",
                            "consistency": level,
                            "ms_best": min(ms),
                            "ms_median": float(np.median(ms)),
                        }
                    )
                index.consistency = "Session"
            index.drop()
    if args.out:
        with args.out.open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
