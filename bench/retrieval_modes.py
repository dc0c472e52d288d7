"""Accuracy and speed of the three retrieval modes on one trained run, in one table.

    python bench/retrieval_modes.py --run runs/gowalla-hashgnn            # markdown on stdout
    python bench/retrieval_modes.py --run runs/gowalla-hashgnn --k 20 --candidates 500 --json

For each mode (hamming, hierarchical, continuous): Recall@K and NDCG@K from the project's full-ranking
evaluator (hashgnn.eval, training items masked, the same numbers `hashgnn evaluate --run` gives), and
the engine's queries per second answering every user of the run (top-K, seen items excluded,
hashgnn.index.recommend.Recommender), plus bytes per item of what each mode searches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from hashgnn.methods import MODES
from hashgnn.run import Run


def measure(run: Path, k: int, candidates: int | None, threads: int | None) -> list[dict]:
    from hashgnn.codes.artifacts import load_codes
    from hashgnn.config import RunConfig
    from hashgnn.data import load_interactions
    from hashgnn.errors import DataWarning
    from hashgnn.index.recommend import Recommender
    from hashgnn.train.run import evaluate_codes

    cfg = RunConfig.load(run / Run.CONFIG)
    codes = load_codes(run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        data = load_interactions(cfg.data, progress=False)
    c = candidates or cfg.eval.candidates
    users = np.arange(codes.n_users, dtype=np.int64)
    rows = []
    for mode in MODES:
        metrics = evaluate_codes(codes, data.train, data.test, mode, [k], c, cfg.eval.batch_users)
        rec = Recommender(run, mode, c, exclude_seen=True, threads=threads)
        rec.topk(users[:64], k)  # warm-up (numba compilation or cache load)
        t = time.perf_counter()
        rec.topk(users, k)
        dt = time.perf_counter() - t
        code_bytes = int(codes.item_codes.shape[1])
        float_bytes = int(codes.item_z.shape[1]) * 4
        rows.append(
            {
                "mode": mode,
                f"recall@{k}": metrics[f"recall@{k}"],
                f"ndcg@{k}": metrics[f"ndcg@{k}"],
                "queries_per_second": codes.n_users / dt,
                "users": codes.n_users,
                "items": codes.n_items,
                "bytes_per_item": {
                    "hamming": code_bytes,
                    "hierarchical": code_bytes + float_bytes,
                    "continuous": float_bytes,
                }[mode],
                "candidates": c if mode == "hierarchical" else None,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a finished run folder")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=None, help="C of hierarchical search (default: the run's)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = ap.parse_args()
    rows = measure(args.run, args.k, args.candidates, args.threads)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    k = args.k
    cmd = " ".join(["python", *sys.argv])
    print(
        f"Run `{args.run}`: {rows[0]['users']:,} users x {rows[0]['items']:,} items; "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}; command `{cmd}`.\n"
    )
    print(f"| mode | Recall@{k} | NDCG@{k} | queries/s (all users, seen excluded) | bytes/item |")
    print("|---|---|---|---|---|")
    for r in rows:
        name = r["mode"] + (f" (C = {r['candidates']})" if r["candidates"] else "")
        print(
            f"| {name} | {r[f'recall@{k}']:.4f} | {r[f'ndcg@{k}']:.4f} | {r['queries_per_second']:,.0f} "
            f"| {r['bytes_per_item']} |"
        )


if __name__ == "__main__":
    main()
