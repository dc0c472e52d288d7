"""Validation curves of ``spectral_distill`` variants from one teacher fit (an ablation bench).

``hashgnn train --config configs/<data set>-codes.yaml`` fits the spectral teacher twice per run
(carve-out and refit; about 10 minutes on gowalla), so an ablation of the distillation alone spends
most of its time on teachers. This bench does step 1 of the fit protocol (hashgnn/train/fitted.py)
only: the teacher is fitted once on the validation carve-out (cached on disk with ``--cache``), then
every variant trains codes from the same start and targets and is validated in Hamming mode (ties:
the config's rule, as served) every ``--eval-every`` epochs. Nothing touches the test split; the
refinement rounds are not run (``distill.refine_rounds`` is ignored). ``distill.ste=none`` trains
the same objective without quantisation and validates the real vectors by inner product: the
ceiling of a ``bits``-wide model under this objective; ``sphere``, ``items-only`` and ``users-only``
(``hashgnn.codes.distill.DIAGNOSTIC_STE``) lift one constraint of the codes each. With
``distill.query_weight`` > 0 each validation row also gives ``valid_query_recall@20``, the
ranking of the trained query vectors against the item codes (the run's continuous mode). A variant is a name and
``section.key=value`` settings on the config, as ``--set`` takes them, of the ``distill``, ``train``
and ``eval`` sections only (the teacher and the codes' start are shared; other settings go in
``--set``, one bench run per value). A variant's ``train.seed`` seeds its distillation only: the
start's ITQ rotation comes from the base config's seed::

    python bench/distill_ablation.py --config configs/lastfm-codes.yaml --epochs 60 \\
        --variant base --variant gauss:distill.ste=gauss --variant decor:distill.decorrelation_weight=1 \\
        --out bench/results/distill_ablation-lastfm.jsonl

Each variant writes one JSON row per validation (variant, epoch, valid_recall@20, seconds) and a
summary row (best epoch and score).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hashgnn.codes.distill import DIAGNOSTIC_STE, continuous_start, distill_codes, teacher_top_r
from hashgnn.config import DistillConfig, RunConfig, parse_setting
from hashgnn.data import carve_validation, load_interactions
from hashgnn.environment import machine_info
from hashgnn.eval.evaluator import evaluate_ranking
from hashgnn.index.recommend import Retriever
from hashgnn.train.fitted import VALID_K, Fitted, _codes, fit_spectral
from hashgnn.train.run import evaluate_codes

VARIANT_SECTIONS = ("distill", "train", "eval")  # what a variant may change: not the teacher, split or start


def _apply(cfg: RunConfig, settings: list[str]) -> RunConfig:
    """``cfg`` with ``section.key=value`` settings (the ``--set`` syntax)."""
    for item in settings:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise SystemExit(f"setting {item!r}: expected section.key=value")
        sec = getattr(cfg, section)
        sec = dataclasses.replace(sec, **{name: parse_setting(type(sec), name, value.strip())})
        cfg = dataclasses.replace(cfg, **{section: sec})
    return cfg


def _teacher(cfg: RunConfig, train: Any, cache: Path | None) -> dict[str, np.ndarray]:
    """The carve-out teacher's vectors, the students' start and the targets, from ``cache`` if there."""
    s = cfg.spectral
    key = f"{cfg.data.dataset}-{s.filter}-{s.dim}-{s.ideal_dim}-{s.sharpen}-{s.ideal_weight}-{s.power_iters}"
    key += f"-{s.code_dim}-{s.popularity_bits}-{cfg.model.bits}-{cfg.distill.top_r}-{cfg.train.seed}"
    path = None if cache is None else cache / f"teacher-{key}.npz"
    if path is not None and path.exists():
        with np.load(path) as z:
            return dict(z)
    t0 = time.perf_counter()
    f = fit_spectral(cfg, train, None, None, False)
    assert f.user_x is not None and f.item_x is not None
    targets = teacher_top_r(f.user_z, f.item_z, train, min(cfg.distill.top_r, train.shape[1]))
    out = {"uz": f.user_z, "iz": f.item_z, "ux": f.user_x, "ix": f.item_x, "targets": targets}
    print(json.dumps({"teacher": key, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="a spectral_distill config (configs/*-codes.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="S.K=V", help="a setting for every variant")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME[:S.K=V,...]",
        help="a variant: a name, then settings separated by commas (none: the config)",
    )
    ap.add_argument("--epochs", type=int, default=None, help="epochs per variant (default: the config's)")
    ap.add_argument("--eval-every", type=int, default=None, help="validate every N epochs (default: the config's)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the config's)")
    ap.add_argument("--cache", type=Path, default=None, help="folder for the teacher (reused across calls)")
    ap.add_argument("--mirror", default=None, help="data mirror (default: $HASHGNN_DATA_MIRROR)")
    ap.add_argument("--out", type=Path, default=None, help="append the JSON rows to this file")
    ap.add_argument(
        "--weighted",
        action="append",
        default=[],
        metavar="PLANES:STEP",
        help="for a variant with query vectors: validate the weighted mode (query magnitudes quantised to "
        "PLANES bits with STEP x the mean magnitude) at the picked epoch; repeat for a grid",
    )
    args = ap.parse_args()

    base = _apply(RunConfig.load(args.config), args.set)
    if args.mirror:
        base = dataclasses.replace(base, data=dataclasses.replace(base.data, mirror=args.mirror))
    from hashgnn.memory import keep_freed_memory

    keep_freed_memory()  # as `hashgnn train` does: without it, half of a gowalla epoch is page faults
    threads = args.threads or base.train.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    data = load_interactions(base.data)
    split = carve_validation(data, base.data.valid_fraction or 0.1, base.data.seed)
    variants = []
    for spec in args.variant or ["config"]:
        name, _, rest = spec.partition(":")
        variants.append((name, [s for s in rest.split(",") if s]))
    for name, settings in variants:  # before the teacher's fit, which takes minutes on gowalla
        fixed = [s for s in settings if s.split(".", 1)[0] not in VARIANT_SECTIONS]
        if fixed:
            # the teacher, the split and the codes' start are built once, from --config and --set
            raise SystemExit(
                f"variant {name}: {', '.join(fixed)} would change the teacher or the start, which every "
                f"variant shares; a variant may set only {', '.join(VARIANT_SECTIONS)} keys (pass the "
                "others with --set, one bench run per value)"
            )
    teacher = _teacher(base, split.train, args.cache)
    machine = {"cpu": machine_info()["cpu"], "threads": torch.get_num_threads()}

    def emit(row: dict[str, Any]) -> None:
        line = json.dumps(row)
        print(line, flush=True)
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(line + "\n")

    for name, settings in variants:
        cfg = _apply(base, settings)
        d: DistillConfig = cfg.distill
        if d.top_r > teacher["targets"].shape[1]:
            raise SystemExit(f"variant {name}: top_r {d.top_r} > the cached teacher's {teacher['targets'].shape[1]}")
        start = time.perf_counter()

        def recall(fitted: Fitted, mode: str, cfg: RunConfig = cfg) -> float:
            """Validation Recall@20 of ``fitted`` served in ``mode``."""
            codes = _codes(fitted, split, cfg.eval.ties)
            m = evaluate_codes(codes, split.train, split.valid, mode, [VALID_K], cfg.eval.candidates, threads=threads)
            return float(m[f"recall@{VALID_K}"])

        def inner_product(uz: np.ndarray, iz: np.ndarray) -> float:
            """Validation Recall@20 of the ranking by <uz, iz> (real, or half real)."""
            sign = (np.where(uz >= 0, 1.0, -1.0), np.where(iz >= 0, 1.0, -1.0))
            return recall(Fitted(*sign, uz, iz, "inner product"), "continuous")

        def weighted(uq: np.ndarray, ic: np.ndarray, planes: int, step: float, cfg: RunConfig = cfg) -> float:
            """Validation Recall@20 of the weighted mode: the query's signs and quantised magnitudes."""
            sign = (np.where(uq >= 0, 1.0, -1.0), ic)
            codes = _codes(Fitted(*sign, uq, ic, "query vectors"), split, cfg.eval.ties)
            ret = Retriever(codes, "weighted", threads=threads, planes=planes, step=step)
            return float(evaluate_ranking(ret.topk, split.train, split.valid, [VALID_K])[f"recall@{VALID_K}"])

        def validate(uc: np.ndarray, ic: np.ndarray, cfg: RunConfig = cfg) -> float:
            if cfg.distill.ste in DIAGNOSTIC_STE:  # the served vectors (real, or half real), by inner product
                return inner_product(uc, ic)
            return recall(Fitted(uc, ic, teacher["uz"], teacher["iz"], "validation"), "hamming")

        def on_epoch(row: dict[str, float], name: str = name, start: float = start, seed: int = cfg.train.seed) -> None:
            if "valid_score" in row:
                emit(
                    {
                        "variant": name,
                        "seed": seed,
                        "epoch": int(row["epoch"]),
                        f"valid_recall@{VALID_K}": round(row["valid_score"], 5),
                        **(
                            {f"valid_query_recall@{VALID_K}": round(row["valid_query_score"], 5)}
                            if "valid_query_score" in row
                            else {}
                        ),
                        "loss": round(row["loss"], 5),
                        "seconds": round(time.perf_counter() - start, 1),
                    }
                )

        epochs = args.epochs if args.epochs is not None else cfg.train.epochs
        loss_kw: dict[str, Any] = {
            "temperature": d.temperature,
            "decay": d.decay,
            "lr": d.lr,
            "batch_users": d.batch_users,
            "ema": d.ema,
            "positive_weight": d.positive_weight,
        }
        targets = teacher["targets"][:, : d.top_r]
        start_u, start_i = teacher["ux"], teacher["ix"]
        if d.student_epochs:
            start_u, start_i = continuous_start(
                start_u,
                start_i,
                targets,
                split.train,
                epochs=d.student_epochs,
                popularity=cfg.spectral.popularity_bits,
                itq_iters=cfg.spectral.itq_iters,
                seed=cfg.train.seed,
                **loss_kw,
            )
            emit(
                {
                    "variant": name,
                    "seed": cfg.train.seed,
                    "student_epochs": d.student_epochs,
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )
        res = distill_codes(
            start_u,
            start_i,
            targets,
            split.train,
            epochs=epochs,
            ste=d.ste,
            schedule=d.schedule,
            horizon=epochs,
            **loss_kw,
            balance_weight=d.balance_weight,
            decorrelation_weight=d.decorrelation_weight,
            query_weight=d.query_weight,
            seed=cfg.train.seed,
            validate=validate,
            validate_query=inner_product,
            eval_every=args.eval_every or cfg.train.eval_every,
            on_epoch=on_epoch,
        )
        if res.user_query is not None:
            for spec in args.weighted:
                planes, _, step = spec.partition(":")
                emit(
                    {
                        "variant": name,
                        "epoch": res.best_epoch,
                        "weighted_planes": int(planes),
                        "weighted_step": float(step),
                        f"valid_weighted_recall@{VALID_K}": round(
                            weighted(res.user_query, res.item_codes, int(planes), float(step)), 5
                        ),
                        f"valid_query_recall@{VALID_K}": round(inner_product(res.user_query, res.item_codes), 5),
                        f"valid_recall@{VALID_K}": round(res.best_score or 0.0, 5),
                    }
                )
        emit(
            {
                "variant": name,
                "settings": ",".join(settings),
                "config": args.config,
                "base_settings": args.set,
                "best_epoch": res.best_epoch,
                f"best_valid_recall@{VALID_K}": round(res.best_score or 0.0, 5),
                "initial": round(res.initial_score or 0.0, 5),
                "epochs": epochs,
                "seconds": round(time.perf_counter() - start, 1),
                **machine,
            }
        )


if __name__ == "__main__":
    main()
