"""Runs of methods without a network: fitted in closed form (``spectral``) or as free codes (``spectral_distill``).

Such a method names a fit function in the registry (``Method.fit``, hashgnn/methods.py) with the
signature of :data:`FitFn`. The protocol is the trainer's, adapted to a fit:

1. With a validation carve-out (``data.valid_fraction > 0``) the method is fitted on the carved
   training split and validated in its serving mode (Recall@20); a method with epochs validates
   every ``eval_every`` epochs, stops after ``patience`` evaluations without improvement, and its
   best epoch is the budget. Nothing is picked on the test split.
2. The method is fitted again on the **full** training split with that budget (``best_epoch + 1``
   epochs), and those artifacts are exported and evaluated on the test split in every mode.

The run folder has the usual files except the weights (there is no network) and checkpoints (a fit
takes minutes; ``hashgnn train --resume`` refits). Codes are not ``sign(z)`` here: the vectors are
the continuous model's, the codes hashed or trained from them (``codes.json`` says which).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from hashgnn.codes.artifacts import RunCodes
from hashgnn.codes.packing import pack_codes
from hashgnn.config import RunConfig
from hashgnn.data import Interactions, carve_validation, load_interactions
from hashgnn.methods import get_method, serving_mode
from hashgnn.run import Run

VALID_K = 20

# (user_codes ±1, item_codes ±1, user_z, item_z) -> validation Recall@20
Validate = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], float]


@dataclass
class Fitted:
    """What a fit function returns: ±1 codes (float32), served vectors, and its epochs."""

    user_codes: np.ndarray
    item_codes: np.ndarray
    user_z: np.ndarray
    item_z: np.ndarray
    code_source: str  # how the codes were made, written to codes.json
    best_epoch: int | None = None  # the budget picked on validation (None: no epochs)
    best_score: float | None = None
    initial_score: float | None = None  # validation score before any epoch (a student's start)
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    user_x: np.ndarray | None = None  # real values whose signs are the codes (a student's start)
    item_x: np.ndarray | None = None
    device: str = "cpu"  # where the trained part ran (the closed-form fits run on the CPU)
    refine: dict[str, Any] | None = None  # what the discrete refinement did (hashgnn/codes/refine.py)


# (config, training matrix, epochs (None: the config's), validation or None, progress) -> Fitted
FitFn = Callable[[RunConfig, sp.csr_matrix, int | None, Validate | None, bool], Fitted]


def fit_spectral(
    cfg: RunConfig, train: sp.csr_matrix, epochs: int | None, validate: Validate | None, progress: bool
) -> Fitted:
    """The ``spectral`` method: SVD-filter vectors and the PCA + ITQ + popularity codes hashed from them."""
    from hashgnn.codes.itq import hash_vectors
    from hashgnn.model.spectral import bspm_vectors, embed_factors, spectral_factors

    s = cfg.spectral
    t0 = time.perf_counter()
    factors = spectral_factors(train, s.triplets, alpha=s.alpha, power_iters=s.power_iters, seed=cfg.train.seed)
    if s.filter == "bspm":
        uz, iz, _ = bspm_vectors(train, factors, s.dim, s.sharpen, s.ideal_weight, s.ideal_dim, s.out_dim)
    else:
        uz, iz = embed_factors(factors, s.dim, beta=s.beta, gamma=s.gamma, power=s.power)
    t1 = time.perf_counter()
    ux, ix = hash_vectors(
        uz, iz, factors.item_degree, cfg.model.bits, s.code_dim, s.popularity_bits, s.itq_iters, cfg.train.seed
    )
    uc, ic = np.where(ux >= 0, 1.0, -1.0).astype(np.float32), np.where(ix >= 0, 1.0, -1.0).astype(np.float32)
    seconds = {"svd": t1 - t0, "hash": time.perf_counter() - t1}
    return Fitted(uc, ic, uz, iz, "pca-itq+popularity", seconds=seconds, user_x=ux, item_x=ix)


def fit_spectral_distill(
    cfg: RunConfig, train: sp.csr_matrix, epochs: int | None, validate: Validate | None, progress: bool
) -> Fitted:
    """The ``spectral_distill`` method: the spectral teacher, then codes trained to rank like it."""
    from hashgnn.codes.distill import continuous_start, distill_codes, teacher_top_r
    from hashgnn.train.run import resolve_device

    # The teacher is fitted on the CPU; the teacher's top items and the codes' training use the
    # run's device, and so does the refinement (train.device: auto picks a GPU where there is one).
    device = resolve_device(cfg.train.device)
    teacher = fit_spectral(cfg, train, None, None, progress)
    d = cfg.distill
    t0 = time.perf_counter()
    targets = teacher_top_r(teacher.user_z, teacher.item_z, train, min(d.top_r, train.shape[1]), device=device)
    t1 = time.perf_counter()
    uz, iz = teacher.user_z, teacher.item_z
    assert teacher.user_x is not None and teacher.item_x is not None
    start_u, start_i = teacher.user_x, teacher.item_x
    loss_kw: dict[str, Any] = {
        "temperature": d.temperature,
        "decay": d.decay,
        "lr": d.lr,
        "batch_users": d.batch_users,
        "ema": d.ema,
        "positive_weight": d.positive_weight,
        "progress": progress,
        "device": device,
    }
    seconds = {**teacher.seconds, "teacher_top_r": t1 - t0}
    if d.student_epochs != 0:  # a negative count is continuous_start's error
        # A fixed number of epochs, not picked on validation: the codes' budget is what is picked.
        start_u, start_i = continuous_start(
            start_u,
            start_i,
            targets,
            train,
            epochs=d.student_epochs,
            popularity=cfg.spectral.popularity_bits,
            itq_iters=cfg.spectral.itq_iters,
            seed=cfg.train.seed,
            **loss_kw,
        )
        seconds["student"] = time.perf_counter() - t1
        t1 = time.perf_counter()
    result = distill_codes(
        start_u,
        start_i,
        targets,
        train,
        epochs=cfg.train.epochs if epochs is None else epochs,
        ste=d.ste,
        schedule=d.schedule,
        horizon=cfg.train.epochs,
        balance_weight=d.balance_weight,
        decorrelation_weight=d.decorrelation_weight,
        query_weight=d.query_weight,
        seed=cfg.train.seed,
        validate=None if validate is None else (lambda uc, ic: validate(uc, ic, uz, iz)),
        eval_every=cfg.train.eval_every,
        patience=cfg.train.patience,
        **loss_kw,
    )
    seconds["distill"] = time.perf_counter() - t1
    user_codes, item_codes, best_score = result.user_codes, result.item_codes, result.best_score
    refine: dict[str, Any] | None = None
    if d.refine_rounds > 0:
        from hashgnn.codes.refine import refine_codes

        user_codes, item_codes, st = refine_codes(
            user_codes,
            item_codes,
            targets,
            train,
            temperature=d.temperature,
            decay=d.decay,
            rounds=d.refine_rounds,
            positive_weight=d.positive_weight,
            progress=progress,
            device=device,
        )
        seconds["refine"] = st.seconds
        refine = {
            "rounds": d.refine_rounds,
            "loss_before": round(st.loss_before, 6),
            "loss_after": round(st.loss_after, 6),
            "user_flips": st.user_flips,
            "item_flips": st.item_flips,
        }
        if validate is not None:
            # The served codes are the refined ones: their validation score is the run's.
            refine["valid_recall@20_before"] = best_score
            best_score = float(validate(user_codes, item_codes, uz, iz))
            refine["valid_recall@20_after"] = best_score
    if result.user_query is not None:
        # The run keeps the asymmetric model as its continuous one: query vectors against the served
        # item codes, refitted to the final codes (query_refit_epochs): trained jointly, the queries
        # followed codes that kept moving, and the refinement flips bits after them.
        user_query = result.user_query
        if d.query_refit_epochs > 0:
            from hashgnn.codes.distill import refit_queries

            t2 = time.perf_counter()
            user_query = refit_queries(
                user_query,
                item_codes,
                targets,
                train,
                epochs=d.query_refit_epochs,
                temperature=d.temperature,
                decay=d.decay,
                lr=d.lr,
                batch_users=d.batch_users,
                positive_weight=d.positive_weight,
                seed=cfg.train.seed,
                progress=progress,
                device=device,
            )
            seconds["query_refit"] = time.perf_counter() - t2
        uz, iz = user_query, np.asarray(item_codes, np.float32)
    return Fitted(
        user_codes,
        item_codes,
        uz,
        iz,
        "rank-distilled from the spectral teacher"
        + (f", started from a {d.student_epochs}-epoch continuous student" if d.student_epochs > 0 else "")
        + (", refined by bit flips" if refine else "")
        + ("; continuous vectors: user query vectors against the item codes" if result.user_query is not None else "")
        + (f", refit to them for {d.query_refit_epochs} epochs" if "query_refit" in seconds else ""),
        refine=refine,
        best_epoch=result.best_epoch,
        best_score=best_score,
        initial_score=result.initial_score,
        history=[dict(r, epoch=int(r["epoch"])) for r in result.history],
        seconds=seconds,
        device=device.type,
    )


def _codes(f: Fitted, data: Interactions, ties: str) -> RunCodes:
    from hashgnn.eval.ties import tie_order

    return RunCodes(
        bits=int(f.user_codes.shape[1]),
        user_codes=pack_codes(f.user_codes),
        item_codes=pack_codes(f.item_codes),
        user_z=np.ascontiguousarray(f.user_z, np.float32),
        item_z=np.ascontiguousarray(f.item_z, np.float32),
        user_ids=data.user_ids,
        item_ids=data.item_ids,
        code_source=f.code_source,
        item_order=tie_order(data.train, ties),
    )


class FitTrainer:
    """The fit protocol of the module docstring, with :class:`hashgnn.train.run._Trainer`'s interface."""

    def __init__(self, cfg: RunConfig, run_dir: Path, progress: bool) -> None:
        import torch

        from hashgnn.eval import check_cutoffs
        from hashgnn.train.run import resolve_device

        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress
        self.run = Run(run_dir)
        self.method = get_method(cfg.model.method)
        self.fit_fn: FitFn = self.method.fit_function()
        self.device = resolve_device(cfg.train.device)
        self.threads_before = torch.get_num_threads()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if not 8 <= cfg.model.bits <= 256:
            from hashgnn.errors import ConfigError

            raise ConfigError(f"bits must be between 8 and 256, got {cfg.model.bits}")
        self.data = load_interactions(cfg.data)
        check_cutoffs(
            [*cfg.eval.ks, VALID_K],
            self.data.n_items,
            cfg.eval.candidates if "hierarchical" in cfg.eval.modes else None,
        )
        self.state: dict[str, Any] = {"history": []}
        # What the epoch trainer's callers read (hashgnn/train/run.py): no attributes, one process,
        # and a tracker they replace.
        from hashgnn.train import distributed
        from hashgnn.train.trackers import Tracker

        self.encoders: dict[str, Any] = {}
        self.attrs: dict[str, Any] = {}
        self.dist = distributed.context(self.device)
        self.tracker: Tracker = Tracker()

    def resume(self) -> None:
        """A fit has no checkpoints: resuming refits from the start (minutes)."""

    def _validate_fn(self, split: Interactions) -> Validate:
        from hashgnn.train.run import _append_jsonl, _rewrite_jsonl, evaluate_codes

        mode = serving_mode(self.cfg.model.method)
        log, start = self.run.file(Run.METRICS_LOG), time.perf_counter()
        calls = 0
        _rewrite_jsonl(log, [])

        def validate(uc: np.ndarray, ic: np.ndarray, uz: np.ndarray, iz: np.ndarray) -> float:
            nonlocal calls
            f = Fitted(uc, ic, uz, iz, "validation")
            m = evaluate_codes(
                _codes(f, split, self.cfg.eval.ties),
                split.train,
                split.valid,
                mode,
                [VALID_K],
                self.cfg.eval.candidates,
                self.cfg.eval.batch_users,
                threads=self.cfg.train.threads,
            )
            score = float(m[f"recall@{VALID_K}"])
            # A fit of many epochs (gowalla: tens of minutes) shows its progress in metrics.jsonl as it
            # goes; fit() rewrites the file with the whole history (epochs, losses) at the end.
            row = {"stage": "validation (in progress)", "evaluation": calls, f"valid_recall@{VALID_K}": score}
            _append_jsonl(log, row | {"seconds": round(time.perf_counter() - start, 3)})
            calls += 1
            return score

        return validate

    def fit(self) -> None:
        cfg = self.cfg
        start = time.perf_counter()
        self.budget: int | None = None
        if cfg.data.valid_fraction > 0:
            split = carve_validation(self.data, cfg.data.valid_fraction, cfg.data.seed)
            validate = self._validate_fn(split)
            f = self.fit_fn(cfg, split.train, cfg.train.epochs, validate, self.progress)
            if f.best_epoch is None:  # no epochs: validate the one fit
                f.best_score = validate(f.user_codes, f.item_codes, f.user_z, f.item_z)
            self.budget = None if f.best_epoch is None else f.best_epoch + 1
            rows = [dict(r, stage="validation") for r in f.history]
            for r in rows:
                if "valid_score" in r:
                    r[f"valid_recall@{VALID_K}"] = r.pop("valid_score")
            if not rows:
                rows = [{"epoch": 0, "stage": "validation", f"valid_recall@{VALID_K}": f.best_score}]
            self.state.update(
                validation_refine=f.refine,
                best_score=f.best_score,
                best_epoch=f.best_epoch,
                initial_score=f.initial_score,
                validation_seconds=f.seconds,
            )
            self.state["history"].extend(rows)
            if f.refine is not None:
                # The refinement lowers the training loss, which is not the ranking: it is kept for the
                # refit only where it raised the validation score (it lowers it on Last.fm, docs/RESULTS.md).
                kept = f.refine["valid_recall@20_after"] > f.refine["valid_recall@20_before"]
                f.refine["kept"] = kept
                if not kept:
                    self.state["best_score"] = f.refine["valid_recall@20_before"]
                    cfg = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, refine_rounds=0))
        self.fitted = self.fit_fn(cfg, self.data.train, self.budget, None, self.progress)
        self.state["history"].extend(dict(r, stage="refit on the full training split") for r in self.fitted.history)
        self.state["train_seconds"] = time.perf_counter() - start
        from hashgnn.train.run import _rewrite_jsonl

        _rewrite_jsonl(self.run.file(Run.METRICS_LOG), self.state["history"])
        for i, row in enumerate(self.state["history"]):
            self.tracker.log_epoch(i, row)

    def finish(self) -> dict[str, Any]:
        from hashgnn.train.run import plot_training, report_on_test

        cfg = self.cfg
        codes = _codes(self.fitted, self.data, cfg.eval.ties)
        self.run.save_codes(codes)
        report = report_on_test(codes, self.data, cfg, self.progress)
        epochs_run = 0 if self.budget is None and not self.fitted.history else len(self.fitted.history)
        final = {
            "method": cfg.model.method,
            "encoder": None,
            "dataset": cfg.data.dataset,
            "bits": int(codes.bits),
            "dims": int(codes.user_z.shape[1]),
            "code_source": codes.code_source,
            "seed": cfg.train.seed,
            "device": self.fitted.device,
            "serving_mode": serving_mode(cfg.model.method),
            "ties": cfg.eval.ties,
            "epochs_run": epochs_run,
            "best_epoch": self.state.get("best_epoch"),
            "best_valid_recall@20": self.state.get("best_score"),
            "initial_valid_recall@20": self.state.get("initial_score"),
            "protocol": "budget picked on the validation carve-out, refit on the full training split"
            if cfg.data.valid_fraction > 0
            else "fitted on the full training split (no validation)",
            "stopped_by_time": False,
            "train_seconds": round(self.state["train_seconds"], 3),
            "seconds_per_epoch": round(
                sum(r.get("seconds", 0.0) for r in self.fitted.history) / max(len(self.fitted.history), 1), 3
            ),
            "fit_seconds": {k: round(v, 3) for k, v in self.fitted.seconds.items()},
            **({"refine": self.fitted.refine} if self.fitted.refine else {}),
            **({"validation_refine": self.state["validation_refine"]} if self.state.get("validation_refine") else {}),
            **report,
        }
        # final_metrics.json is written last: its presence means the whole run folder is there.
        plot_training(self.run_dir)
        self.run.save_metrics(final)
        return final
