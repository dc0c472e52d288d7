"""Produce the speed table of docs/BENCHMARKS.md by running `hashgnn bench retrieval` per row.

Each row is one subprocess running exactly the command printed in its last column, so every number
in the table can be reproduced by pasting that command. Results are also kept as JSON lines.

    python bench/retrieval_table.py                      # 10^5, 10^6, 10^7 items x 32, 64, 128 bits
    python bench/retrieval_table.py --items 1000000 --bits 64 --out /tmp/t.md

Run it on a quiet machine (the script records the load average before and after every row).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_row(n: int, bits: int, queries: int, k: int, threads: int) -> tuple[str, dict]:
    cmd = [
        "hashgnn",
        "bench",
        "retrieval",
        "--items",
        str(n),
        "--bits",
        str(bits),
        "--queries",
        str(queries),
        "--k",
        str(k),
        "--threads",
        str(threads),
        "--json",
    ]
    shown = " ".join(shlex.quote(c) for c in cmd)
    print(f"$ {shown}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out)
    res["wall_seconds"] = round(time.perf_counter() - t, 1)
    return shown, res


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def markdown(rows: list[tuple[str, dict]]) -> str:
    head = (
        "| items | bits | own Hamming q/s | compute limit q/s | faiss binary q/s (heap / counting) | own / faiss "
        "| hier. C=500 q/s | hier. C=1000 q/s | faiss IP q/s | torch IP q/s | Hamming / float | hier. C=1000 / float "
        "| recall@k hier. C=500 / C=1000 / Hamming vs float | bytes/item code / code+float / float | load avg start-end | command |"
    )
    sep = "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"
    lines = [head, sep]
    for cmd, r in rows:
        fd = r.get("faiss_hamming_detail", {})
        h = r.get("hierarchical", {})
        b = r["bytes_per_item"]
        lim = r.get("limit", {})
        lines.append(
            f"| {r['items']:,} | {r['bits']} | {fmt(r.get('own_hamming_qps'))} | {fmt(lim.get('compute_limit_qps'))} "
            f"| {fmt(fd.get('heap'))} / {fmt(fd.get('counting'))} | {fmt(r.get('own_over_faiss'), 1)}x "
            f"| {fmt(h.get('500', {}).get('qps'))} | {fmt(h.get('1000', {}).get('qps'))} "
            f"| {fmt(r.get('float_ip_qps'))} | {fmt(r.get('torch_ip_qps'))} | {fmt(r.get('hamming_over_float'), 1)}x "
            f"| {fmt(r.get('hierarchical_over_float'), 1)}x "
            f"| {fmt(h.get('500', {}).get('recall_vs_float'), 3)} / {fmt(h.get('1000', {}).get('recall_vs_float'), 3)} / "
            f"{fmt(r.get('hamming_recall_vs_float'), 3)} "
            f"| {b.get('own_hamming')} / {b.get('hierarchical')} / {b.get('float_ip')} "
            f"| {fmt(r.get('load_average_at_start'), 2)}–{fmt(r.get('load_average_at_end'), 2)} | `{cmd}` |"
        )
    return "\n".join(lines)


def limits(rows: list[tuple[str, dict]]) -> str:
    """Per code width: the popcount rate and the streaming rate over the largest corpus measured."""
    out = [
        "| bits | word | popcounts/s per core (measured) | stream of the codes (items, GB/s, all threads) |",
        "|---|---|---|---|",
    ]
    best: dict[int, dict] = {}
    for _, r in rows:
        if "limit" in r and (r["bits"] not in best or r["items"] > best[r["bits"]]["items"]):
            best[r["bits"]] = r
    for bits in sorted(best):
        r = best[bits]
        lim = r["limit"]
        out.append(
            f"| {bits} | {lim['word_bits']}-bit x {lim['words_per_code']} "
            f"| {lim['popcounts_per_s_per_core'] / 1e9:.1f} G "
            f"| {r['items']:,} items: {fmt(lim.get('stream_bytes_per_s', 0) / 1e9, 1)} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument("--bits", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--queries-1e7", type=int, default=200, help="queries for rows of 10^7 items or more")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", type=Path, default=None, help="write the markdown here (default: stdout)")
    ap.add_argument("--jsonl", type=Path, default=ROOT / "bench" / "results" / "retrieval_table.jsonl")
    ap.add_argument("--from-jsonl", type=Path, default=None, help="only format rows saved earlier, run nothing")
    args = ap.parse_args()

    rows = []
    if args.from_jsonl:
        for line in args.from_jsonl.read_text().splitlines():
            r = json.loads(line)
            rows.append((r.pop("command"), r))
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    with args.jsonl.open("a") as log:
        for n in [] if args.from_jsonl else args.items:
            for bits in args.bits:
                q = args.queries_1e7 if n >= 10_000_000 else args.queries
                cmd, res = run_row(n, bits, q, args.k, args.threads)
                log.write(json.dumps({"command": cmd, **res}) + "\n")
                log.flush()
                rows.append((cmd, res))
    text = (
        f"Machine: {rows[0][1]['machine']}; {args.threads} threads; k = {args.k}; "
        f"generated {time.strftime('%Y-%m-%d %H:%M')}.\n\n"
        + markdown(rows)
        + "\n\nArithmetic limits:\n\n"
        + limits(rows)
        + "\n"
    )
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
