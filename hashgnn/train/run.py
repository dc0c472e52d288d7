"""Training a run into its folder (:class:`hashgnn.run.Run` names the files), resuming it, evaluating it.

``train_run(cfg, out) -> dict`` trains, validates (early stopping on validation Recall@20 in the
method's serving mode), exports codes and vectors from the best epoch's weights and evaluates them on
the test split in every retrieval mode; the dict is ``final_metrics.json``.

Started by torchrun (``hashgnn train --nproc N``), a run is data-parallel
(:mod:`hashgnn.train.distributed`): every rank trains on its shard of the edges, rank 0 alone
touches the run folder, and the other ranks return an empty dict.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file

from hashgnn.codes.artifacts import RunCodes
from hashgnn.codes.packing import pack_codes
from hashgnn.config import RunConfig, TrainConfig, override
from hashgnn.data import Interactions, absolute_dataset, carve_validation, load_interactions
from hashgnn.errors import ConfigError, HashgnnError
from hashgnn.io import WriteError, write_safetensors, write_text
from hashgnn.methods import ALL_MODES, QUERY_MODES, get_method, serving_mode
from hashgnn.run import EXPORT_SALT, VALID_SALT, Run
from hashgnn.train import distributed
from hashgnn.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from hashgnn.train.folder import Replacement, check_replaceable_run, check_writable_run_folder, holds_run
from hashgnn.train.lock import RunLock
from hashgnn.train.trackers import Tracker

if TYPE_CHECKING:
    import scipy.sparse as sp

    from hashgnn.model.base import HashModel

VALID_K = 20


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but PyTorch sees no CUDA device; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def _check_config(cfg: RunConfig) -> None:
    get_method(cfg.model.method)
    if not 8 <= cfg.model.bits <= 256:
        raise ConfigError(f"bits must be between 8 and 256, got {cfg.model.bits}")
    if cfg.train.epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {cfg.train.epochs}")


def _eval_generator(seed: int, device: torch.device, salt: int) -> torch.Generator:
    """A generator for evaluation-time sampling that never touches the training stream."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + salt)


def export_codes(
    model: HashModel, data: Interactions, generator: torch.Generator, ties: str = "popularity"
) -> RunCodes:
    """Continuous vectors and packed codes (sign of each vector) of every user and item.

    For hashing methods the vectors have ``bits`` dimensions; for continuous models (``plain``,
    ``mf``) the code length is the embedding width, so their Hamming mode is sign(embedding).
    ``ties`` is the tie rule of the served rankings, from ``data.train`` (hashgnn/eval/ties.py).
    """
    from hashgnn.eval.ties import tie_order

    model.eval()
    with torch.no_grad():
        user_z, item_z = model.embed(generator)
    uz = user_z.float().cpu().numpy()
    iz = item_z.float().cpu().numpy()
    return RunCodes(
        bits=int(uz.shape[1]),
        user_codes=pack_codes(uz),
        item_codes=pack_codes(iz),
        user_z=uz,
        item_z=iz,
        user_ids=data.user_ids,
        item_ids=data.item_ids,
        item_order=tie_order(data.train, ties),
    )


def evaluate_codes(
    codes: RunCodes,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    mode: str,
    ks: list[int],
    candidates: int,
    batch_users: int = 1024,
    progress: bool = False,
    threads: int | None = None,
) -> dict[str, float]:
    """Metrics of ``codes`` on ``test`` with ``train`` masked, in one retrieval mode.

    Ranked by :class:`hashgnn.index.recommend.Retriever`, the code that serves ``recommend``, so every
    metric measures what a user of the run is given.
    """
    from hashgnn.eval import check_cutoffs
    from hashgnn.eval.evaluator import evaluate_ranking
    from hashgnn.index.recommend import Retriever

    if mode not in ALL_MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(ALL_MODES)}")
    check_cutoffs(ks, codes.n_items, candidates if mode == "hierarchical" else None)
    retriever = Retriever(codes, mode, candidates, threads)
    return evaluate_ranking(retriever.topk, train, test, ks, batch_users=batch_users, progress=progress)


