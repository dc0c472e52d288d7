"""Markdown table of the training runs that bench/gpu_check.sh recorded (its runs.jsonl).

    python bench/gpu_summary.py bench/results/gpu-h200/runs-4-side-by-side.jsonl

One row per run: epochs trained, seconds per epoch, and test Recall@20 / NDCG@20 in the three
retrieval modes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hashgnn.methods import MODES


def table(path: Path) -> str:
    """The Markdown table of one runs.jsonl file."""
    lines = [
        "| run | epochs (best) | s / epoch | Hamming | hierarchical (C = 500) | continuous (z) |",
        "|---|---|---|---|---|---|",
    ]
    for raw in path.read_text().splitlines():
        row = json.loads(raw)
        f = row.get("final")
        if not f:
            lines.append(f"| {row['name']} | no final metrics (failed; see log.txt) | | | | |")
            continue
        cells = [f"{f['test'][m]['recall@20']:.4f} / {f['test'][m]['ndcg@20']:.4f}" for m in MODES]
        lines.append(
            f"| {row['name']} | {f['epochs_run']} ({f['best_epoch']}) | {f['seconds_per_epoch']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="runs.jsonl files written by bench/gpu_check.sh")
    for p in ap.parse_args().runs:
        print(f"{p}:\n\n{table(p)}\n")


if __name__ == "__main__":
    main()
