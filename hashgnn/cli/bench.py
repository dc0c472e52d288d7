"""``hashgnn bench``: speed benchmarks (``hashgnn bench retrieval``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from hashgnn.cli import app
from hashgnn.cli.common import console, print_json

bench_app = typer.Typer(help="Speed benchmarks on synthetic or run-derived data.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("retrieval")
def retrieval(
    items: Annotated[int, typer.Option("--items", "-n", help="Items in the synthetic corpus.")] = 1_000_000,
    bits: Annotated[
        Optional[int], typer.Option("--bits", "-b", help="Code length K (default 64; with --run: the run's).")
    ] = None,
    queries: Annotated[int, typer.Option("--queries", "-q", help="Queries per method (one timed run each).")] = 1000,
    k: Annotated[int, typer.Option("--k", "-k", help="Results per query.")] = 100,
    threads: Annotated[Optional[int], typer.Option(help="Threads for every method (default: all cores).")] = None,
    run: Annotated[
        Optional[Path],
        typer.Option(
            "--run", "-r", help="Draw codes with the per-bit frequencies of this run's codes instead of uniform bits."
        ),
    ] = None,
    candidates: Annotated[
        list[int], typer.Option("--candidates", "-c", help="C values of hierarchical search (repeat the option).")
    ] = [500, 1000],  # noqa: B006
    methods: Annotated[
        str,
        typer.Option(
            help="Comma-separated subset of own,faiss,hierarchical,float,torch; add hnsw for faiss IndexBinaryHNSW (approximate; recall vs exact reported)."
        ),
    ] = "own,faiss,hierarchical,float,torch",
    seed: Annotated[int, typer.Option(help="Seed of the synthetic corpus.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress messages.")] = False,
) -> None:
    """Queries per second, bytes per item and recall of Hamming, hierarchical and float search.

    Methods: own Hamming kernel, faiss IndexBinaryFlat (best of its heap and counting variants),
    hierarchical search (Hamming top-C re-ranked by inner product), faiss IndexFlatIP and torch
    matmul + topk over K-dimensional float vectors that agree in sign with the codes.
    """
    from hashgnn.index.bench import benchmark_retrieval

    if bits is None and run is None:
        bits = 64
    res = benchmark_retrieval(
        n_items=items,
        bits=bits,
        n_queries=queries,
        k=k,
        threads=threads,
        run_dir=run,
        candidates=tuple(sorted(set(candidates))),
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        seed=seed,
        progress=not quiet,
    )
    if json_out:
        print_json(_jsonable(res))
        return
    _print_table(res)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item"):
        return x.item()
    return x


def _print_table(res: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(
        title=f"{res['items']:,} items x {res['bits']} bits, {res['queries']:,} queries, k = {res['k']}, "
        f"{res['threads']} threads"
    )
    t.add_column("method")
    t.add_column("queries/s", justify="right")
    t.add_column("bytes/item", justify="right")
    t.add_column("recall vs float", justify="right")
    b = res["bytes_per_item"]
    if "own_hamming_qps" in res:
        rec = res.get("hamming_recall_vs_float")
        t.add_row(
            "own Hamming kernel",
            f"{res['own_hamming_qps']:,.0f}",
            str(b["own_hamming"]),
            "" if rec is None else f"{rec:.3f}",
        )
    for name, q in res.get("faiss_hamming_detail", {}).items():
        t.add_row(f"faiss binary flat ({name})", f"{q:,.0f}", str(b["faiss_hamming"]), "")
    for c, h in res.get("hierarchical", {}).items():
        t.add_row(f"hierarchical C={c}", f"{h['qps']:,.0f}", str(b["hierarchical"]), f"{h['recall_vs_float']:.3f}")
    if "float_ip_qps" in res:
        t.add_row("faiss IndexFlatIP", f"{res['float_ip_qps']:,.0f}", str(b["float_ip"]), "1 (reference)")
    if "torch_ip_qps" in res:
        t.add_row("torch matmul + topk", f"{res['torch_ip_qps']:,.0f}", str(b["torch_ip"]), "")
    console.print(t)
    for ef, h in res.get("hnsw", {}).items():
        if ef.startswith("ef"):
            console.print(
                f"faiss IndexBinaryHNSW M={res['hnsw']['M']} efSearch={ef[2:]}: {h['qps']:,.0f} q/s, "
                f"recall vs exact Hamming {h['recall_vs_exact_hamming']:.3f} "
                f"(build {res['hnsw']['build_seconds']:.1f} s)"
            )
    if "limit" in res:
        lim = res["limit"]
        console.print(
            f"arithmetic limit: {lim['popcounts_per_s_per_core'] / 1e9:.1f} G {lim['word_bits']}-bit "
            f"popcounts/s per core -> {lim['compute_limit_qps']:,.0f} q/s on {res['threads']} cores"
        )
    for key in ("own_over_faiss", "hamming_over_float", "hierarchical_over_float"):
        if key in res:
            console.print(f"{key.replace('_', ' ')}: {res[key]:.1f}x")
