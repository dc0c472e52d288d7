"""Seconds per epoch of the codes' distillation step (``spectral_distill``): fused against autograd.

    python bench/distill_speed.py --dataset gowalla --threads 2 --epochs 2 --query-weight 1

One epoch of :func:`hashgnn.codes.distill.distill_codes` on a data set's training matrix (the
validation carve-out of the configs, seed 2020), with ``fused=True`` (the loss's gradient written
out in one (2B, I) buffer, fused Adam: what runs train with) and ``fused=False`` (the same loss
through autograd, unfused Adam: the reference), in alternating turns within one process after an untimed warm-up, so the
ratio is measured on one machine at one time. The start and the targets are random (a seeded
Gaussian start, each user's targets drawn among their unseen items): the time of a step does not
depend on what the codes mean, and the teacher's fit (minutes on gowalla) is not what is measured.
Batch size, temperature and loss weights are those of ``configs/<data set>-query.yaml``. One JSON
row per turn on stdout (and appended to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from hashgnn.codes.distill import distill_codes
from hashgnn.config import DataConfig
from hashgnn.data import carve_validation, load_interactions
from hashgnn.environment import machine_info
from hashgnn.memory import keep_freed_memory


def random_targets(train: sp.csr_matrix, r: int, rng: np.random.Generator, chunk: int = 2048) -> np.ndarray:
    """(U, r) distinct unseen items per user, drawn at random (-1 where a user has fewer)."""
    n_users, n_items = train.shape
    out = np.empty((n_users, r), np.int64)
    for s in range(0, n_users, chunk):
        block = train[s : s + chunk]
        scores = rng.random((block.shape[0], n_items), dtype=np.float32)
        scores[np.repeat(np.arange(block.shape[0]), np.diff(block.indptr)), block.indices] = -1.0
        top = np.argpartition(-scores, r, axis=1)[:, :r]
        out[s : s + chunk] = np.where(np.take_along_axis(scores, top, 1) >= 0, top, -1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="gowalla")
    ap.add_argument("--mirror", default=None, help="data mirror (default: $HASHGNN_DATA_MIRROR)")
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--top-r", type=int, default=100)
    ap.add_argument("--batch-users", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=8.0)
    ap.add_argument("--positive-weight", type=float, default=1.0)
    ap.add_argument("--query-weight", type=float, default=1.0, help="0: the codes config, 1: the query config")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per turn")
    ap.add_argument("--turns", type=int, default=2, help="turns of each implementation, alternating")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    keep_freed_memory()  # as `hashgnn train` does
    torch.set_num_threads(args.threads)
    data = load_interactions(DataConfig(dataset=args.dataset, mirror=args.mirror))
    train = sp.csr_matrix(carve_validation(data, 0.1, 2020).train)
    rng = np.random.default_rng(args.seed)
    targets = random_targets(train, args.top_r, rng)
    init_u = rng.standard_normal((train.shape[0], args.bits)).astype(np.float32)
    init_i = rng.standard_normal((train.shape[1], args.bits)).astype(np.float32)
    kw = {
        "epochs": args.epochs,
        "temperature": args.temperature,
        "batch_users": args.batch_users,
        "positive_weight": args.positive_weight,
        "query_weight": args.query_weight,
        "seed": args.seed,
    }
    cpu = machine_info()["cpu"]
    warm = 2 * args.batch_users  # first calls pay one-off costs (allocator, kernel dispatch): not timed
    for fused in (True, False):
        distill_codes(init_u[:warm], init_i, targets[:warm], train[:warm], fused=fused, **kw)  # type: ignore[arg-type]
    for turn in range(args.turns):
        for fused in (True, False):
            t0 = time.perf_counter()
            res = distill_codes(init_u, init_i, targets, train, fused=fused, **kw)  # type: ignore[arg-type]
            sec = (time.perf_counter() - t0) / args.epochs
            row = {
                "bench": "distill_speed",
                "dataset": args.dataset,
                "users": train.shape[0],
                "items": train.shape[1],
                "query_weight": args.query_weight,
                "implementation": "fused" if fused else "autograd",
                "turn": turn,
                "seconds_per_epoch": round(sec, 2),
                "last_loss": round(res.history[-1]["loss"], 5),
                "threads": args.threads,
                "cpu": cpu,
                "date": time.strftime("%Y-%m-%d %H:%M"),
            }
            print(json.dumps(row), flush=True)
            if args.out is not None:
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
