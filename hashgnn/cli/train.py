"""``hashgnn train``: train a model into a run folder, or resume one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from hashgnn.cli import app
from hashgnn.cli.common import (
    CacheOpt,
    ItemFeaturesOpt,
    MirrorOpt,
    NoAtomicFeaturesOpt,
    SepOpt,
    UserFeaturesOpt,
    console,
    print_json,
)
from hashgnn.config import RunConfig, override
from hashgnn.errors import HashgnnError
from hashgnn.methods import ENCODERS, METHOD_NAMES

# What --resume accepts: this machine's choices, the output, and a larger budget; the run folder decides the rest.
_RESUME_FLAGS = frozenset(
    ("resume", "mirror", "cache_dir", "device", "threads", "tracker", "tracker_uri", "json_out", "quiet", "nproc")
    + ("epochs", "max_minutes")
)


@app.command("train")
def train(
    ctx: typer.Context,
    dataset: Annotated[
        Optional[str],
        typer.Option("--dataset", "-d", help="Registered name, folder with train.txt/test.txt, or table file."),
    ] = None,
    method: Annotated[Optional[str], typer.Option(help=" | ".join(METHOD_NAMES) + " (hashgnn.methods).")] = None,
    encoder: Annotated[Optional[str], typer.Option(help=" | ".join(ENCODERS))] = None,
    bits: Annotated[Optional[int], typer.Option(help="Code length K (8..256).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of initialisation, sampling and guidance.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder to create.")] = None,
    config: Annotated[
        Optional[Path],
        typer.Option(
            "--config",
            "-c",
            help="YAML config (sections data/model/train/eval, and spectral/distill for the fitted methods); flags override it.",
        ),
    ] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda")] = None,
    resume: Annotated[
        Optional[Path],
        typer.Option(
            help="Continue the run in this folder from its newest checkpoint; with --epochs / --max-minutes, "
            "train on past its budget (a finished run included)."
        ),
    ] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Positive edges per batch.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate.")] = None,
    negatives: Annotated[Optional[int], typer.Option(help="Negatives per positive edge.")] = None,
    beta_schedule: Annotated[Optional[str], typer.Option(help="staircase | linear | constant")] = None,
    beta_epochs: Annotated[Optional[int], typer.Option(help="linear schedule: epochs until beta = 1.")] = None,
    guidance: Annotated[Optional[str], typer.Option(help="node | bit granularity of the guidance draw.")] = None,
    ranking_loss: Annotated[Optional[str], typer.Option(help="bpr | margin")] = None,
    valid_fraction: Annotated[
        Optional[float], typer.Option(help="Share of each user's train items held out for validation (0: none).")
    ] = None,
    patience: Annotated[
        Optional[int],
        typer.Option(
            help="Stop after this many validations without improvement, counted in the method's last stage (0: never)."
        ),
    ] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Validate every N epochs.")] = None,
    max_minutes: Annotated[
        Optional[float], typer.Option(help="Stop after the epoch whose training time passes this many minutes.")
    ] = None,
    continuous_weight: Annotated[
        Optional[float],
        typer.Option(help="Hashing methods: weight of the losses on z kept beside the codes' (0: the authors')."),
    ] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for PyTorch.")] = None,
    mirror: MirrorOpt = None,
    cache_dir: CacheOpt = None,
    user_col: Annotated[Optional[str], typer.Option(help="Table files: the user id column.")] = None,
    item_col: Annotated[Optional[str], typer.Option(help="Table files: the item id column.")] = None,
    rating_col: Annotated[Optional[str], typer.Option(help="Table files: an optional rating column.")] = None,
    min_rating: Annotated[Optional[float], typer.Option(help="Table files: keep rows with rating >= this.")] = None,
    time_col: Annotated[Optional[str], typer.Option(help="Table files: an optional timestamp column.")] = None,
    sep: SepOpt = None,
    user_features: UserFeaturesOpt = None,
    item_features: ItemFeaturesOpt = None,
    no_atomic_features: NoAtomicFeaturesOpt = False,
    split: Annotated[Optional[str], typer.Option(help="Table files: random | temporal | loo.")] = None,
    test_fraction: Annotated[Optional[float], typer.Option(help="Table files: test share per user.")] = None,
    settings: Annotated[
        Optional[list[str]],
        typer.Option(
            "--set",
            help="Any config field as section.key=value "
            "(e.g. --set model.beta_hold=4 --set train.pretrain_epochs=5); applied after --config and "
            "the flags above; repeatable.",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace the hashgnn run in --out once the new one has finished (a folder with other files is refused).",
        ),
    ] = False,
    tracker: Annotated[
        Optional[str],
        typer.Option(
            help="Also report the run to mlflow (extra hashgnn[mlflow]) or tensorboard (extra hashgnn[tensorboard])."
        ),
    ] = None,
    tracker_uri: Annotated[
        Optional[str],
        typer.Option(
            help="mlflow: the tracking URI (default $MLFLOW_TRACKING_URI, else ./mlruns); "
            "tensorboard: the log folder (default RUN/tensorboard)."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the final metrics as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    nproc: Annotated[
        int,
        typer.Option(
            help="Train data-parallel on this many processes of this machine: starts `torchrun "
            "--standalone --nproc-per-node N -m hashgnn train ...` (gloo on CPU, one GPU per process with "
            "NCCL on CUDA); --batch-size is the global batch. Resume such a run with the same --nproc. "
            "Several machines: see docs/SCALING.md.",
        ),
    ] = 1,
) -> None:
    """Train HashGNN (or a variant or baseline) and save codes, vectors, weights and metrics in a run folder."""
    from hashgnn.train.distributed import launched_by_torchrun
    from hashgnn.train.run import resume_run, train_run

    if nproc < 1:
        raise HashgnnError(f"--nproc must be at least 1, got {nproc}")
    if nproc > 1 and not launched_by_torchrun():
        raise typer.Exit(launch_torchrun(nproc))

    if resume is not None:
        # Every flag given on the command line counts (a 0 or an empty string too), whatever its value.
        given = [
            max(param.opts, key=len)
            for param in ctx.command.params
            if param.name not in _RESUME_FLAGS
            # by name: typer vendors its own click, whose ParameterSource is not click's
            and getattr(ctx.get_parameter_source(param.name or ""), "name", None) in ("COMMANDLINE", "ENVIRONMENT")
        ]
        if given:
            raise HashgnnError(
                f"--resume takes its settings from the run folder; drop {', '.join(given)} "
                "(only --mirror, --cache-dir, --device, --threads and --tracker, this machine's, and "
                "--epochs / --max-minutes, a larger budget, may be given)"
            )
        final = resume_run(
            resume,
            progress=not quiet,
            mirror=mirror,
            cache_dir=cache_dir,
            device=device,
            threads=threads,
            tracker=tracker,
            tracker_uri=tracker_uri,
            epochs=epochs,
            max_minutes=max_minutes,
        )
        run_dir = resume
    else:
        if out is None:
            raise HashgnnError("--out RUN_FOLDER is required (or --resume RUN_FOLDER to continue a run)")
        cfg = RunConfig.load(config) if config else RunConfig()
        cfg.data = override(
            cfg.data,
            dataset=dataset,
            mirror=mirror,
            cache_dir=cache_dir,
            user_col=user_col,
            item_col=item_col,
            rating_col=rating_col,
            min_rating=min_rating,
            time_col=time_col,
            sep=sep,
            split=split,
            test_fraction=test_fraction,
            valid_fraction=valid_fraction,
            user_features=user_features,
            item_features=item_features,
            atomic_features=False if no_atomic_features else None,
        )
        cfg.model = override(
            cfg.model,
            method=method,
            encoder=encoder,
            bits=bits,
            beta_schedule=beta_schedule,
            beta_epochs=beta_epochs,
            guidance=guidance,
        )
        cfg.train = override(
            cfg.train,
            epochs=epochs,
            seed=seed,
            device=device,
            batch_size=batch_size,
            lr=lr,
            negatives=negatives,
            ranking_loss=ranking_loss,
            patience=patience,
            eval_every=eval_every,
            threads=threads,
            max_minutes=max_minutes,
            continuous_weight=continuous_weight,
        )
        if settings:
            from hashgnn.api import configure

            cfg = configure(cfg, **parse_set(settings))
        final = train_run(cfg, out, progress=not quiet, overwrite=overwrite, tracker=tracker, tracker_uri=tracker_uri)
        run_dir = out
    if not final:  # a data-parallel rank other than 0: rank 0 reports
        return
    if json_out:
        print_json({"run": str(run_dir), **final})
    else:
        print_summary(final, run_dir, final.get("baseline_popular"))


def launch_torchrun(nproc: int) -> int:
    """Run this ``hashgnn train`` command again under torchrun on ``nproc`` local processes.

    Returns torchrun's exit status (non-zero when any process failed; torchrun stops the others).
    """
    import subprocess
    import sys

    from hashgnn.cli import ARGV

    args: list[str] = []
    skip = False
    for a in ARGV:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "hashgnn",
        *args,
    ]
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: torchrun stops its workers; their last checkpoint stays
        proc.terminate()
        proc.wait()
        return 130


def parse_set(items: list[str]) -> dict[str, str]:
    """``["model.bits=32", ...]`` -> ``{"model.bits": "32"}``; each key must be ``section.key``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise HashgnnError(f"--set {item!r}: expected section.key=value, e.g. --set model.bits=32")
        out[key.strip()] = value.strip()
    return out


def print_summary(final: dict, run_dir: Path, baseline: dict | None = None) -> None:
    """A small table of Recall@20 / NDCG@20 per retrieval mode (and an optional baseline row)."""
    what = f"{final['encoder']}, {final['bits']} bits" if final.get("encoder") else f"{final['bits']} bits"
    table = Table(title=f"{final['method']} ({what}) on {final['dataset']}: test")
    table.add_column("mode")
    table.add_column("Recall@20", justify="right")
    table.add_column("NDCG@20", justify="right")
    rows = [(m, v) for m, v in final["test"].items()]
    if baseline is not None:
        rows.append(("most popular", baseline))
    for name, m in rows:
        table.add_row(name, f"{m.get('recall@20', float('nan')):.4f}", f"{m.get('ndcg@20', float('nan')):.4f}")
    from rich.console import Console

    Console().print(table)
    console.print(f"run folder: {run_dir}  ({final['epochs_run']} epochs, {final['train_seconds']:.0f} s training)")
