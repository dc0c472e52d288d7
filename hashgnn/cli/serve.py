"""``hashgnn serve``: the HTTP recommendation service over a run folder (FastAPI on uvicorn)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from hashgnn.cli import app
from hashgnn.cli.common import CacheOpt, MirrorOpt
from hashgnn.errors import HashgnnError


def need_serve_extra() -> None:
    """A clear error when the ``serve`` extra (fastapi, uvicorn) is not installed."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise HashgnnError(
            f"serving needs the serve extra ({e.name} is missing): pip install 'hashgnn[serve]'"
        ) from None


@app.command("serve")
def serve(
    run: Annotated[Path, typer.Option("--run", "-r", help="A finished run folder (the output of `hashgnn train`).")],
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port, printed at start).")] = 8000,
    workers: Annotated[
        int, typer.Option(help="Worker processes (each loads the run; put a reverse proxy in front, docs/SERVING.md).")
    ] = 1,
    candidates: Annotated[
        Optional[int], typer.Option(help="C of hierarchical search (default: the run's eval.candidates).")
    ] = None,
    threads: Annotated[
        Optional[int],
        typer.Option(help="Threads per index search (default 1: concurrency comes from batches and workers)."),
    ] = 1,
    max_batch: Annotated[int, typer.Option(help="Most requests micro-batched into one index search.")] = 256,
    batch_wait_ms: Annotated[
        float, typer.Option(help="How long a batch's first request waits for others, in ms (0: no wait).")
    ] = 1.0,
    max_k: Annotated[int, typer.Option(help="Largest k a request may ask for.")] = 1000,
    max_list: Annotated[int, typer.Option(help="Longest item list (allow, deny, a new user's items).")] = 10_000,
    fold_in: Annotated[
        bool, typer.Option("--fold-in/--no-fold-in", help="Build the encoder that codes new users (needs the weights).")
    ] = True,
    admin: Annotated[bool, typer.Option("--admin/--no-admin", help="Enable POST /admin/swap.")] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn log level (critical, error, warning, info, debug).")] = "info",
    mirror: MirrorOpt = None,
    cache_dir: CacheOpt = None,
) -> None:
    """Serve recommendations of RUN over HTTP: trained users, new users folded in, similar items.

    The OpenAPI page is at /docs, the web page at /, Prometheus metrics at /metrics. Stop with Ctrl-C.
    """
    need_serve_extra()
    import uvicorn

    from hashgnn.run import Run
    from hashgnn.serve.app import app_from_env, settings_env
    from hashgnn.serve.service import ServeSettings

    if not run.is_dir() or not ((run / Run.CONFIG).exists() or (run / Run.CODES_HEADER).exists()):
        raise HashgnnError(f"{run}: not a hashgnn run folder (no {Run.CONFIG}); give the --out of `hashgnn train`")
    if workers < 1:
        raise HashgnnError(f"--workers must be at least 1, got {workers}")
    settings = ServeSettings(
        candidates=candidates,
        threads=threads,
        max_k=max_k,
        max_list=max_list,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        fold_in=fold_in,
        admin=admin,
        mirror=mirror,
        cache_dir=cache_dir,
    )
    os.environ.update(settings_env(run.resolve(), settings))
    if workers == 1:
        uvicorn.run(app_from_env(), host=host, port=port, log_level=log_level, access_log=False)
    else:  # worker processes import the factory and read the run from the environment
        uvicorn.run(
            "hashgnn.serve.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=False,
        )