def report_on_test(codes: RunCodes, data: Interactions, cfg: RunConfig, progress: bool = False) -> dict[str, Any]:
    """The test half of final_metrics.json: every configured mode of ``codes`` (and the query modes,
    weighted, of a run with query vectors), and Most-Popular.

    One function for the trained and the fitted methods, so every run's report is made the same way.
    """
    from hashgnn.eval import PopularScorer, evaluate
    from hashgnn.index.recommend import modes_of

    modes = [*cfg.eval.modes, *(m for m in QUERY_MODES if m in modes_of(codes))]

    test = {
        mode: evaluate_codes(
            codes,
            data.train,
            data.test,
            mode,
            cfg.eval.ks,
            cfg.eval.candidates,
            cfg.eval.batch_users,
            progress=progress,
            threads=cfg.train.threads,
        )
        for mode in modes
    }
    popular = evaluate(
        PopularScorer(data.train), data.train, data.test, cfg.eval.ks, batch_users=cfg.eval.batch_users, progress=False
    )
    return {"test": test, "baseline_popular": popular}


class _Trainer:
    """Owns the state of one run while it trains; not part of the public API."""

    def __init__(self, cfg: RunConfig, run_dir: Path, progress: bool, resuming: bool = False) -> None:
        from hashgnn.model import build_model

        _check_config(cfg)
        self.dist = distributed.context(resolve_device(cfg.train.device))
        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress and self.dist.is_main
        self.run = Run(run_dir)
        self.device = distributed.rank_device(resolve_device(cfg.train.device), self.dist)
        if self.dist.active:
            distributed.local_batch(cfg.train.batch_size, self.dist.world)  # fail before the data loads
        self.threads_before = torch.get_num_threads()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.data = load_interactions(cfg.data)
        from hashgnn.eval import check_cutoffs

        # Sizes that depend on the data are checked now, not after hours of training.
        check_cutoffs(
            [*cfg.eval.ks, VALID_K],
            self.data.n_items,
            cfg.eval.candidates if "hierarchical" in cfg.eval.modes else None,
        )
        self.split = (
            carve_validation(self.data, cfg.data.valid_fraction, cfg.data.seed)
            if cfg.data.valid_fraction > 0
            else self.data
        )
        from hashgnn.data.features import attributes_for_model, load_attributes

        saved, _ = load_attributes(run_dir) if resuming else ({}, {})
        self.encoders, self.attrs = attributes_for_model(self.data, cfg.model.method, cfg.model.encoder, saved)
        torch.manual_seed(cfg.train.seed)  # parameter initialisation
        self.model = build_model(
            cfg.model,
            self.split.train,
            self.device,
            user_attrs=self.attrs.get("user"),
            item_attrs=self.attrs.get("item"),
            train_cfg=cfg.train,
        )
        from hashgnn.train.loop import build_optimizer

        # Wrapped before the optimiser exists: DDP broadcasts rank 0's parameters into every rank.
        staged = get_method(cfg.model.method).is_staged(cfg.model, cfg.train)
        self.ddp = distributed.wrap(self.model, self.dist, self.device, staged)
        self.optimizer = build_optimizer(self.model, cfg.train)
        self.generator = torch.Generator(device=self.device).manual_seed(
            distributed.rank_seed(cfg.train.seed, self.dist.rank)
        )
        self.state: dict[str, Any] = {
            "best_score": None,
            "best_epoch": None,
            "bad_evals": 0,
            "history": [],
            "train_seconds": 0.0,
        }
        self.start_epoch = 0
        self.tracker: Tracker = Tracker()

    def resume(self) -> None:
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            return
        st = load_checkpoint(ckpt, self.model, self.optimizer, self.generator, self.dist.rank, self.dist.world)
        self.start_epoch = int(st.pop("epoch")) + 1
        st.pop("world_size", None)
        self.state = st
        if self.dist.is_main:
            # Rows of epochs after the checkpoint belong to the killed attempt: rewrite from history.
            _rewrite_jsonl(self.run.file(Run.METRICS_LOG), self.state["history"])

    def validate(self, epoch: int) -> dict[str, float]:
        gen = _eval_generator(self.cfg.train.seed, self.device, salt=VALID_SALT)
        codes = export_codes(self.model, self.split, gen, self.cfg.eval.ties)
        mode = serving_mode(self.cfg.model.method)
        return evaluate_codes(
            codes,
            self.split.train,
            self.split.valid,
            mode,
            [VALID_K],
            self.cfg.eval.candidates,
            self.cfg.eval.batch_users,
            threads=self.cfg.train.threads,
        )

    def fit(self) -> None:
        from hashgnn.train.loop import train_epoch

        cfg = self.cfg
        has_valid = self.split.valid is not None and self.split.valid.nnz > 0
        method = get_method(cfg.model.method)

        def phase(e: int) -> tuple[str, bool]:
            return method.phase(e, cfg.model, cfg.train)

        for epoch in range(self.start_epoch, cfg.train.epochs):
            if epoch > 0 and phase(epoch) != phase(epoch - 1):
                # Patience counts in the last stage only (hashgnn_sp's hash layers): the first
                # stage's validations score an untrained hash layer, and their decline says
                # nothing about the stage that trains the served codes.
                self.state["bad_evals"] = 0
            beta = self.model.on_epoch_start(epoch)
            self.model.train()
            stats = train_epoch(
                self.model,
                self.optimizer,
                self.split.train,
                cfg.train,
                epoch,
                self.generator,
                beta=beta,
                progress=self.progress,
                dist=self.dist,
                loss_fn=self.ddp,
            )
            self.state["train_seconds"] += float(stats.get("seconds", 0.0))
            row: dict[str, Any] = {"epoch": epoch, **{k: float(v) for k, v in stats.items()}}
            # A time budget ends the run like its last epoch (validated, then exported); which
            # epoch that is depends on the machine, so such a run repeats only on the same one.
            out_of_time = (
                cfg.train.max_minutes is not None and self.state["train_seconds"] >= 60.0 * cfg.train.max_minutes
            )
            last = epoch == cfg.train.epochs - 1 or out_of_time
            main = self.dist.is_main
            if main and has_valid and ((epoch + 1) % cfg.train.eval_every == 0 or last):
                m = self.validate(epoch)
                row.update({f"valid_{k}": v for k, v in m.items() if "@" in k})
                score = m[f"recall@{VALID_K}"]
                if self.state["best_score"] is None or score > self.state["best_score"]:
                    self.state.update(best_score=score, best_epoch=epoch, bad_evals=0)
                    _save_weights(self.model, self.run.file(Run.BEST_WEIGHTS))
                else:
                    self.state["bad_evals"] += 1
            self.state["history"].append(row)
            if main:
                _append_jsonl(self.run.file(Run.METRICS_LOG), row)
                self.tracker.log_epoch(epoch, row)
            stop = (
                cfg.train.patience > 0
                and self.state["bad_evals"] >= cfg.train.patience
                and phase(epoch) == phase(cfg.train.epochs - 1)
            )
            self.state["stopped_early"] = bool(stop and not last)
            if out_of_time and epoch < cfg.train.epochs - 1:
                self.state["stopped_by_time"] = True
                stop = True
            # Every rank's generator state goes into rank 0's checkpoint, so each rank resumes its own stream.
            states = distributed.gather_generator_states(self.generator, self.dist, self.device)
            if main:
                save_checkpoint(
                    self.run_dir,
                    epoch,
                    self.model,
                    self.optimizer,
                    self.generator,
                    {**self.state, "world_size": self.dist.world},
                    generator_states=states,
                )
            # Rank 0 alone validated and counted the time: its decision holds for all.
            if distributed.broadcast_flag(stop, self.dist, self.device):
                break

    def finish(self) -> dict[str, Any]:
        cfg = self.cfg
        if not self.dist.is_main:
            return {}
        best = self.run.file(Run.BEST_WEIGHTS)
        if best.exists():
            self.model.load_state_dict(load_file(best, device=str(self.device)))
        _save_weights(self.model, self.run.file(Run.WEIGHTS))
        gen = _eval_generator(cfg.train.seed, self.device, salt=EXPORT_SALT)
        codes = export_codes(self.model, self.data, gen, cfg.eval.ties)
        self.run.save_codes(codes)
        report = report_on_test(codes, self.data, cfg, self.progress)
        epochs_run = len(self.state["history"])
        final = {
            "method": cfg.model.method,
            "encoder": cfg.model.encoder,
            "dataset": cfg.data.dataset,
            "bits": cfg.model.bits,
            "seed": cfg.train.seed,
            "device": str(self.device),
            "processes": self.dist.world,
            "serving_mode": serving_mode(cfg.model.method),
            "ties": cfg.eval.ties,
            "epochs_run": epochs_run,
            "best_epoch": self.state["best_epoch"],
            "best_valid_recall@20": self.state["best_score"],
            "stopped_by_time": bool(self.state.get("stopped_by_time", False)),
            "train_seconds": round(self.state["train_seconds"], 3),
            "seconds_per_epoch": round(self.state["train_seconds"] / max(epochs_run, 1), 3),
            **report,
        }
        # final_metrics.json is written last: its presence means the whole run folder is there.
        plot_training(self.run_dir)
        self.run.save_metrics(final)
        return final


