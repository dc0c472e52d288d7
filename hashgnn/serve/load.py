"""``hashgnn bench serve``: a bounded HTTP load on a real ``hashgnn serve`` on loopback.

The service runs in its own process (``python -m hashgnn serve``); the load generator runs in this
one: ``clients`` concurrent asyncio loops, one keep-alive HTTP/1.1 connection each (a minimal client,
see :class:`_Connection`), each sending its next request when the last one was answered (a closed
loop), for ``seconds`` per cell after a short warm-up. Every loop stops by
itself at the deadline or after ``max_requests``. Reported per mode and client count: requests/s,
p50 / p95 / p99 latency, failed requests, and the mean micro-batch size read from ``/metrics``.

Beside it, the same run's index is timed in this process with the one retrieval path: one query per
search call (the single-query rate) and 1,000 queries in one call (the batch rate of ``hashgnn bench
retrieval``), so the service's rate can be read against the index's own on the same machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hashgnn.errors import HashgnnError


def synthetic_run(folder: str | Path, n_items: int, bits: int = 64, n_users: int = 10_000, seed: int = 0) -> Path:
    """A codes-only run folder of ``n_items`` random items and ``n_users`` users (uniform bits, vectors
    that agree in sign with the codes), as ``hashgnn bench retrieval`` draws them; no config, no data."""
    from hashgnn.codes.artifacts import RunCodes
    from hashgnn.index.bench import synthetic_corpus
    from hashgnn.run import Run

    folder = Path(folder)
    data = synthetic_corpus(n_items, n_users, bits, seed)
    Run(folder).save_codes(RunCodes(bits, data["queries"], data["items"], data["query_z"], data["item_z"]))
    return folder


def index_rates(
    run: str | Path, mode: str, k: int, seconds: float = 2.0, seed: int = 0, threads: int | None = 1
) -> dict[str, float]:
    """Queries/s of the run's index in ``mode`` in this process: one query per call, and 1,000 per call
    (``threads`` per search, as the service's ``--threads``; no exclusions)."""
    from hashgnn.index.recommend import Retriever
    from hashgnn.run import Run

    r = Run(run)
    codes = r.codes
    cand = r.config.eval.candidates if r.file(Run.CONFIG).exists() else 500
    ret = Retriever(codes, mode, min(cand, codes.n_items), threads)
    rng = np.random.default_rng(seed)
    users = rng.integers(0, codes.n_users, 1000)
    ret.search(users[:2], k)  # compile / warm
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ret.search(users[n % 1000 : n % 1000 + 1], k)
        n += 1
    single = n / (time.perf_counter() - t0)
    t1 = time.perf_counter()
    ret.search(users, k)
    batch = 1000 / (time.perf_counter() - t1)
    return {"single_query_qps": single, "batch_1000_qps": batch}


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends GETs and reads their answers.

    A minimal client of its own: httpx's AsyncClient spent 6-13 ms of CPU per request here at 1-64
    concurrent clients (more than the service itself, 2.5-3.6 ms), so it, not the service, set the
    measured rate; this one parses only the status line and Content-Length (the service always sends
    it) and costs a small fraction of that.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if m is None:  # not what hashgnn serve sends; give up on this connection
            await self.close()
            raise ConnectionError("answer without Content-Length")
        await self.reader.readexactly(int(m.group(1)))
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def _load(
    url: str, paths: list[str], clients: int, seconds: float, warmup: float, max_requests: int
) -> dict[str, Any]:
    """``clients`` closed-loop clients, one keep-alive connection each, over ``paths`` in turn."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", int(u.port or 80)
    lat: list[float] = []
    failed = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from, stop_at = start + warmup, start + warmup + seconds

    async def one(i: int) -> None:
        nonlocal failed
        conn = _Connection(host, port)
        j, sent = i, 0
        try:
            while sent < max_requests:
                t0 = loop.time()
                if t0 >= stop_at:
                    return
                try:
                    ok = await asyncio.wait_for(conn.get(paths[j % len(paths)]), 30) == 200
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                    ok = False
                    await conn.close()
                t1 = loop.time()
                if t0 >= measure_from:
                    lat.append(t1 - t0)
                    failed += not ok
                j += clients
                sent += 1
        finally:
            await conn.close()

    await asyncio.gather(*(one(i) for i in range(clients)))
    a = np.asarray(lat) * 1000
    return {
        "clients": clients,
        "requests": len(lat),
        "failed": failed,
        "rps": len(lat) / seconds,
        "p50_ms": float(np.percentile(a, 50)) if len(a) else None,
        "p95_ms": float(np.percentile(a, 95)) if len(a) else None,
        "p99_ms": float(np.percentile(a, 99)) if len(a) else None,
    }


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} ms"


def _batch_means(metrics: str) -> dict[str, tuple[float, float]]:
    out = {}
    for mode in ("hamming", "hierarchical", "continuous"):
        s = re.search(rf'hashgnn_batch_size_sum\{{mode="{mode}"\}} (\S+)', metrics)
        n = re.search(rf'hashgnn_batch_size_count\{{mode="{mode}"\}} (\S+)', metrics)
        out[mode] = (float(s.group(1)) if s else 0.0, float(n.group(1)) if n else 0.0)
    return out


def bench_serve(
    run: str | Path,
    modes: tuple[str, ...] = ("hamming", "hierarchical", "continuous"),
    clients: tuple[int, ...] = (1, 16, 64),
    seconds: float = 3.0,
    warmup: float = 0.5,
    k: int = 20,
    max_requests: int = 100_000,
    server_args: tuple[str, ...] = (),
    index_seconds: float = 2.0,
    threads: int | None = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Drive ``hashgnn serve --run RUN`` on a free loopback port; see the module docstring."""
    import httpx

    from hashgnn.methods import MODES
    from hashgnn.run import Run

    bad = set(modes) - set(MODES)
    if bad:
        raise HashgnnError(f"unknown mode(s) {sorted(bad)}; choose from {', '.join(MODES)}")
    if seconds <= 0 or any(c < 1 for c in clients):
        raise HashgnnError("--seconds must be positive and every client count at least 1")

    def say(msg: str) -> None:
        if progress:
            print(f"[bench serve] {msg}", file=sys.stderr, flush=True)

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "hashgnn", "serve", "--run", str(run), "--port", str(port), "--log-level", "warning"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen([*cmd, *server_args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise HashgnnError(
                    f"hashgnn serve exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
                )
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > 600:
                raise HashgnnError("hashgnn serve was not ready after 600 s")
            time.sleep(0.2)
        info = httpx.get(f"{url}/v1/info", timeout=30).json()
        say(
            f"serving {info['run_id']}: {info['n_items']:,} items, {info['bits']} bits (loaded in {time.monotonic() - t0:.1f} s)"
        )
        n_users = int(info["n_users"])
        rng = np.random.default_rng(0)
        users = rng.integers(0, n_users, 4096)
        codes = Run(run).codes
        user_ids = codes.user_ids
        cells = []
        for mode in modes:
            paths = [
                f"/v1/users/{(user_ids[u].item() if user_ids is not None else int(u))}/recommendations?k={k}&mode={mode}"
                for u in users
            ]
            for c in clients:
                before = _batch_means(httpx.get(f"{url}/metrics", timeout=30).text)[mode]
                cell = asyncio.run(_load(url, paths, c, seconds, warmup, max_requests))
                after = _batch_means(httpx.get(f"{url}/metrics", timeout=30).text)[mode]
                searches = after[1] - before[1]
                cell["mean_batch"] = (after[0] - before[0]) / searches if searches else None
                cell["mode"] = mode
                cells.append(cell)
                say(
                    f"{mode:12s} {c:3d} clients: {cell['rps']:8.0f} req/s  p50 {_ms(cell['p50_ms'])}  "
                    f"p99 {_ms(cell['p99_ms'])}  failed {cell['failed']}  mean batch {cell['mean_batch'] or 0:.1f}"
                )
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    rates = {}
    for mode in modes:
        rates[mode] = index_rates(run, mode, k, index_seconds, threads=threads)
        say(
            f"index alone, {mode}: {rates[mode]['single_query_qps']:,.0f} q/s one per call, {rates[mode]['batch_1000_qps']:,.0f} q/s 1,000 per call"
        )
    for cell in cells:
        cell["vs_single_query_index"] = cell["rps"] / rates[cell["mode"]]["single_query_qps"]
    from hashgnn.index.bench import _cpu_name

    return {
        "run": str(run),
        "run_id": info["run_id"],
        "items": info["n_items"],
        "bits": info["bits"],
        "k": k,
        "threads": threads,
        "seconds_per_cell": seconds,
        "cells": cells,
        "index": rates,
        "machine": f"{_cpu_name()}, {os.cpu_count()} logical CPUs",
        "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
