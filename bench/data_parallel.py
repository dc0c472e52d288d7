"""1 training process against 2 (``hashgnn train --nproc 2``): validation Recall@20 over seeds, and speed.

    nice -n 10 .venv/bin/python bench/data_parallel.py --seeds 1 2 3 --out bench/results/distributed.jsonl

Every seed trains the same config twice, once with one process and once with two (gloo, the same
global batch), and records the best validation Recall@20, the seconds per epoch and the training
edges per second (over all processes). The spread between seeds of one setting is the noise that a
difference between the settings is measured against (docs/SCALING.md). ``--config`` picks another
config; ``--set`` overrides its fields like ``hashgnn train --set``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The small config of the tests (tests/test_train_distributed.py): seconds per run.
CONFIG = {
    "data": {"dataset": "music_toy", "valid_fraction": 0.1},
    "model": {
        "method": "hashgnn",
        "encoder": "lightgcn",
        "bits": 16,
        "lightgcn_dim": 16,
        "lightgcn_layers": 2,
        "beta_schedule": "constant",
    },
    "train": {"epochs": 6, "batch_size": 512, "negatives": 2, "lr": 0.01, "device": "cpu"},
    "eval": {"ks": [20], "candidates": 100, "modes": ["hamming"]},
}


def train(cfg_path: Path, out: Path, seed: int, nproc: int, threads: int | None, extra: list[str]) -> dict:
    """One ``hashgnn train`` run; its final metrics plus the wall time of the command."""
    cmd = [sys.executable, "-m", "hashgnn", "train", "-c", str(cfg_path), "--out", str(out), "--seed", str(seed)]
    cmd += ["--quiet", "--json", "--nproc", str(nproc), *extra]
    if threads:
        cmd += ["--threads", str(threads)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    final = json.loads(res.stdout)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    n_edges = sum(r["batches"] for r in rows)  # batches per epoch of one process, for the edges below
    epoch_s = statistics.median(r["seconds"] for r in rows)
    return {
        "seed": seed,
        "nproc": nproc,
        "valid_recall@20": final["best_valid_recall@20"],
        "test_recall@20": final["test"]["hamming"]["recall@20"],
        "seconds_per_epoch_median": epoch_s,
        "wall_s": wall,
        "epochs": len(rows),
        "batches": n_edges,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--config", type=Path, default=None, help="a run config (default: the tests' small one)")
    ap.add_argument("--set", dest="settings", action="append", default=[], help="section.key=value")
    ap.add_argument("--threads-one", type=int, default=2, help="threads of the one-process run (the machine's cores)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/distributed.jsonl"))
    args = ap.parse_args()
    extra = [a for s in args.settings for a in ("--set", s)]
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "cfg.yaml"
        if args.config:
            cfg_path.write_text(args.config.read_text())
        else:
            import yaml

            cfg_path.write_text(yaml.safe_dump(CONFIG))
        for seed in args.seeds:
            for nproc in (1, 2):
                r = train(
                    cfg_path, Path(tmp) / f"s{seed}-n{nproc}", seed, nproc, args.threads_one if nproc == 1 else 1, extra
                )
                r.update(
                    config=str(args.config or "bench default"), settings=args.settings, date=time.strftime("%F %T")
                )
                rows.append(r)
                print(json.dumps(r), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    for nproc in (1, 2):
        v = [r["valid_recall@20"] for r in rows if r["nproc"] == nproc]
        s = [r["seconds_per_epoch_median"] for r in rows if r["nproc"] == nproc]
        sd = statistics.stdev(v) if len(v) > 1 else float("nan")
        print(
            f"nproc={nproc}: valid Recall@20 mean {statistics.mean(v):.4f} sd {sd:.4f} "
            f"(min {min(v):.4f}, max {max(v):.4f}); s/epoch median {statistics.median(s):.3f}"
        )
    diffs = [
        a["valid_recall@20"] - b["valid_recall@20"]
        for a, b in zip([r for r in rows if r["nproc"] == 2], [r for r in rows if r["nproc"] == 1], strict=True)
    ]
    print(f"2-process minus 1-process, per seed: {[round(d, 4) for d in diffs]}")


if __name__ == "__main__":
    main()
