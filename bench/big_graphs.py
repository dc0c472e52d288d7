"""Epoch time and peak memory (RSS) of training on synthetic power-law graphs, both encoders.

    nice -n 10 .venv/bin/python bench/big_graphs.py --edges 1e6 1e7 --max-batches 20 \\
        --data-dir /tmp/hashgnn-synth --out bench/results/big_graphs.jsonl

For every edge count E the graph is made once with ``hashgnn data synth`` (E / 50 users, E / 150
items, seed 0) as a CSV table in ``--data-dir``; then, in a fresh process per (E, encoder), the
table is loaded as ``hashgnn train --dataset TABLE`` loads it (pyarrow CSV reader, 80/20 split per
user, 10% of train carved for validation), the model is built, ``--max-batches`` training steps run
(the first one is not timed: allocations), and the codes of all nodes are exported (what validation
and the final export do before ranking). The epoch time is the measured seconds per step times the
steps of a full epoch (an extrapolation when ``--max-batches`` is smaller, as the table says); the
peak RSS is the process's high-water mark (``VmHWM``), loading included, read after each stage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def _hwm_gib() -> tuple[float, float]:
    """(peak RSS so far, current RSS) of this process in GiB, from /proc/self/status."""
    vals = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmHWM:", "VmRSS:")):
            k, v = line.split(":")
            vals[k] = int(v.split()[0]) / 2**20
    return vals["VmHWM"], vals["VmRSS"]


def child(args: argparse.Namespace) -> None:
    """Load, build, train ``max_batches`` steps, export; print one JSON row."""
    import torch

    from hashgnn.config import RunConfig
    from hashgnn.data import carve_validation, load_interactions
    from hashgnn.data.table import read_table
    from hashgnn.memory import keep_freed_memory
    from hashgnn.model import build_model
    from hashgnn.train.loop import build_optimizer, train_epoch

    keep_freed_memory()  # as `hashgnn train` does
    torch.set_num_threads(args.threads)
    table = Path(args.table)
    row: dict = {"edges_requested": args.edges_n, "encoder": args.encoder, "table": str(table)}
    t0 = time.perf_counter()
    rows = read_table(table)
    row["read_table_s"] = round(time.perf_counter() - t0, 2)
    del rows
    cfg = RunConfig.from_dict(
        {
            "data": {"dataset": str(table), "valid_fraction": 0.1},
            "model": {"method": "hashgnn", "encoder": args.encoder, "bits": 32},
            "train": {"batch_size": args.batch_size, "seed": 1, "device": "cpu"},
        }
    )
    t0 = time.perf_counter()
    data = carve_validation(load_interactions(cfg.data, progress=False), 0.1, cfg.data.seed)
    row["load_s"] = round(time.perf_counter() - t0, 2)
    row["peak_after_load_gib"], row["rss_after_load_gib"] = (round(x, 3) for x in _hwm_gib())
    row.update(n_users=data.n_users, n_items=data.n_items, n_train=int(data.train.nnz))
    t0 = time.perf_counter()
    torch.manual_seed(1)
    model = build_model(cfg.model, data.train, "cpu", train_cfg=cfg.train)
    opt = build_optimizer(model, cfg.train)
    gen = torch.Generator().manual_seed(1)
    row["build_s"] = round(time.perf_counter() - t0, 2)
    beta = model.on_epoch_start(0)
    if not args.no_warmup:
        train_epoch(model, opt, data.train, cfg.train, 0, gen, beta=beta, progress=False, max_batches=1)
    stats = train_epoch(
        model, opt, data.train, cfg.train, 0, gen, beta=beta, progress=False, max_batches=args.max_batches
    )
    steps = int(stats["batches"])
    per_step = stats["seconds"] / steps
    full = math.ceil(data.train.nnz / cfg.train.batch_size)
    row.update(
        batch_size=cfg.train.batch_size,
        steps_timed=steps,
        steps_per_epoch=full,
        seconds_per_step=round(per_step, 4),
        epoch_s=round(per_step * full, 1),
        epoch_extrapolated=steps < full,
        loss=round(stats["loss"], 4),
    )
    row["peak_after_train_gib"], _ = (round(x, 3) for x in _hwm_gib())
    row["warmup"] = not args.no_warmup
    if not args.no_embed:
        t0 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            _ = model.embed(torch.Generator().manual_seed(2))
        row["embed_s"] = round(time.perf_counter() - t0, 2)
    row["peak_gib"], row["rss_end_gib"] = (round(x, 3) for x in _hwm_gib())
    print(json.dumps(row), flush=True)


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def markdown(path: Path) -> str:
    """The docs/SCALING.md table of a results file (the newest row per edge count and encoder)."""
    rows: dict[tuple[int, str], dict] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if "error" not in r:
            rows[(r["edges_requested"], r["encoder"])] = r
    out = [
        "| edges | encoder | users / items | read table s | load s | s / step (steps timed) | epoch s (steps) "
        "| peak RSS after load GiB | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (n, enc), r in sorted(rows.items()):
        epoch = f"{r['epoch_s']:,.0f} ({r['steps_per_epoch']:,})" + (" extrapolated" if r["epoch_extrapolated"] else "")
        out.append(
            f"| {n:.0e} | {enc} | {r['n_users']:,} / {r['n_items']:,} | {r['read_table_s']} | {r['load_s']} | "
            f"{r['seconds_per_step']} ({r['steps_timed']}) | {epoch} | {r['peak_after_load_gib']:.2f} | "
            f"{r['peak_gib']:.2f} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edges", type=float, nargs="+", default=[1e6, 1e7])
    ap.add_argument("--encoders", nargs="+", default=["sage", "lightgcn"])
    ap.add_argument("--max-batches", type=int, default=20, help="timed training steps per run")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/hashgnn-synth"))
    ap.add_argument("--keep-data", action="store_true", help="keep the synthetic tables (default: delete after)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/big_graphs.jsonl"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--table", help=argparse.SUPPRESS)
    ap.add_argument("--encoder", help=argparse.SUPPRESS)
    ap.add_argument("--edges-n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--no-warmup", action="store_true", help="time the first step too (saves a step)")
    ap.add_argument("--no-embed", action="store_true", help="skip the export of all nodes' vectors")
    ap.add_argument("--markdown", type=Path, help="print the table of this results file and exit")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(args.markdown))
        return
    if args.child:
        child(args)
        return
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    args.data_dir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    common = {
        "date": time.strftime("%F %T %Z"),
        "cpu": _cpu(),
        "nproc": os.cpu_count(),
        "load_avg_start": os.getloadavg()[0],
    }
    for e in args.edges:
        n = int(e)
        table = args.data_dir / f"synth-{n}.csv"
        synth = {}
        if not table.exists():
            cmd = [sys.executable, "-m", "hashgnn", "data", "synth", "--users", str(n // 50), "--items"]
            cmd += [str(n // 150), "--edges", str(n), "--seed", "0", "--out", str(table), "--json"]
            t0 = time.perf_counter()
            res = subprocess.run(
                ["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, env=env, check=False
            )
            if res.returncode != 0:
                raise SystemExit(res.stderr[-3000:])
            synth = json.loads(res.stdout)
            synth["synth_wall_s"] = round(time.perf_counter() - t0, 2)
            synth["synth_peak_gib"] = round(int(res.stderr.strip().splitlines()[-1]) / 2**20, 3)
            synth["table_bytes"] = table.stat().st_size
        for enc in args.encoders:
            cmd = [sys.executable, __file__, "--child", "--table", str(table), "--encoder", enc, "--edges-n", str(n)]
            cmd += ["--max-batches", str(args.max_batches), "--batch-size", str(args.batch_size)]
            cmd += ["--threads", str(args.threads)]
            cmd += ["--no-warmup"] * args.no_warmup + ["--no-embed"] * args.no_embed
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if res.returncode != 0:
                row = {"edges_requested": n, "encoder": enc, "error": res.stderr[-2000:]}
            else:
                row = json.loads(res.stdout.strip().splitlines()[-1])
            row.update(common, synth=synth, load_avg_end=os.getloadavg()[0])
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
        if not args.keep_data:
            table.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
