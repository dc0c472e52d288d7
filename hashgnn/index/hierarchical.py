"""Hierarchical search (the paper's second retrieval setting): Hamming top-C, then inner-product re-rank.

Stage 1 takes each query's ``candidates`` nearest items by Hamming distance (exact, own kernel, seen
items already excluded); stage 2 scores only those C items with the continuous vectors
(``<z_u, z_i>``, a gather and a dot product per candidate in a parallel numba loop) and keeps the top k,
ties by lower id. C = 500 in the authors' code.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from hashgnn.errors import HashgnnError
from hashgnn.index._common import (
    Exclude,
    IdMap,
    SizedIndex,
    check_bits,
    check_codes,
    check_k,
    check_vectors,
    exclusion_csr,
    numba_threads,
)
from hashgnn.index.hamming import HammingIndex

QUERY_BATCH = 4096  # queries per stage-1/stage-2 round trip; bounds the (batch x C) candidate arrays


class HierarchicalIndex(SizedIndex):
    """Top-``candidates`` by Hamming distance of codes, re-ranked by inner product of vectors.

    Args:
        bits: code length K.
        dim: dimension of the continuous vectors.
        candidates: C, the Hamming short-list length (at least k is used).
        hamming_backend: backend of stage 1 (see :class:`HammingIndex`).
        threads: threads of both stages (None: numba's default).

    ``search`` returns ``(scores float32, ids int64)``, scores descending, padded with ``-inf``/-1.
    """

    def __init__(
        self,
        bits: int,
        dim: int,
        candidates: int = 500,
        *,
        hamming_backend: str = "own",
        threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.bits = check_bits(bits)
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or int(dim) <= 0:
            raise HashgnnError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.candidates = check_k(candidates)
        self.threads = threads
        self._hamming = HammingIndex(bits, hamming_backend, threads=threads, device=device)
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._idmap = IdMap()

    @property
    def bytes_per_item(self) -> int:
        """Bytes per item: the code plus the float32 vector."""
        return self._hamming.bytes_per_item + 4 * self.dim

    def add(self, codes: np.ndarray, vectors: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Append items: packed codes (n, ceil(bits/8)) ``uint8`` and vectors (n, dim)."""
        c = check_codes(codes, self.bits, "HierarchicalIndex.add")
        v = check_vectors(vectors, self.dim, "HierarchicalIndex.add")
        if len(c) != len(v):
            raise HashgnnError(f"HierarchicalIndex.add: {len(c)} codes but {len(v)} vectors; give one of each per item")
        order = self._idmap.merge(len(c), ids)
        if self.ntotal == len(c) and order is None:
            allc, allv = c, v  # first add without ids: no copy of the (possibly large) vectors
        else:
            allc = np.concatenate([self._hamming.codes, c])
            allv = np.concatenate([self._vectors, v])
            if order is not None:
                allc, allv = allc[order], allv[order]
        # Stage 1 works on positions; this index owns the id mapping.
        self._hamming = HammingIndex(
            self.bits, self._hamming.backend, threads=self.threads, device=self._hamming.device
        )
        self._hamming.add(np.ascontiguousarray(allc))
        self._vectors = np.ascontiguousarray(allv)

    def search(
        self,
        query_codes: np.ndarray,
        query_vectors: np.ndarray,
        k: int,
        exclude: Exclude = None,
        candidates: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product among each query's Hamming top-C (C = ``candidates`` or the default)."""
        from hashgnn.index._kernels import rerank_ip

        q = check_codes(query_codes, self.bits, "HierarchicalIndex.search")
        qv = check_vectors(query_vectors, self.dim, "HierarchicalIndex.search")
        if len(q) != len(qv):
            raise HashgnnError(f"HierarchicalIndex.search: {len(q)} query codes but {len(qv)} query vectors")
        k = check_k(k)
        c = max(k, check_k(candidates) if candidates is not None else self.candidates)
        ex = exclusion_csr(exclude, len(q), self._idmap)
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        if self.ntotal == 0:
            return out_s, out_i
        for q0 in range(0, len(q), QUERY_BATCH):
            q1 = min(q0 + QUERY_BATCH, len(q))
            exb = None
            if ex is not None:
                indptr, indices = ex
                exb = _csr_rows(indptr, indices, q0, q1, self.ntotal)
            _, cand = self._hamming.search(q[q0:q1], c, exclude=exb)
            s_b = np.empty((q1 - q0, k), np.float32)
            i_b = np.empty((q1 - q0, k), np.int64)
            with numba_threads(self.threads):
                rerank_ip(self._vectors, np.ascontiguousarray(qv[q0:q1]), cand, k, s_b, i_b)
            out_s[q0:q1], out_i[q0:q1] = s_b, i_b
        return out_s, self._idmap.to_ids(out_i)


def _csr_rows(indptr: np.ndarray, indices: np.ndarray, q0: int, q1: int, n: int) -> sp.csr_matrix:
    """Rows q0..q1 of a (queries x positions) exclusion CSR as a scipy matrix."""
    ip = indptr[q0 : q1 + 1] - indptr[q0]
    ind = indices[indptr[q0] : indptr[q1]]
    return sp.csr_matrix((np.ones(len(ind), np.int8), ind, ip), shape=(q1 - q0, n))