def _save_weights(model: torch.nn.Module, path: Path) -> None:
    write_safetensors(path, model.state_dict())


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    except OSError as e:
        raise WriteError(path, e) from None


def _rewrite_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def train_run(
    cfg: RunConfig,
    out: str | Path,
    progress: bool = True,
    overwrite: bool = False,
    tracker: str | None = None,
    tracker_uri: str | None = None,
) -> dict[str, Any]:
    """Train a model as ``cfg`` says, writing everything into the run folder ``out``.

    Returns the final metrics (also in ``out/final_metrics.json``). A folder that already holds a
    run is refused unless ``overwrite`` (use :func:`resume_run` to continue one). In a data-parallel
    run (started by torchrun) only rank 0 checks and writes the folder; the other ranks return ``{}``.
    ``tracker`` (``mlflow`` | ``tensorboard``) also reports the run there (:mod:`hashgnn.train.trackers`).
    """
    from hashgnn.train.trackers import make_tracker

    run_dir = Path(out)
    if distributed.launched_by_torchrun() and int(os.environ.get("RANK", "0")) != 0:
        return _fit_and_finish(_Trainer(cfg, run_dir, progress))
    track = make_tracker(tracker, tracker_uri)
    with RunLock(run_dir, "--out"):
        return _train_locked(cfg, run_dir, progress, overwrite, track)


