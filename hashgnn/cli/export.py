"""``hashgnn export``: a finished run's codes into a serving system (``hashgnn export milvus``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hashgnn.cli import app
from hashgnn.cli.common import console, print_json

export_app = typer.Typer(help="Write a run's item codes into a serving system.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("milvus")
def milvus(
    run: Annotated[Path, typer.Option("--run", "-r", help="A finished run folder (codes, config.yaml).")],
    uri: Annotated[
        str, typer.Option("--uri", help="Milvus server or cluster proxy, e.g. http://127.0.0.1:19530.")
    ] = "http://127.0.0.1:19530",
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to create.")] = "hashgnn_items",
    token: Annotated[
        Optional[str], typer.Option(envvar="MILVUS_TOKEN", help="user:password or API key ($MILVUS_TOKEN).")
    ] = None,
    index: Annotated[
        str, typer.Option("--index", help="BIN_FLAT (exact) | BIN_IVF_FLAT (inverted lists, approximate).")
    ] = "BIN_FLAT",
    nlist: Annotated[int, typer.Option(help="BIN_IVF_FLAT: number of inverted lists.")] = 1024,
    batch: Annotated[int, typer.Option(help="Items per insert request.")] = 50_000,
    shards: Annotated[int, typer.Option(help="Shards of the new collection (spread over a cluster's data nodes).")] = 1,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Drop an existing collection of that name first.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Insert the run's item codes (with the data set's own item ids) into a Milvus collection and index it.

    Needs the optional extra: pip install 'hashgnn[milvus]'. Search it from Python with
    hashgnn.index.MilvusIndex(bits, uri, collection).search(queries, k, exclude).
    """
    import time

    from hashgnn.index.milvus import export_run

    t = time.perf_counter()
    idx = export_run(
        run,
        uri,
        collection,
        token=token,
        index_type=index,
        nlist=nlist,
        batch=batch,
        shards=shards,
        overwrite=overwrite,
        progress=not quiet,
    )
    summary = {
        "run": str(run),
        "uri": uri,
        "collection": collection,
        "items": idx.ntotal,
        "bits": idx.bits,
        "index": index,
        "seconds": round(time.perf_counter() - t, 3),
    }
    if json_out:
        print_json(summary)
    elif not quiet:
        console.print(
            f"exported {summary['items']} item codes ({idx.bits} bits) to Milvus collection {collection!r} at {uri} "
            f"with a {index} index in {summary['seconds']:.1f}s"
        )
