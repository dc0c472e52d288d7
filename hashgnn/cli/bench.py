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


@bench_app.command("serve")
def serve(
    run: Annotated[
        Optional[Path],
        typer.Option("--run", "-r", help="A run folder to serve (or use --items for a synthetic index)."),
    ] = None,
    items: Annotated[
        Optional[int],
        typer.Option("--items", "-n", help="Serve a synthetic codes-only index of this many items instead of --run."),
    ] = None,
    bits: Annotated[int, typer.Option("--bits", "-b", help="With --items: code length K.")] = 64,
    workdir: Annotated[
        Optional[Path], typer.Option(help="With --items: folder for the synthetic run (default: a temporary one).")
    ] = None,
    modes: Annotated[str, typer.Option(help="Comma-separated modes to drive.")] = "hamming,hierarchical,continuous",
    clients: Annotated[str, typer.Option(help="Comma-separated concurrent client counts.")] = "1,16,64",
    seconds: Annotated[float, typer.Option(help="Measured seconds per (mode, clients) cell.")] = 3.0,
    warmup: Annotated[float, typer.Option(help="Unmeasured seconds before each cell.")] = 0.5,
    k: Annotated[int, typer.Option("--k", "-k", help="Results per request.")] = 20,
    max_requests: Annotated[int, typer.Option(help="Most requests one client sends per cell.")] = 100_000,
    server_arg: Annotated[
        list[str],
        typer.Option(
            "--server-arg", help="An extra option for `hashgnn serve` (repeat; e.g. --server-arg=--batch-wait-ms=0)."
        ),
    ] = [],  # noqa: B006
    threads: Annotated[int, typer.Option(help="Threads per index search, in the service and the index timing.")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress messages.")] = False,
) -> None:
    """Requests/s and p50/p95/p99 latency of `hashgnn serve` on loopback, per mode and client count.

    Starts the service in a subprocess on a free port, drives it with asyncio clients, one keep-alive
    connection each (closed loop: each client sends its next request when the last was answered) for
    --seconds per cell, and
    times the run's index alone in this process (one query per call and 1,000 per call) for comparison.
    """
    import tempfile

    from hashgnn.cli.serve import need_serve_extra
    from hashgnn.errors import HashgnnError
    from hashgnn.serve.load import bench_serve, synthetic_run

    need_serve_extra()
    if (run is None) == (items is None):
        raise HashgnnError("give --run RUN or --items N (a synthetic index), not both")
    tmp = None
    if items is not None:
        if workdir is None:
            tmp = tempfile.TemporaryDirectory(prefix="hashgnn-bench-serve-")
            workdir = Path(tmp.name)
        if not quiet:
            console.print(f"drawing a synthetic index of {items:,} items x {bits} bits into {workdir}")
        run = synthetic_run(workdir / f"synthetic-{items}x{bits}", items, bits)
    assert run is not None
    try:
        res = bench_serve(
            run,
            modes=tuple(m.strip() for m in modes.split(",") if m.strip()),
            clients=tuple(int(c) for c in clients.split(",") if c.strip()),
            seconds=seconds,
            warmup=warmup,
            k=k,
            max_requests=max_requests,
            server_args=tuple(server_arg),
            threads=threads,
            progress=not quiet,
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
    if json_out:
        print_json(_jsonable(res))
        return
    from rich.table import Table

    t = Table(
        title=f"hashgnn serve: {res['items']:,} items x {res['bits']} bits, k = {res['k']}, {res['seconds_per_cell']} s per cell"
    )
    for col in (
        "mode",
        "clients",
        "requests/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "failed",
        "mean batch",
        "vs index 1/call",
    ):
        t.add_column(col, justify="left" if col == "mode" else "right")
    for c in res["cells"]:
        t.add_row(
            c["mode"],
            str(c["clients"]),
            f"{c['rps']:,.0f}",
            *("" if c[q] is None else f"{c[q]:.1f}" for q in ("p50_ms", "p95_ms", "p99_ms")),
            str(c["failed"]),
            f"{c['mean_batch']:.1f}" if c["mean_batch"] else "",
            f"{c['vs_single_query_index']:.0%}",
        )
    console.print(t)
    for mode, r in res["index"].items():
        console.print(
            f"index alone ({mode}): {r['single_query_qps']:,.0f} q/s one query per call, "
            f"{r['batch_1000_qps']:,.0f} q/s 1,000 per call"
        )


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