def _train_locked(cfg: RunConfig, run_dir: Path, progress: bool, overwrite: bool, track: Tracker) -> dict[str, Any]:
    replace = holds_run(run_dir)
    if replace and not overwrite:
        raise HashgnnError(
            f"{run_dir} already holds a run; continue it with `hashgnn train --resume {run_dir}`, "
            "pick another --out, or pass --overwrite"
        )
    if replace:  # checked here to fail before the data loads, and again by Replacement when it moves
        check_replaceable_run(run_dir)
    else:
        check_writable_run_folder(run_dir)
    saved = cfg.portable()
    saved.data.dataset = absolute_dataset(cfg.data.dataset)
    for key in ("user_features", "item_features"):
        if getattr(cfg.data, key):
            setattr(saved.data, key, str(Path(getattr(cfg.data, key)).expanduser().resolve()))
    # Everything is validated (config, device, data) before the old run is touched.
    trainer = _make_trainer(cfg, run_dir, progress)
    trainer.tracker = track
    if not replace:
        return _start(trainer, saved, run_dir)
    try:
        with Replacement(run_dir):
            return _start(trainer, saved, run_dir, resumable=False)
    except WriteError as e:
        raise HashgnnError(f"{e}; the new run was dropped and the previous run in {run_dir} put back") from None


def _make_trainer(cfg: RunConfig, run_dir: Path, progress: bool, resuming: bool = False) -> Any:
    """The epoch trainer, or for a method without a network its fit (hashgnn/train/fitted.py)."""
    if get_method(cfg.model.method).fit is not None:
        if distributed.launched_by_torchrun():
            raise ConfigError(f"method {cfg.model.method!r} is fitted, not trained: run it without torchrun / --nproc")
        from hashgnn.train.fitted import FitTrainer

        return FitTrainer(cfg, run_dir, progress)
    return _Trainer(cfg, run_dir, progress, resuming=resuming)


