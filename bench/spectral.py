"""Training-free spectral reference and codes hashed from it: accuracy and wall time per stage.

One command per table row (docs/RESULTS.md, "Spectral reference"). Hyper-parameters are picked with
``--split valid`` (a 10% per-user carve-out of train, hashgnn.data.carve_validation, seed 2020;
scored against the carved items, training items masked); the chosen row is then rerun with
``--split test``, which refits on the full training split and scores the test split once.

    python bench/spectral.py --dataset gowalla --split valid --dim 256 512 --gamma 0 0.5
    python bench/spectral.py --dataset gowalla --split test --dim 512 --gamma 0.5 \\
        --bits 64 32 --codes sign pca-itq --ties id popularity continuous

Each (dim, alpha, beta, gamma, power) (``--filter bspm``: each (dim, sharpen, ideal-weight, ideal-dim,
out-dim)) gives one JSON row appended to
bench/results/spectral-<dataset>-<split>.jsonl with the continuous Recall/NDCG@20 and, per
``--bits`` and ``--codes``, Hamming (under each ``--ties`` rule) and hierarchical (``--candidates``
Hamming candidates re-ranked by the continuous score). The factors are computed once per alpha at
the largest dim. Stage wall times go to stderr and into the row. ``--eval-users N`` scores a seeded
random subset of N users (for fast grids; the row says so).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

CODES = ("sign", "pca-rr", "pca-itq", "gauss", "mips-itq")


def make_codes(kind: str, user: np.ndarray, item: np.ndarray, bits: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """±1 codes of one kind (see --codes); 'sign' takes the leading ``bits`` spectral dims."""
    from hashgnn.codes.itq import itq_codes, mips_augment

    if kind == "sign":
        if bits > user.shape[1]:
            raise SystemExit(f"'sign' needs dim >= bits ({bits})")
        return np.where(user[:, :bits] >= 0, 1.0, -1.0), np.where(item[:, :bits] >= 0, 1.0, -1.0)
    if kind == "pca-rr":
        uc, ic, _ = itq_codes(user, item, bits, iters=0, seed=seed)
    elif kind == "pca-itq":
        uc, ic, _ = itq_codes(user, item, bits, iters=50, seed=seed)
    elif kind == "gauss":
        uc, ic, _ = itq_codes(user, item, bits, iters=0, seed=seed, projection="gaussian")
    elif kind == "mips-itq":
        ua, ia = mips_augment(user, item)
        uc, ic, _ = itq_codes(ua, ia, bits, iters=50, seed=seed)
    else:
        raise SystemExit(f"unknown codes {kind!r}; one of {CODES}")
    return uc, ic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="gowalla")
    ap.add_argument("--split", choices=["valid", "test"], default="valid")
    ap.add_argument("--valid-fraction", type=float, default=0.1)
    ap.add_argument("--valid-seed", type=int, default=2020)
    ap.add_argument("--dim", type=int, nargs="+", default=[512])
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.0])
    ap.add_argument("--beta", type=float, nargs="+", default=[0.0])
    ap.add_argument("--gamma", type=float, nargs="+", default=[0.5])
    ap.add_argument("--power", type=float, nargs="+", default=[0.0])
    ap.add_argument("--filter", choices=["exp", "bspm"], default="exp", help="spectral.filter (hashgnn/config.py)")
    ap.add_argument("--sharpen", type=float, nargs="+", default=[2.5], help="bspm: sharpening time h")
    ap.add_argument("--ideal-weight", type=float, nargs="+", default=[0.2], help="bspm: ideal low-pass weight")
    ap.add_argument("--ideal-dim", type=int, nargs="+", default=[448], help="bspm: ideal low-pass triplets")
    ap.add_argument(
        "--out-dim", type=int, nargs="+", default=[0], help="bspm: balanced served width (0: dim + ideal-dim)"
    )
    ap.add_argument("--power-iters", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bits", type=int, nargs="*", default=[])
    ap.add_argument("--codes", nargs="*", default=["pca-itq"], choices=CODES)
    ap.add_argument(
        "--code-dim",
        type=int,
        default=None,
        help="hash the leading CODE_DIM dims of the embedding (default: all of --dim)",
    )
    ap.add_argument(
        "--pop-bits",
        type=int,
        nargs="+",
        default=[0],
        help="of the --bits, this many are popularity bits (hashgnn.codes.itq.popularity_bits)",
    )
    ap.add_argument("--ties", nargs="*", default=["id"], choices=["id", "popularity", "continuous"])
    ap.add_argument("--candidates", type=int, default=500)
    ap.add_argument("--eval-users", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="keep the SVD factors here (npz per data set, split, alpha, k, power iters, seed)",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from hashgnn.codes.itq import popularity_bits
    from hashgnn.codes.packing import pack_codes
    from hashgnn.data import carve_validation, load_interactions
    from hashgnn.errors import DataWarning
    from hashgnn.eval import HammingScorer, HierarchicalScorer, InnerProductScorer, evaluate
    from hashgnn.eval.ties import TieBreakScorer, popularity_ranks
    from hashgnn.model.spectral import (
        SpectralFactors,
        bspm_vectors,
        embed_factors,
        spectral_factors,
    )

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        data = load_interactions(args.dataset, progress=False)
    if args.split == "valid":
        data = carve_validation(data, args.valid_fraction, args.valid_seed)
        target = data.valid
    else:
        target = data.test
    train = data.train
    log(f"load {time.perf_counter() - t0:.1f}s  {train.shape} train {train.nnz} target {target.nnz}")
    users = None
    if args.eval_users:
        users = np.sort(np.random.default_rng(0).choice(train.shape[0], args.eval_users, replace=False))

    def score(scorer) -> dict:
        r = evaluate(scorer, train, target, [20], progress=False, users=users)
        return {"recall@20": r["recall@20"], "ndcg@20": r["ndcg@20"], "n_users": r["n_users"]}

    load = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"spectral-{args.dataset}-{args.split}.jsonl"
    pop = popularity_ranks(train) if "popularity" in args.ties else None
    for alpha in args.alpha:
        t = time.perf_counter()
        width = max(args.dim + (args.ideal_dim if args.filter == "bspm" else []))
        key = f"{args.dataset}-{args.split}-a{alpha}-k{width}-it{args.power_iters}-s{args.seed}.npz"
        cached = args.cache / key if args.cache else None
        if cached is not None and cached.exists():
            z = np.load(cached)
            factors = SpectralFactors(z["u"], z["s"], z["v"], z["du"], z["di"], float(z["alpha"]))
            svd_s = float(z["svd_s"])  # the time the factors took when computed, not the load
        else:
            factors = spectral_factors(train, width, alpha=alpha, power_iters=args.power_iters, seed=args.seed)
            svd_s = time.perf_counter() - t
            if cached is not None:
                args.cache.mkdir(parents=True, exist_ok=True)
                np.savez(
                    cached,
                    u=factors.u,
                    s=factors.s,
                    v=factors.v,
                    du=factors.user_degree,
                    di=factors.item_degree,
                    alpha=alpha,
                    svd_s=svd_s,
                )
        log(f"svd alpha={alpha} k={width} power_iters={args.power_iters}: {svd_s:.1f}s")
        if args.filter == "bspm":
            names = ("dim", "sharpen", "ideal_weight", "ideal_dim", "out_dim")
            grid = itertools.product(args.dim, args.sharpen, args.ideal_weight, args.ideal_dim, args.out_dim)
        else:
            names = ("dim", "beta", "gamma", "power")
            grid = itertools.product(args.dim, args.beta, args.gamma, args.power)
        for values in grid:
            setting = dict(zip(names, values, strict=True))
            row: dict = {
                "dataset": args.dataset,
                "split": args.split,
                "filter": args.filter,
                "alpha": alpha,
                **setting,
                "power_iters": args.power_iters,
                "seed": args.seed,
                "svd_s": round(svd_s, 1),
                "eval_users": args.eval_users,
            }
            t = time.perf_counter()
            if args.filter == "bspm":
                dim, h, w, idim, odim = values
                user, item, _ = bspm_vectors(train, factors, dim, h, w, idim, odim or None)
                row["filter_s"] = round(time.perf_counter() - t, 1)
                t = time.perf_counter()
            else:
                dim, beta, gamma, power = values
                user, item = embed_factors(factors, dim, beta=beta, gamma=gamma, power=power)
            row["continuous"] = score(InnerProductScorer(user, item))
            row["continuous"]["eval_s"] = round(time.perf_counter() - t, 1)
            log(f"{setting} alpha={alpha}: continuous {row['continuous']}")
            cu, ci = (user, item) if args.code_dim is None else (user[:, : args.code_dim], item[:, : args.code_dim])
            row["code_dim"] = cu.shape[1]
            for bits, kind, pb in itertools.product(args.bits, args.codes, args.pop_bits):
                t = time.perf_counter()
                uc, ic = make_codes(kind, cu, ci, bits - pb, args.seed)
                if pb:
                    pu, pi = popularity_bits(factors.item_degree, len(uc), pb)
                    uc, ic = np.hstack([uc, pu]), np.hstack([ic, pi])
                up, ip = pack_codes(uc), pack_codes(ic)
                entry: dict = {"hash_s": round(time.perf_counter() - t, 1), "pop_bits": pb}
                ham = HammingScorer(up, ip, bits)
                for rule in args.ties:
                    if rule == "id":
                        scorer = ham
                    elif rule == "popularity":
                        scorer = TieBreakScorer(ham, pop, bits, train.shape[1])
                    else:
                        scorer = TieBreakScorer(ham, InnerProductScorer(user, item), bits, train.shape[1])
                    entry[f"hamming_ties_{rule}"] = score(scorer)
                entry["hierarchical"] = score(HierarchicalScorer(up, ip, bits, user, item, args.candidates))
                entry["candidates"] = args.candidates
                row[f"codes_{kind}_{bits}" + (f"_pop{pb}" if pb else "")] = entry
                brief = {k: (round(v["recall@20"], 4) if isinstance(v, dict) else v) for k, v in entry.items()}
                log(f"  {kind} {bits} bits ({pb} popularity): recall@20 {brief}")
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            row["load_avg"] = [round(x, 2) for x in load]
            row["machine"] = platform.processor() or platform.machine()
            row["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
    log(f"wrote {out}; total {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
