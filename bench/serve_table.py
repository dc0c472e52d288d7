"""Print a ``hashgnn bench serve --json`` result as the Markdown table of docs/SERVING.md.

python bench/serve_table.py bench/results/serve-gowalla-hot-path.json
"""

from __future__ import annotations

import json
import sys


def table(res: dict) -> str:
    """The Markdown rows of every (mode, clients) cell, then the index's own rates and the machine."""
    idx = res["index"]
    rows = [
        "| mode | clients | requests/s | p50 ms | p95 ms | p99 ms | failed | mean batch | / index 1 query per call | / index 1,000 per call |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ms(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1f}"

    for c in res["cells"]:
        r = idx[c["mode"]]
        rows.append(
            f"| {c['mode']} | {c['clients']} | {c['rps']:,.0f} | {ms(c['p50_ms'])} | {ms(c['p95_ms'])} | "
            f"{ms(c['p99_ms'])} | {c['failed']} | {c['mean_batch'] or 0:.1f} | "
            f"{c['rps'] / r['single_query_qps']:.0%} | {c['rps'] / r['batch_1000_qps']:.1%} |"
        )
    alone = "; ".join(
        f"{m} {r['single_query_qps']:,.0f} q/s one query per call, {r['batch_1000_qps']:,.0f} q/s 1,000 per call"
        for m, r in idx.items()
    )
    rows += [
        "",
        f"index alone (same process as the load generator, after the HTTP cells): {alone}",
        "",
        f"load average at the end: {res['load_average_at_end']:.1f}; machine: {res['machine']}",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        with open(path) as f:
            print(table(json.load(f)))
