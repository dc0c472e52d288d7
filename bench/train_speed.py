"""Seconds per training epoch of one method/encoder on a data set, as JSON on stdout.

Times ``--batches`` batches of a real epoch (after ``--warmup`` untimed batches) and extrapolates to
the full epoch; ``--batches 0`` times the whole epoch. Examples (2 cores)::

    python bench/train_speed.py --dataset gowalla --encoder lightgcn --method plain \
        --batch-size 2048 --negatives 1 --weight-decay 1e-4 --threads 2
    python bench/train_speed.py --dataset gowalla --encoder sage --method hashgnn --threads 2

The reference LightGCN-PyTorch epoch on gowalla (same settings) took 338.7 s on a 2-core machine
of this kind; the target is at least 5x faster.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

# Before torch loads OpenMP: idle threads sleep instead of spinning. On a loaded 2-core machine the
# default (spinning) made 2-thread batches up to 10x slower than 1-thread ones; sleeping costs
# nothing measurable when the machine is idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import scipy.sparse as sp
import torch

REFERENCE_LIGHTGCN_S = 338.7


def load_train(dataset: str) -> sp.csr_matrix:
    """Training matrix of a registered data set, a folder with train.txt/test.txt, or a table file."""
    os.environ.setdefault("HASHGNN_DATA_MIRROR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    from hashgnn.config import DataConfig
    from hashgnn.data import load_interactions

    return load_interactions(DataConfig(dataset=dataset, valid_fraction=0.0)).train


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="gowalla", help="registered name or folder with train.txt")
    ap.add_argument("--encoder", default="lightgcn", choices=["sage", "lightgcn"])
    ap.add_argument("--method", default="plain")
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the method's reference setting")
    ap.add_argument("--negatives", type=int, default=None, help="default: the method's reference setting")
    ap.add_argument("--weight-decay", type=float, default=None)
    ap.add_argument("--batches", type=int, default=60, help="batches to time (0: the whole epoch)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epoch", type=int, default=0, help="epoch index given to on_epoch_start (sets beta)")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--embed", action="store_true", help="also time embed() of all users and items")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    from hashgnn.config import ModelConfig, TrainConfig
    from hashgnn.model import build_model, train_defaults
    from hashgnn.train.loop import build_optimizer, train_epoch

    t0 = time.perf_counter()
    train = load_train(args.dataset)
    load_s = time.perf_counter() - t0
    mcfg = ModelConfig(method=args.method, encoder=args.encoder, bits=args.bits)
    tdict = train_defaults(mcfg)
    for k, v in (("batch_size", args.batch_size), ("negatives", args.negatives), ("weight_decay", args.weight_decay)):
        if v is not None:
            tdict[k] = v
    tcfg = TrainConfig(**tdict, seed=args.seed)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    model = build_model(mcfg, train, device, train_cfg=tcfg, seed=args.seed)
    opt = build_optimizer(model, tcfg)
    build_s = time.perf_counter() - t0
    gen = torch.Generator(device=device).manual_seed(args.seed)
    beta = model.on_epoch_start(args.epoch)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    n_batches = math.ceil(train.nnz / tcfg.batch_size)
    if args.warmup:
        train_epoch(model, opt, train, tcfg, 0, gen, beta=beta, progress=False, max_batches=args.warmup)
    sync()
    timed = n_batches if args.batches <= 0 else min(args.batches, n_batches)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    stats = train_epoch(model, opt, train, tcfg, 0, gen, beta=beta, progress=False, max_batches=timed)
    sync()
    secs = time.perf_counter() - t0
    per_batch = secs / timed
    out = {
        "dataset": args.dataset,
        "encoder": args.encoder,
        "method": args.method,
        "bits": args.bits,
        "batch_size": tcfg.batch_size,
        "negatives": tcfg.negatives,
        "weight_decay": tcfg.weight_decay,
        "threads": args.threads,
        "device": str(device),
        "n_users": train.shape[0],
        "n_items": train.shape[1],
        "n_edges": int(train.nnz),
        "batches_per_epoch": n_batches,
        "batches_timed": timed,
        "seconds_per_batch": round(per_batch, 5),
        "seconds_per_epoch": round(per_batch * n_batches, 2),
        "loss": round(stats["loss"], 5),
        "load_seconds": round(load_s, 2),
        "build_seconds": round(build_s, 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    if args.encoder == "lightgcn" and args.method == "plain":
        out["speedup_vs_reference_lightgcn"] = round(REFERENCE_LIGHTGCN_S / out["seconds_per_epoch"], 2)
    if args.embed:
        t0 = time.perf_counter()
        model.embed(gen)
        sync()
        out["embed_seconds"] = round(time.perf_counter() - t0, 2)
    json.dump(out, sys.stdout, indent=2)
    print()
    return out


if __name__ == "__main__":
    main()
