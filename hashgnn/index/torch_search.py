"""Blocked exact top-k with torch on any device: Hamming over ±1 codes and float inner product.

The GPU path of the engine (``device="cuda"``) and a portable CPU reference. Hamming distances come
from a matrix product of ±1 codes (``<q, x> = K - 2 * Hamming``; float16 on CUDA, exact for K <= 2048,
float32 on CPU), then ``topk`` over int64 keys ``distance * n + position``: keys are unique, so the
result is exact and deterministic (ties by lower position) whatever ``topk``'s own tie order is.
Queries go in batches and items in blocks whose product stays under a fixed element budget; each
block's top-k is merged into the running one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from hashgnn.arrays import repeat_rows
from hashgnn.codes.packing import unpack_codes


def _budget(device: torch.device) -> int:
    # Elements of one (query batch x item block) score matrix: 1 GiB of int64 on a GPU, 64 MiB on CPU.
    return 1 << 27 if device.type == "cuda" else 1 << 23


def _sizes(nq: int, n: int, k: int, device: torch.device) -> tuple[int, int]:
    qb = max(1, min(nq, 4096 if device.type == "cuda" else 1024))
    ib = max(k, min(n, _budget(device) // qb))
    return qb, ib


def _exclusion_mask_rows(
    ex: tuple[np.ndarray, np.ndarray] | None, q0: int, q1: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows relative to q0, positions) of the exclusions of queries q0..q1."""
    if ex is None:
        return None
    indptr, indices = ex
    lo, hi = int(indptr[q0]), int(indptr[q1])
    rows = repeat_rows(np.diff(indptr[q0 : q1 + 1]))
    return rows, indices[lo:hi]


def mask_excluded(
    s: torch.Tensor, exq: tuple[np.ndarray, np.ndarray] | None, i0: int, i1: int, fill: float | int
) -> torch.Tensor:
    """``s`` (a block of queries x item positions i0..i1) with the block's excluded pairs set to
    ``fill``, in place; ``exq`` is :func:`_exclusion_mask_rows`' answer for the block's queries."""
    if exq is not None:
        rows, cols = exq
        sel = (cols >= i0) & (cols < i1)
        if sel.any():
            s[torch.from_numpy(rows[sel]).to(s.device), torch.from_numpy(cols[sel] - i0).to(s.device)] = fill
    return s


def blocked_topk(
    score_block: Callable[[int, int, int, int], torch.Tensor],
    nq: int,
    n: int,
    k: int,
    device: torch.device,
    ex: tuple[np.ndarray, np.ndarray] | None,
    fill: float | int,
    largest: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over items 0..n of ``score_block(q0, q1, i0, i1)`` (a (q1-q0, i1-i0) tensor), blocked.

    Excluded (query, position) pairs get ``fill`` (worst), and so do missing results. Returns
    (scores, positions) on ``device``; positions -1 where the score is ``fill``.
    """
    qb, ib = _sizes(nq, n, k, device)
    out_s, out_p = [], []
    for q0 in range(0, nq, qb):
        q1 = min(q0 + qb, nq)
        exq = _exclusion_mask_rows(ex, q0, q1)
        best_s: torch.Tensor | None = None
        best_p: torch.Tensor | None = None
        for i0 in range(0, n, ib):
            i1 = min(i0 + ib, n)
            s = mask_excluded(score_block(q0, q1, i0, i1), exq, i0, i1, fill)
            top_s, top_p = torch.topk(s, min(k, i1 - i0), dim=1, largest=largest, sorted=True)
            top_p = top_p + i0
            if best_s is None or best_p is None:
                best_s, best_p = top_s, top_p
            else:
                cat_s = torch.cat([best_s, top_s], dim=1)
                cat_p = torch.cat([best_p, top_p], dim=1)
                best_s, j = torch.topk(cat_s, min(k, cat_s.shape[1]), dim=1, largest=largest, sorted=True)
                best_p = torch.gather(cat_p, 1, j)
        assert best_s is not None and best_p is not None
        best_p = torch.where(best_s == fill, torch.full_like(best_p, -1), best_p)
        out_s.append(best_s)
        out_p.append(best_p)
    return torch.cat(out_s), torch.cat(out_p)


class TorchHammingItems:
    """Item codes resident on a torch device as ±1, searchable by exact Hamming top-k."""

    def __init__(self, rows: np.ndarray, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.kp = rows.shape[1] * 8  # pad bits are 0 in every code, so they add nothing to a distance
        self.n = rows.shape[0]
        self.items = torch.from_numpy(unpack_codes(rows, self.kp)).to(self.device, self.dtype)

    def search(self, q: np.ndarray, k: int, ex: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """(distances int32, positions int64) numpy arrays of shape (len(q), k), -1 padded."""
        qt = torch.from_numpy(unpack_codes(q, self.kp)).to(self.device, self.dtype)
        n = self.n
        sentinel = (self.kp + 1) * n  # larger than every real key
        # int32 keys where they fit: half the memory traffic of the key matrix and of topk.
        kdtype = torch.int32 if sentinel < 2**31 else torch.int64

        def keys(q0: int, q1: int, i0: int, i1: int) -> torch.Tensor:
            ip = qt[q0:q1] @ self.items[i0:i1].T
            d = ((self.kp - ip.float()) * 0.5).round().to(kdtype)
            return d * n + torch.arange(i0, i1, device=self.device, dtype=kdtype)

        with torch.inference_mode():
            key, _ = blocked_topk(keys, len(q), n, k, self.device, ex, sentinel, largest=False)
        keys_np = key.cpu().numpy().astype(np.int64)
        missing = keys_np >= sentinel
        d = np.where(missing, -1, keys_np // n).astype(np.int32)
        pos = np.where(missing, -1, keys_np % n).astype(np.int64)
        return d, pos