def _start(trainer: Any, cfg: RunConfig, run_dir: Path, resumable: bool = True) -> dict[str, Any]:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(run_dir, e) from None
    cfg.save(trainer.run.file(Run.CONFIG))
    trainer.run.record_environment("train")
    if trainer.encoders:
        from hashgnn.data.features import save_attributes

        save_attributes(run_dir, trainer.encoders, trainer.attrs)
    write_text(trainer.run.file(Run.METRICS_LOG), "")
    trainer.tracker.start(cfg.to_dict(), run_dir, False)
    return _fit_and_finish(trainer, resumable)


def resume_run(
    run_dir: str | Path,
    progress: bool = True,
    *,
    mirror: str | None = None,
    cache_dir: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    tracker: str | None = None,
    tracker_uri: str | None = None,
    epochs: int | None = None,
    max_minutes: float | None = None,
) -> dict[str, Any]:
    """Continue a run from its newest checkpoint; a finished run is only re-exported.

    Where data comes from and where the run executes (``mirror``, ``cache_dir``, ``device``,
    ``threads``) are this machine's choice: the run folder's config never decides them.

    ``epochs`` / ``max_minutes`` extend the run's budget (a finished run trains on from its last
    epoch, exactly as if it had been started with the larger budget); :func:`_check_extension`
    says when that is refused. The folder's config is rewritten with the new budget before training goes on.
    """
    run_dir = Path(run_dir)
    if not (run_dir / Run.CONFIG).exists():
        raise HashgnnError(f"{run_dir}: no {Run.CONFIG}, so this is not a hashgnn run folder")
    from hashgnn.train.trackers import make_tracker

    track = make_tracker(tracker, tracker_uri)
    # In a data-parallel resume every rank runs this; rank 0 alone holds the folder's lock (as in
    # train_run), or the ranks would refuse each other.
    other_rank = distributed.launched_by_torchrun() and int(os.environ.get("RANK", "0")) != 0
    with contextlib.nullcontext() if other_rank else RunLock(run_dir, "--resume"):
        saved = RunConfig.load(run_dir / Run.CONFIG)
        target, extended = _extend(saved, run_dir, epochs, max_minutes)
        cfg = target.on_this_machine(mirror, cache_dir, device, threads)
        trainer = _make_trainer(cfg, run_dir, progress, resuming=True)
        trainer.resume()
        if extended:
            _check_extension(trainer, saved.train, run_dir)
        if not other_rank:
            if extended:
                target.save(trainer.run.file(Run.CONFIG))
            trainer.run.record_environment("resume", extended=extended or None)
        trainer.tracker = track
        track.start(cfg.portable().to_dict(), run_dir, True)
        return _fit_and_finish(trainer)


def _extend(
    saved: RunConfig, run_dir: Path, epochs: int | None, max_minutes: float | None
) -> tuple[RunConfig, dict[str, list[Any]]]:
    """``saved`` with the budget raised where given, and ``{"train.epochs": [old, new], ...}`` for what changed.

    Only the epoch trainer's runs extend: a fitted method (``spectral_distill``, ...) picks its
    epochs on validation and refits, so a longer budget is a new run.
    """
    t = saved.train
    changed = {
        f"train.{key}": [getattr(t, key), value]
        for key, value in (("epochs", epochs), ("max_minutes", max_minutes))
        if value is not None and value != getattr(t, key)
    }
    if not changed:
        return saved, changed
    if get_method(saved.model.method).fit is not None:
        raise HashgnnError(
            f"{run_dir}: method {saved.model.method!r} is fitted (its epochs are picked on validation, "
            f"then refit), so its budget cannot be extended; train a new run with --set train.epochs=N"
        )
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}")
    if max_minutes is not None and max_minutes <= 0:
        raise ConfigError(f"--max-minutes must be positive, got {max_minutes}")
    return dataclasses.replace(saved, train=override(t, epochs=epochs, max_minutes=max_minutes)), changed


