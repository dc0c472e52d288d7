"""Micro-batching: concurrent requests of one mode become one index search.

Each request puts ``(code, vector, k, exclude)`` on an asyncio queue and awaits a future. One worker
task per (run, mode) takes the first waiting request, collects more for at most ``wait_ms`` (or
until ``max_batch``), runs one :meth:`ServedRun.search` over the stacked queries in a worker thread,
and hands every request its row, cut to its own ``k``. While a search runs, the next batch gathers,
so under load batches grow by themselves and the service pays one search call per batch instead of
one per request (the index's per-call overhead and its threads are shared).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_STOP = object()


@dataclass
class _Pending:
    code: np.ndarray
    vector: np.ndarray
    k: int
    exclude: np.ndarray
    future: asyncio.Future[tuple[np.ndarray, np.ndarray]] = field(repr=False)


class MicroBatcher:
    """Batches the searches of one mode of one served run.

    Args:
        search: ``search(codes, vectors, k, exclude_list) -> (scores, items)`` (one call per batch).
        max_batch: most requests in one search.
        wait_ms: how long the first request of a batch waits for others (0: only those already queued).
        observe: called with each batch's size (a metrics hook).
    """

    def __init__(
        self,
        search: Callable[[np.ndarray, np.ndarray, int, list[np.ndarray]], tuple[np.ndarray, np.ndarray]],
        max_batch: int = 256,
        wait_ms: float = 1.0,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self._search, self.max_batch, self.wait = search, max(1, int(max_batch)), max(0.0, wait_ms) / 1000
        self._observe = observe
        self._queue: asyncio.Queue[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    async def submit(
        self, code: np.ndarray, vector: np.ndarray, k: int, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, items)`` of one query, each of length ``k``, from a batched search."""
        loop = asyncio.get_running_loop()
        if self.closed:  # a request that started before a swap and arrives after its batcher closed
            s, i = await loop.run_in_executor(None, self._search, code[None], vector[None], k, [exclude])
            return s[0], i[0]
        if self._queue is None or self._loop is not loop:  # first call, or a new event loop (test clients)
            self._queue, self._loop = asyncio.Queue(), loop
            self._task = loop.create_task(self._run())
        fut: asyncio.Future[tuple[np.ndarray, np.ndarray]] = loop.create_future()
        self._queue.put_nowait(_Pending(code, vector, k, exclude, fut))
        return await fut

    async def close(self) -> None:
        """Finish the queued requests, then stop the worker task."""
        self.closed = True
        if self._queue is not None and self._task is not None:
            self._queue.put_nowait(_STOP)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        assert self._queue is not None
        q = self._queue
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await q.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = loop.time() + self.wait
            while len(batch) < self.max_batch:
                try:
                    nxt = q.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(q.get(), left)
                    except asyncio.TimeoutError:
                        break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            await self._execute(loop, batch)

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        kmax = max(p.k for p in batch)
        codes = np.stack([p.code for p in batch])
        vectors = np.stack([p.vector for p in batch])
        try:
            scores, items = await loop.run_in_executor(
                None, self._search, codes, vectors, kmax, [p.exclude for p in batch]
            )
        except Exception as e:  # handed to each request, which reports it; the worker goes on
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        if self._observe is not None:
            self._observe(len(batch))
        for j, p in enumerate(batch):
            if not p.future.done():  # a client that went away cancelled its future
                p.future.set_result((scores[j, : p.k], items[j, : p.k]))
