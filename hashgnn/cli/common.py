"""Options shared by every command that reads interaction data, and console helpers."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from hashgnn.config import DataConfig

console = Console(stderr=True)
DATA = DataConfig(dataset="")  # the defaults of the data options below are DataConfig's

DatasetArg = Annotated[
    str,
    typer.Option(
        "--dataset",
        "-d",
        help="A registered data set name (see `hashgnn data list`), a folder holding train.txt and "
        "test.txt, a table file (.csv, .tsv, .parquet), or a RecBole atomic file (.inter; its .user / "
        ".item beside it give node attributes).",
    ),
]
MirrorOpt = Annotated[
    Optional[str],
    typer.Option(
        help="Mirror to fetch named data sets from: a folder or a file:// / http(s):// base URL "
        "laid out as <name>/<file>. Default: $HASHGNN_DATA_MIRROR, else the public address."
    ),
]
CacheOpt = Annotated[Optional[str], typer.Option(help="Cache folder. Default: $HASHGNN_CACHE or the per-user cache.")]
UserColOpt = Annotated[str, typer.Option(help="Table files: the user id column.")]
ItemColOpt = Annotated[str, typer.Option(help="Table files: the item id column.")]
RatingColOpt = Annotated[Optional[str], typer.Option(help="Table files: an optional rating column.")]
MinRatingOpt = Annotated[Optional[float], typer.Option(help="Table files: keep rows with rating >= this.")]
TimeColOpt = Annotated[Optional[str], typer.Option(help="Table files: an optional timestamp column.")]
SepOpt = Annotated[Optional[str], typer.Option(help="Table files: the separator (default by extension).")]
SplitOpt = Annotated[str, typer.Option(help="Table files: random | temporal | loo (leave last one out).")]
TestFracOpt = Annotated[float, typer.Option(help="Table files: fraction of each user's interactions for test.")]
ValidFracOpt = Annotated[
    float, typer.Option(help="Fraction of each user's train interactions held out for validation (0: none).")
]
SplitSeedOpt = Annotated[int, typer.Option("--split-seed", help="Seed of the random splits.")]
UserFeaturesOpt = Annotated[
    Optional[str],
    typer.Option(
        help="A table of user attributes (.csv/.tsv/.parquet or RecBole .user): column user_id or the first "
        "is the id; the others feed the input encoder (categories embedded, numbers standardised)."
    ),
]
ItemFeaturesOpt = Annotated[
    Optional[str], typer.Option(help="A table of item attributes, like --user-features (id: item_id or the first).")
]
NoAtomicFeaturesOpt = Annotated[
    bool,
    typer.Option("--no-atomic-features", help="RecBole .inter: ignore the .user / .item files beside it."),
]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Fail (instead of warning) on test users/items unseen in train.")
]


def data_config(
    dataset: str,
    mirror: Optional[str] = None,
    cache_dir: Optional[str] = None,
    user_col: str = DATA.user_col,
    item_col: str = DATA.item_col,
    rating_col: Optional[str] = None,
    min_rating: Optional[float] = None,
    time_col: Optional[str] = None,
    sep: Optional[str] = None,
    split: str = DATA.split,
    test_fraction: float = DATA.test_fraction,
    valid_fraction: float = DATA.valid_fraction,
    split_seed: int = DATA.seed,
    strict: bool = DATA.strict,
    user_features: Optional[str] = None,
    item_features: Optional[str] = None,
    no_atomic_features: bool = False,
) -> DataConfig:
    """Collect the shared data options into a :class:`DataConfig`."""
    return DataConfig(
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
        seed=split_seed,
        strict=strict,
        user_features=user_features,
        item_features=item_features,
        atomic_features=DATA.atomic_features and not no_atomic_features,
    )


def print_json(obj: Any) -> None:
    """Print machine-readable output on stdout (progress and messages go to stderr)."""
    print(json.dumps(obj, indent=2, sort_keys=False))