def _check_extension(trainer: Any, before: TrainConfig, run_dir: Path) -> None:
    """Refuse a budget that cannot continue the epochs already trained as they were trained."""
    cfg, state, done = trainer.cfg, trainer.state, trainer.start_epoch
    t = cfg.train
    if state.get("stopped_early"):
        raise HashgnnError(
            f"{run_dir}: the run stopped early (patience {before.patience}: no better validation after "
            f"epoch {state['best_epoch']}), so more epochs would not change the served weights; "
            "train a new run with a larger --patience"
        )
    if t.epochs != before.epochs and t.epochs <= done:
        raise HashgnnError(
            f"{run_dir}: {done} epochs are trained already; --epochs must be larger than {done}, got {t.epochs}"
        )
    if state.get("stopped_by_time"):
        if t.max_minutes is not None and 60.0 * t.max_minutes <= state["train_seconds"]:
            raise HashgnnError(
                f"{run_dir}: the run stopped at its time budget after {state['train_seconds'] / 60:.1f} "
                "minutes of training; give a larger --max-minutes to train on"
            )
        state["stopped_by_time"] = False
    method = get_method(cfg.model.method)
    # The epochs already trained must have had the schedule the new budget gives them (beta,
    # stages, hash_gumbel's temperature over the soft epochs), or the run would not be one run.
    for e in range(done):
        if method.schedule(e, cfg.model, before) != method.schedule(e, cfg.model, t):
            raise HashgnnError(
                f"{run_dir}: method {cfg.model.method!r} schedules its epochs over the whole budget "
                f"(epoch {e} would train differently with {t.epochs} epochs), so it cannot be extended; "
                "train a new run with the budget you want"
            )
    if method.is_staged(cfg.model, before) != method.is_staged(cfg.model, t):
        raise HashgnnError(
            f"{run_dir}: with {t.epochs} epochs method {cfg.model.method!r} would gain a stage it was not "
            "built for; train a new run with the budget you want"
        )


def _fit_and_finish(trainer: Any, resumable: bool = True) -> dict[str, Any]:
    final: dict[str, Any] | None = None
    try:
        if not (trainer.state.get("stopped_early") or trainer.state.get("stopped_by_time")):
            trainer.fit()
        final = trainer.finish()
        # All ranks leave together, so code after train_run (hg.Trainer.fit's Run.load) finds the folder.
        distributed.barrier(trainer.dist)
        return final
    except WriteError as e:
        if not resumable:
            raise
        ckpt = latest_checkpoint(trainer.run_dir)
        kept = (
            f"the checkpoint of epoch {ckpt.name.split('-')[1].lstrip('0') or '0'} is intact"
            if ckpt
            else "no epoch had finished"
        )
        raise HashgnnError(
            f"{e}. Nothing already written was lost ({kept}); fix the cause, then continue with "
            f"`hashgnn train --resume {trainer.run_dir}`"
        ) from None
    finally:
        trainer.tracker.finish(final, trainer.run_dir)
        # A run's thread count must not leak into the caller's process (notebooks, suites).
        torch.set_num_threads(trainer.threads_before)


def evaluate_run(
    run_dir: str | Path,
    mode: str = "hamming",
    ks: list[int] | None = None,
    candidates: int | None = None,
    progress: bool = True,
    *,
    mirror: str | None = None,
    cache_dir: str | None = None,
    device: str | None = None,
    threads: int | None = None,
) -> dict[str, float]:
    """Re-evaluate a finished run's saved codes on its test split (training items masked).

    ``mirror`` / ``cache_dir`` (default: the environment's) say where the data is read, ``device`` /
    ``threads`` where it runs; the run folder's config never does (:meth:`hashgnn.run.Run.load`).
    """
    return Run.load(run_dir, mirror=mirror, cache_dir=cache_dir, device=device, threads=threads).evaluate(
        mode, ks, candidates, progress=progress
    )


def plot_training(run_dir: str | Path) -> Path:
    """Draw loss and validation Recall@20 against epochs into ``training.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = Run(run_dir).history
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ep = [r["epoch"] for r in rows]
    ax[0].plot(ep, [r.get("loss", np.nan) for r in rows], marker="o", ms=3)
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("training loss")
    vr = [(r["epoch"], r[f"valid_recall@{VALID_K}"]) for r in rows if f"valid_recall@{VALID_K}" in r]
    if vr:
        ax[1].plot([a for a, _ in vr], [b for _, b in vr], marker="o", ms=3, color="tab:green")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel(f"validation Recall@{VALID_K}")
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = run_dir / Run.PLOT
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
