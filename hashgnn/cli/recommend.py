"""``hashgnn recommend``: top-k items for some users of a run, or for all of them into a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hashgnn.cli import app
from hashgnn.cli.common import CacheOpt, MirrorOpt, console, print_json
from hashgnn.errors import HashgnnError


def parse_users(users: list[str], extra: list[str]) -> list[str]:
    """Users from ``--users`` plus the bare values that follow it (``--users 0 5 17``); commas split too."""
    out: list[str] = []
    for arg in [*users, *extra]:
        if arg.startswith("-") and not arg.lstrip("-").isdigit():
            raise HashgnnError(f"unexpected option {arg!r}; see `hashgnn recommend --help`")
        out.extend(a for a in arg.split(",") if a)
    return out


@app.command("recommend", context_settings={"allow_extra_args": True})
def recommend(
    ctx: typer.Context,
    run: Annotated[Path, typer.Option("--run", "-r", help="A finished run folder (codes, vectors, config.yaml).")],
    users: Annotated[
        Optional[list[str]],
        typer.Option(
            "--users",
            "-u",
            help="Users to recommend for: indices 0..n-1 (or original ids with --original-ids); several may follow one --users.",
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Items per user.")] = 20,
    mode: Annotated[
        str,
        typer.Option(
            help="hamming (codes) | hierarchical (Hamming top-C re-ranked by vectors) | continuous (vectors) | "
            "weighted (runs with query vectors: weighted Hamming by the query's quantised magnitudes)."
        ),
    ] = "hamming",
    candidates: Annotated[
        Optional[int], typer.Option(help="C of hierarchical search (default: the run's eval.candidates).")
    ] = None,
    all_users: Annotated[bool, typer.Option("--all", help="Recommend for every user and write --out.")] = False,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out", "-o", help="With --all: output file, .parquet or .csv (columns user, rank, item, score)."
        ),
    ] = None,
    original_ids: Annotated[
        bool, typer.Option("--original-ids", help="--users are the data set's original user ids, not indices.")
    ] = False,
    include_seen: Annotated[
        bool, typer.Option("--include-seen", help="Do not exclude the users' training items.")
    ] = False,
    batch_users: Annotated[int, typer.Option(help="With --all: users per batch (bounds memory).")] = 4096,
    threads: Annotated[Optional[int], typer.Option(help="Search threads (default: all cores).")] = None,
    mirror: MirrorOpt = None,
    cache_dir: CacheOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Recommend items for users of a trained run; seen items are excluded.

    Scores: K - 2 x Hamming distance (the codes' inner product) in hamming mode, the inner product of
    the continuous vectors in hierarchical and continuous modes, the quantised query's inner product with
    the item's +-1 code in weighted mode. Ties go to the run's tie order (the lower item index without one).

    Examples: `hashgnn recommend --run runs/g --users 0 5 17 --k 20 --mode hierarchical`;
    `hashgnn recommend --run runs/g --all --out top20.parquet`.
    """
    from hashgnn.index.recommend import recommend as recommend_api
    from hashgnn.index.recommend import recommend_all

    wanted = parse_users(users or [], ctx.args)
    if all_users:
        if wanted:
            raise HashgnnError("give either --users or --all, not both")
        if out is None:
            raise HashgnnError("--all needs --out FILE.parquet (or .csv)")
        summary = recommend_all(
            run,
            out,
            k,
            mode,
            candidates,
            not include_seen,
            batch_users,
            threads,
            progress=not quiet,
            mirror=mirror,
            cache_dir=cache_dir,
        )
        if json_out:
            print_json(summary)
        else:
            console.print(
                f"wrote {summary['rows']:,} rows for {summary['users']:,} users to {out} in {summary['seconds']} s"
            )
        return
    if not wanted:
        raise HashgnnError("give --users U [U ...] (indices 0..n-1) or --all --out FILE")
    if out is not None:
        raise HashgnnError("--out is only used with --all")
    rec = recommend_api(
        run, wanted, k, mode, candidates, not include_seen, original_ids, threads, mirror=mirror, cache_dir=cache_dir
    )
    frame = rec.to_frame()
    if json_out:
        print_json(
            {
                "mode": mode,
                "k": k,
                "recommendations": [
                    {
                        "user": _plain(u),
                        "items": [_plain(i) for i in g["item"]],
                        "scores": [float(s) for s in g["score"]],
                    }
                    for u, g in frame.groupby("user", sort=False)
                ],
            }
        )
        return
    from rich.table import Table

    table = Table(title=f"top-{k} ({mode})")
    for col in ("user", "rank", "item", "score"):
        table.add_column(col, justify="right")
    for row in frame.itertuples(index=False):
        table.add_row(str(row.user), str(row.rank), str(row.item), f"{row.score:.4g}")
    typer.echo(_render(table))


def _plain(x: object) -> object:
    """numpy scalars to plain Python for JSON."""
    return x.item() if hasattr(x, "item") else x


def _render(table: object) -> str:
    from rich.console import Console

    c = Console(record=True, width=100)
    with c.capture() as cap:
        c.print(table)
    return cap.get()
