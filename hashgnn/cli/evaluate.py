"""`hashgnn evaluate`: full-ranking metrics of a baseline on a data set, or of a trained run."""

from __future__ import annotations

import time
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from hashgnn.cli import app
from hashgnn.cli.common import (
    DATA,
    CacheOpt,
    ItemColOpt,
    MinRatingOpt,
    MirrorOpt,
    RatingColOpt,
    SepOpt,
    SplitOpt,
    SplitSeedOpt,
    StrictOpt,
    TestFracOpt,
    TimeColOpt,
    UserColOpt,
    console,
    data_config,
    print_json,
)
from hashgnn.config import EvalConfig
from hashgnn.errors import ConfigError, HashgnnError
from hashgnn.eval.metrics import METRICS, check_ks
from hashgnn.eval.popular import evaluate_baseline
from hashgnn.methods import ALL_MODES

_DEFAULTS = EvalConfig()  # the library defaults, shown as the options' defaults


def parse_ks(ks: list[int], extra: list[str]) -> list[int]:
    """Cut-offs from ``--k`` plus the bare integers that follow it (``--k 20 50 100``)."""
    values = list(ks)
    for arg in extra:
        try:
            values.append(int(arg))
        except ValueError:
            raise ConfigError(
                f"unexpected argument {arg!r}: only integers may follow --k (for example --k 20 50 100)"
            ) from None
    return check_ks(values)


def metrics_table(result: dict[str, Any], ks: list[int], title: str) -> Table:
    """A rich table: one row per metric, one column per cut-off."""
    table = Table(title=title)
    table.add_column("metric")
    for k in ks:
        table.add_column(f"@{k}", justify="right")
    for m in METRICS:
        table.add_row(m, *(f"{result[f'{m}@{k}']:.4f}" for k in ks))
    return table


DatasetOpt = Annotated[
    Optional[str],
    typer.Option(
        "--dataset",
        "-d",
        help="A registered data set name (see `hashgnn data list`), a folder holding train.txt and "
        "test.txt, or a table file (.csv, .tsv, .parquet). Use with --model.",
    ),
]
ModelOpt = Annotated[str, typer.Option(help="Baseline to evaluate on --dataset: popular (Most-Popular).")]
RunOpt = Annotated[Optional[str], typer.Option(help="A training run folder to evaluate (instead of --dataset).")]
ModeOpt = Annotated[
    str, typer.Option(help="With --run: " + " | ".join(ALL_MODES) + " retrieval (weighted: runs with query vectors).")
]
CandidatesOpt = Annotated[int, typer.Option(help="With --run --mode hierarchical: Hamming candidates re-ranked.")]
KOpt = Annotated[list[int], typer.Option("--k", "-k", help="Cut-offs K, several allowed: --k 20 50 100.")]
LegacyDepthOpt = Annotated[
    Optional[int],
    typer.Option(help="List length whose hits form the ideal DCG of ndcg_legacy (default: the largest K)."),
]
BatchUsersOpt = Annotated[
    int, typer.Option(help="Users scored at a time (the score block takes batch x items x 4 bytes).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the metrics as JSON on stdout.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar on stderr.")]


@app.command("evaluate", context_settings={"allow_extra_args": True})
def evaluate_cmd(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    model: ModelOpt = "popular",
    run: RunOpt = None,
    mode: ModeOpt = "hamming",
    candidates: CandidatesOpt = _DEFAULTS.candidates,
    k: KOpt = _DEFAULTS.ks,
    legacy_depth: LegacyDepthOpt = None,
    batch_users: BatchUsersOpt = _DEFAULTS.batch_users,
    json_out: JsonOpt = False,
    progress: ProgressOpt = True,
    mirror: MirrorOpt = None,
    cache_dir: CacheOpt = None,
    user_col: UserColOpt = DATA.user_col,
    item_col: ItemColOpt = DATA.item_col,
    rating_col: RatingColOpt = None,
    min_rating: MinRatingOpt = None,
    time_col: TimeColOpt = None,
    sep: SepOpt = None,
    split: SplitOpt = DATA.split,
    test_fraction: TestFracOpt = DATA.test_fraction,
    split_seed: SplitSeedOpt = DATA.seed,
    strict: StrictOpt = DATA.strict,
) -> None:
    """Full-ranking evaluation (training items masked, ties to the lower item index): Recall, NDCG (standard and
    legacy), Precision and HitRate at every K, of a baseline on a data set or of a trained run."""
    ks = parse_ks(k, ctx.args)
    if (dataset is None) == (run is None):
        raise ConfigError("give exactly one of --dataset (with --model popular) or --run (a training run folder)")
    start = time.perf_counter()
    if run is not None:
        if legacy_depth is not None:
            raise ConfigError("--legacy-depth applies to --dataset evaluation only (a run uses its own lists)")
        if mode not in ALL_MODES:
            raise ConfigError(f"unknown --mode {mode!r}; choose one of {', '.join(ALL_MODES)}")
        try:
            from hashgnn.train.run import evaluate_run
        except ImportError as e:
            raise HashgnnError(f"evaluating a run needs the training stage, not available here ({e})") from None
        result = evaluate_run(
            run, mode=mode, ks=ks, candidates=candidates, progress=progress, mirror=mirror, cache_dir=cache_dir
        )
        title = f"{run} ({mode})"
    else:
        assert dataset is not None
        cfg = data_config(
            dataset,
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
            valid_fraction=0.0,
            split_seed=split_seed,
            strict=strict,
        )
        result = evaluate_baseline(cfg, model, ks, batch_users, legacy_depth, progress=progress)
        title = f"{model} on {dataset}"
    seconds = time.perf_counter() - start
    console.print(f"evaluated {result.get('n_users', '?')} users in {seconds:.1f} s")
    if json_out:
        print_json(result)
    else:
        Console().print(metrics_table(result, ks, title))
