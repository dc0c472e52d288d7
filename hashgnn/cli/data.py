"""``hashgnn data``: list the named data sets, fetch one into the cache, describe any data source."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hashgnn.cli import app
from hashgnn.cli.common import (
    DATA,
    CacheOpt,
    ItemColOpt,
    ItemFeaturesOpt,
    MinRatingOpt,
    MirrorOpt,
    NoAtomicFeaturesOpt,
    RatingColOpt,
    SepOpt,
    SplitOpt,
    SplitSeedOpt,
    StrictOpt,
    TestFracOpt,
    TimeColOpt,
    UserColOpt,
    UserFeaturesOpt,
    data_config,
    print_json,
)

data_app = typer.Typer(
    name="data",
    help="Named public data sets and your own interaction files: list, fetch, describe.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


@data_app.command("list")
def list_cmd(json_out: JsonOpt = False) -> None:
    """List the registered data sets with their format, published counts and public address."""
    from hashgnn.data import REGISTRY

    rows = [spec.summary() for spec in REGISTRY.values()]
    if json_out:
        print_json(rows)
        return
    table = Table(title="registered data sets (published counts)")
    for col, justify in (
        ("name", "left"),
        ("format", "left"),
        ("users", "right"),
        ("items", "right"),
        ("train", "right"),
        ("test", "right"),
        ("SHA-256", "left"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            r["name"],
            r["format"],
            f"{r['n_users']:,}",
            f"{r['n_items']:,}",
            f"{r['n_train']:,}",
            f"{r['n_test']:,}",
            "registry" if r["verified"] else "first use",
        )
    out = Console()
    out.print(table)
    # Addresses are long: one per line under the table, so the table fits a narrow terminal.
    for r in rows:
        out.print(f"{r['name']}: {r['url']}", soft_wrap=True)


@data_app.command("fetch")
def fetch_cmd(
    name: Annotated[str, typer.Argument(help="A registered data set name (see `hashgnn data list`).")],
    mirror: MirrorOpt = None,
    cache_dir: CacheOpt = None,
    extras: Annotated[bool, typer.Option("--extras", help="Also fetch side files (id maps, social links).")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fetch a data set into the cache (verified by SHA-256) and print the folder holding it."""
    from hashgnn.data import fetch_dataset

    folder = fetch_dataset(name, mirror=mirror, cache_dir=cache_dir, progress=not quiet, extras=extras)
    if json_out:
        print_json(
            {
                "name": name,
                "path": str(folder),
                "files": sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")),
            }
        )
    else:
        print(folder)


@data_app.command("info")
def info_cmd(
    name_or_path: Annotated[
        str,
        typer.Argument(
            metavar="NAME_OR_PATH",
            help="A registered data set name, a folder holding train.txt and test.txt, or a table file "
            "(.csv, .tsv, .parquet).",
        ),
    ],
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
    valid_fraction: Annotated[
        float,
        typer.Option(
            help="Also carve this fraction of each user's train interactions into a validation split (0: none)."
        ),
    ] = 0.0,
    split_seed: SplitSeedOpt = DATA.seed,
    strict: StrictOpt = DATA.strict,
    user_features: UserFeaturesOpt = None,
    item_features: ItemFeaturesOpt = None,
    no_atomic_features: NoAtomicFeaturesOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Load a data source and print its counts: users, items, train / test (/ valid), density, attributes."""
    from hashgnn.data import carve_validation, load_interactions

    cfg = data_config(
        name_or_path,
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
        split_seed=split_seed,
        strict=strict,
        user_features=user_features,
        item_features=item_features,
        no_atomic_features=no_atomic_features,
    )
    data = load_interactions(cfg, progress=not quiet)
    if valid_fraction:
        data = carve_validation(data, valid_fraction, split_seed)
    stats = data.stats()
    if json_out:
        print_json(stats)
        return
    table = Table(title=f"{stats['name']}", show_header=False)
    table.add_column("key")
    table.add_column("value", justify="right")
    for k, v in stats.items():
        if k == "name":
            continue
        is_count = k.startswith("n_") and isinstance(v, int) and not isinstance(v, bool)
        if isinstance(v, dict) and "columns" in v:
            cols = ", ".join(f"{c} ({t})" for c, t in v["columns"].items())
            table.add_row(k, f"{cols}; {v['nodes_with_a_row']:,} of {v['nodes']:,} nodes have a row in {v['source']}")
            continue
        table.add_row(k, f"{v:,}" if is_count else f"{v:.6g}" if isinstance(v, float) else str(v))
    Console().print(table)


@data_app.command("synth")
def synth_cmd(
    users: Annotated[int, typer.Option("--users", help="Number of users (ids 0..U-1).")],
    items: Annotated[int, typer.Option("--items", help="Number of items (ids 0..I-1).")],
    edges: Annotated[int, typer.Option("--edges", help="Number of distinct user-item interactions.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="A .csv/.tsv/.parquet table (columns user, item; split when trained on), or a folder for "
            "train.txt and test.txt (one line per user, split here).",
        ),
    ],
    seed: Annotated[int, typer.Option(help="Seed of the graph (and of the txt folder's split).")] = 0,
    user_exponent: Annotated[
        float, typer.Option(help="Zipf exponent of user activity (0: uniform; larger: more skewed).")
    ] = 0.5,
    item_exponent: Annotated[float, typer.Option(help="Zipf exponent of item popularity.")] = 0.8,
    test_fraction: Annotated[float, typer.Option(help="txt folder only: each user's test share.")] = 0.2,
    json_out: JsonOpt = False,
) -> None:
    """Write a synthetic bipartite graph with power-law degrees (for scale tests; hashgnn.data.synth)."""
    import time

    import numpy as np

    from hashgnn.data.synth import synth_graph, write_synth

    t0 = time.perf_counter()
    u, i = synth_graph(users, items, edges, seed, user_exponent, item_exponent)
    t1 = time.perf_counter()
    files = write_synth(out, u, i, test_fraction, seed)
    t2 = time.perf_counter()
    ud, id_ = np.bincount(u, minlength=users), np.bincount(i, minlength=items)
    info = {
        "files": [str(f) for f in files],
        "users": users,
        "items": items,
        "edges": len(u),
        "users_with_edges": int(np.count_nonzero(ud)),
        "items_with_edges": int(np.count_nonzero(id_)),
        "max_user_degree": int(ud.max()),
        "max_item_degree": int(id_.max()),
        "seconds_generate": round(t1 - t0, 2),
        "seconds_write": round(t2 - t1, 2),
    }
    if json_out:
        print_json(info)
    else:
        for k, v in info.items():
            print(f"{k}: {v}")
