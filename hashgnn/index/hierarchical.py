"""Hierarchical search (the paper's second retrieval setting): Hamming top-C, then inner-product re-rank.

Stage 1 takes each query's ``candidates`` nearest items by Hamming distance (exact, own kernel, seen
items already excluded); stage 2 scores only those C items with the continuous vectors
(``<z_u, z_i>``, a gather and a dot product per candidate in a parallel numba loop) and keeps the top k,
ties by lower id. C = 500 in the authors' code.

With ``hamming_backend="triton"`` (``device="cuda"``) both stages stay on the GPU: the fused kernel's
candidates (positions on the device) are re-ranked by torch ops (a gather of the candidates' vectors,
a batched product, the project's deterministic top-k), and only the final (queries, k) lists come
back to the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from hashgnn.index.triton_hamming import TritonPlan

QUERY_BATCH = 4096  # queries per stage-1/stage-2 round trip; bounds the (batch x C) candidate arrays
RERANK_ELEMENTS = 1 << 25  # gathered vector entries per device re-rank chunk (128 MiB of float32)


class HierarchicalIndex(SizedIndex):
    """Top-``candidates`` by Hamming distance of codes, re-ranked by inner product of vectors.

    Args:
        bits: code length K.
        dim: dimension of the continuous vectors.
        candidates: C, the Hamming short-list length (at least k is used).
        hamming_backend: backend of stage 1 (see :class:`HammingIndex`); ``"triton"`` runs both
            stages on ``device``.
        threads: threads of both stages (None: numba's default).
        device: torch device of the torch and triton backends (``"cuda"`` for a GPU).
        triton_plan: tile sizes of the triton backend (see :class:`HammingIndex`).

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
        triton_plan: TritonPlan | None = None,
    ) -> None:
        self.bits = check_bits(bits)
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or int(dim) <= 0:
            raise HashgnnError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.candidates = check_k(candidates)
        self.threads = threads
        self._hamming = HammingIndex(bits, hamming_backend, threads=threads, device=device, triton_plan=triton_plan)
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._vectors_dev: Any = None  # the vectors as a torch tensor on the device (triton backend)
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
        h = self._hamming
        self._hamming = HammingIndex(
            self.bits, h.backend, threads=self.threads, device=h.device, triton_plan=h.triton_plan
        )
        self._hamming.add(np.ascontiguousarray(allc))
        self._vectors = np.ascontiguousarray(allv)
        self._vectors_dev = None

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
        if self._hamming.backend == "triton":
            s_d, i_d = self._search_device(q, qv, k, c, ex)
            return s_d, self._idmap.to_ids(i_d)
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

    def _search_device(
        self, q: np.ndarray, qv: np.ndarray, k: int, c: int, ex: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Both stages on the triton backend's device; (scores, positions) numpy arrays."""
        import torch

        from hashgnn.index.triton_hamming import words_int32

        items = self._hamming.triton_items()
        if self._vectors_dev is None:
            self._vectors_dev = torch.from_numpy(self._vectors).to(items.device)
        qw = torch.from_numpy(words_int32(q))
        qvt = torch.from_numpy(qv).to(items.device)
        with torch.inference_mode():
            _, cand = items.search_device(qw, min(c, self.ntotal), ex)
            s, pos = rerank_device(self._vectors_dev, qvt, cand, k)
        return s.cpu().numpy(), pos.cpu().numpy()


def rerank_device(vectors: Any, query_vectors: Any, cand: Any, k: int) -> tuple[Any, Any]:
    """Top-k of each query's candidates by inner product, ties by lower position, with torch ops.

    ``vectors`` (n, dim) and ``query_vectors`` (B, dim) float32 tensors, ``cand`` (B, C) positions
    (-1 = none) on one device. Returns (scores float32, positions int64), -inf / -1 padded. The same
    order as :func:`hashgnn.index._kernels.rerank_ip` (float sums may round differently).
    """
    import torch

    from hashgnn.index.topk import topk_desc

    n = vectors.shape[0]
    b, width = cand.shape
    # candidates in position order, so that topk_desc's ties (to the lower column) go to the lower id
    srt = torch.where(cand < 0, torch.full_like(cand, n), cand).long().sort(dim=1).values
    ok = srt < n
    safe = torch.where(ok, srt, torch.zeros_like(srt))
    out_s = torch.full((b, k), float("-inf"), dtype=torch.float32, device=vectors.device)
    out_p = torch.full((b, k), -1, dtype=torch.int64, device=vectors.device)
    rows = max(1, RERANK_ELEMENTS // max(1, width * vectors.shape[1]))
    for r0 in range(0, b, rows):
        r1 = min(b, r0 + rows)
        s = torch.bmm(vectors[safe[r0:r1]], query_vectors[r0:r1, :, None]).squeeze(2)
        s = torch.where(ok[r0:r1], s, torch.full_like(s, float("-inf")))
        col = topk_desc(s, k)
        got = col >= 0
        colc = col.clamp(min=0)
        out_p[r0:r1] = torch.where(got, safe[r0:r1].gather(1, colc), -1)
        out_s[r0:r1] = torch.where(got, s.gather(1, colc), float("-inf"))
    return out_s, out_p


def _csr_rows(indptr: np.ndarray, indices: np.ndarray, q0: int, q1: int, n: int) -> sp.csr_matrix:
    """Rows q0..q1 of a (queries x positions) exclusion CSR as a scipy matrix."""
    ip = indptr[q0 : q1 + 1] - indptr[q0]
    ind = indices[indptr[q0] : indptr[q1]]
    return sp.csr_matrix((np.ones(len(ind), np.int8), ind, ip), shape=(q1 - q0, n))
