"""The Markdown table of docs/SCALING.md from bench/results/search_scale.jsonl.

    python bench/search_scale_table.py bench/results/search_scale.jsonl

Exact rows: the runs timed in turns (``qps_all`` present); the newest such run per (items, bits,
k, method, substrings). faiss rows: the newest per (items, bits, k, method, params).
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    keep: dict[tuple, dict] = {}
    for r in rows:
        if r.get("check"):
            continue
        if r["method"] in ("linear", "mih") and "qps_all" not in r:
            continue  # single timings of the first run, superseded
        key = (r["items"], r["bits"], r["k"], r["method"], r.get("substrings"), json.dumps(r.get("params")))
        keep[key] = r
    print(
        "| items | bits | k | method | setting | queries/s (best of turns) | x linear | recall | exact | build s | notes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key in sorted(keep, key=lambda t: (t[0], t[1], t[2], t[3] != "linear", t[3], str(t[4]), t[5])):
        r = keep[key]
        setting = f"m = {r['substrings']}" if r["method"] == "mih" else ""
        if r.get("params"):
            setting = ", ".join(f"{a} {b}" for a, b in r["params"].items() if a != "train_sample")
        notes = ""
        if r["method"] == "linear":
            notes = f"k-th distance median {r['kth_distance_median']:.0f}"
        elif r["method"] == "mih":
            notes = (
                f"{r['mih_scanned']} of {r['queries']} queries scanned ({r['mih_scanned_predicted']} predicted); "
                f"{r['mih_mean_buckets']:,.0f} buckets, {r['mih_mean_candidates']:,.0f} candidates per query"
            )
        speed = f"{r['speedup_vs_linear']:.2f}" if "speedup_vs_linear" in r else ""
        print(
            f"| {r['items']:,} | {r['bits']} | {r['k']} | {r['method']} | {setting} | {r['qps']:,.0f} | {speed} | "
            f"{r['recall']:.3f} | {'yes' if r.get('exact') else 'no'} | {r['build_s']:.0f} | {notes} |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/search_scale.jsonl")
