"""Exact inner-product top-k over real vectors: ``FloatIndex``, the continuous baseline.

Same API as :class:`hashgnn.index.HammingIndex`, scores descending. Backends: ``"faiss"``
(``faiss.IndexFlatIP``, the well-known baseline) and ``"torch"`` (blocked matrix product and the
project's deterministic top-k, :func:`hashgnn.index.topk.topk_desc`: exact ties go to the lower id,
on any device). Runs serve and are evaluated with ``"torch"``. faiss orders exact ties as it likes;
they occur where vectors saturate (hash_gumbel's ``tanh(a)`` is often exactly +-1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from hashgnn.errors import HashgnnError
from hashgnn.index._common import (
    Exclude,
    IdMap,
    SizedIndex,
    check_k,
    check_vectors,
    exclusion_csr,
    faiss_threads,
    no_results,
    pad_columns,
    search_over_fetched,
)

BACKENDS = ("auto", "faiss", "torch")


class FloatIndex(SizedIndex):
    """Exact maximum-inner-product search over ``dim``-dimensional float32 vectors.

    Args:
        dim: vector dimension.
        backend: ``"faiss"`` (``"auto"``) or ``"torch"``.
        device: torch device for ``backend="torch"``.
        threads: threads for a search (None: the library's default).

    ``search`` returns ``(scores float32, ids int64)`` of shape (queries, k), scores descending, padded
    with ``-inf`` and id -1 where fewer than ``k`` items remain after exclusions.
    """

    def __init__(self, dim: int, backend: str = "faiss", *, device: str = "cpu", threads: int | None = None) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or int(dim) <= 0:
            raise HashgnnError(f"dim must be a positive integer, got {dim!r}")
        if backend not in BACKENDS:
            raise HashgnnError(f"unknown float backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.dim = int(dim)
        self.backend = "faiss" if backend == "auto" else backend
        self.device = torch.device(device)
        self.threads = threads
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._idmap = IdMap()
        self._derived: Any = None

    @property
    def vectors(self) -> np.ndarray:
        """The items' vectors in id order."""
        return self._vectors

    @property
    def bytes_per_item(self) -> int:
        """Bytes per item of the stored vectors (float32)."""
        return 4 * self.dim

    def add(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Append float vectors (n, dim); ``ids`` optional unique non-negative ints."""
        v = check_vectors(vectors, self.dim, "FloatIndex.add")
        order = self._idmap.merge(len(v), ids)
        if self.ntotal == len(v) and order is None:
            self._vectors = v  # first add without ids: keep the caller's float32 array, no copy
        else:
            allv = np.concatenate([self._vectors, v])
            self._vectors = np.ascontiguousarray(allv[order] if order is not None else allv)
        self._derived = None

    def search(self, queries: np.ndarray, k: int, exclude: Exclude = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items by inner product: ``(scores, ids)``; ``exclude`` as in HammingIndex.search."""
        q = check_vectors(queries, self.dim, "FloatIndex.search")
        k = check_k(k)
        ex = exclusion_csr(exclude, len(q), self._idmap)
        n = self.ntotal
        kk = min(k, n)
        if n == 0 or len(q) == 0:
            return no_results(len(q), k, -np.inf, np.float32)
        if self.backend == "faiss":
            s, pos = self._search_faiss(q, kk, ex)
        else:
            s, pos = self._search_torch(q, kk, ex)
        s, pos = pad_columns(s, pos, k, -np.inf)
        return s, self._idmap.to_ids(pos)

    def _search_faiss(
        self, q: np.ndarray, k: int, ex: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if self._derived is None:
            index = faiss.IndexFlatIP(self.dim)
            index.add(self._vectors)
            self._derived = index
        index = self._derived

        def search(qq: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
            with faiss_threads(self.threads):
                s, pos = index.search(qq, fetch)
            return np.where(pos < 0, -np.inf, s).astype(np.float32), pos

        # IndexFlatIP's cost is its matrix product, per query cheaper in big batches, and grows with
        # the fetch only when the fetch is a good part of the corpus: grouping queries by their
        # exclusions measured 4.5x as fast on ml-1m (k + 1,851 of 3,952 items) and 0.6-0.9x on gowalla
        # (k + 381 of 40,981); bench/faiss_exclusions.py, docs/BENCHMARKS.md.
        longest = int(np.diff(ex[0]).max()) if ex is not None and len(ex[0]) > 1 else 0
        grouped = 8 * (k + longest) > self.ntotal
        return search_over_fetched(search, q, k, ex, self.ntotal, -np.inf, grouped=grouped)

    def _search_torch(
        self, q: np.ndarray, k: int, ex: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._derived is None:
            self._derived = torch.from_numpy(self._vectors).to(self.device)
        items = self._derived
        qt = torch.from_numpy(q).to(self.device)
        return exact_topk_desc(
            lambda q0, q1, i0, i1: qt[q0:q1] @ items[i0:i1].T, len(q), self.ntotal, k, ex, self.device, self.threads
        )


def exact_topk_desc(
    score_block: Callable[[int, int, int, int], torch.Tensor],
    nq: int,
    n: int,
    k: int,
    ex: tuple[np.ndarray, np.ndarray] | None,
    device: torch.device,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of ``score_block(q0, q1, i0, i1)`` (real scores of queries q0..q1 x item positions
    i0..i1) over all ``n`` positions, by (score desc, position asc), blocked so that only one block
    of scores exists at a time: ``(scores float32, positions int64)``, ``-inf`` / -1 padded.
    ``ex`` is the (indptr, positions) exclusion of :func:`~hashgnn.index._common.exclusion_csr`.
    """
    from hashgnn.index.topk import topk_desc
    from hashgnn.index.torch_search import _exclusion_mask_rows, _sizes, mask_excluded

    qb, ib = _sizes(nq, n, k, device)
    out_s = np.empty((nq, k), np.float32)
    out_p = np.empty((nq, k), np.int64)
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        with torch.inference_mode():
            for q0 in range(0, nq, qb):
                q1 = min(q0 + qb, nq)
                exq = _exclusion_mask_rows(ex, q0, q1)
                best_s = best_p = None
                for i0 in range(0, n, ib):
                    i1 = min(i0 + ib, n)
                    s = mask_excluded(score_block(q0, q1, i0, i1), exq, i0, i1, float("-inf"))
                    # (score desc, position asc) within the block, then merged with the running
                    # best, which comes first and holds only lower positions: ties stay by position
                    top = topk_desc(s, min(k, i1 - i0))
                    top_s = torch.where(top >= 0, s.gather(1, top.clamp(min=0)), float("-inf"))
                    top_p = torch.where(top >= 0, top + i0, -1)
                    if best_s is not None:
                        assert best_p is not None  # set together with best_s
                        top_s, top_p = torch.cat([best_s, top_s], 1), torch.cat([best_p, top_p], 1)
                        j = topk_desc(top_s, min(k, top_s.shape[1]))
                        top_s = torch.where(j >= 0, top_s.gather(1, j.clamp(min=0)), float("-inf"))
                        top_p = torch.where(j >= 0, top_p.gather(1, j.clamp(min=0)), -1)
                    best_s, best_p = top_s, top_p
                assert best_s is not None and best_p is not None
                out_s[q0:q1], out_p[q0:q1] = best_s.cpu().numpy(), best_p.cpu().numpy()
    finally:
        torch.set_num_threads(old)
    return out_s, out_p
