"""numba kernel of :class:`~hashgnn.index.WeightedHammingIndex`: exact top-k by weighted Hamming distance.

The distance of item code ``c`` to a query (code ``q``, integer weight ``w_d`` in ``0 .. 2^P - 1`` per
bit) is ``sum_d w_d [q_d != c_d]``. The weights are stored as P bit planes (plane t holds bit t of
every weight), so the distance is ``sum_t 2^t popcount((q ^ c) & plane_t)`` over 64-bit words: P
popcounts per word instead of Hamming's one, and the same 8 bytes per 64-bit item code.

Per query: one vectorisable pass computes every item's distance into a buffer and a histogram of
them; exclusions are taken out of both; the threshold ``T`` (smallest distance with at least k items
at or below it) comes from the histogram; a last pass in increasing position places the items below
``T`` by a counting sort and fills the rest from the items at ``T`` in position order. The result is
exact and deterministic: (distance ascending, position ascending), as the Hamming kernel's.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hashgnn.index._kernels import CACHE, popcount


@njit(cache=CACHE, nogil=True)
def _distances(items, qword, planes_w, dist):  # type: ignore[no-untyped-def]
    """dist[j] += the weighted distance of item j's word (one word of every item, ``items[j]``)."""
    n_planes = planes_w.shape[0]
    m0 = planes_w[0]
    if n_planes == 1:
        for j in range(items.shape[0]):
            dist[j] += popcount((qword ^ items[j]) & m0)
    elif n_planes == 2:
        m1 = planes_w[1]
        for j in range(items.shape[0]):
            x = qword ^ items[j]
            dist[j] += popcount(x & m0) + (popcount(x & m1) << 1)
    elif n_planes == 3:
        m1, m2 = planes_w[1], planes_w[2]
        for j in range(items.shape[0]):
            x = qword ^ items[j]
            dist[j] += popcount(x & m0) + (popcount(x & m1) << 1) + (popcount(x & m2) << 2)
    else:
        m1, m2, m3 = planes_w[1], planes_w[2], planes_w[3]
        for j in range(items.shape[0]):
            x = qword ^ items[j]
            dist[j] += popcount(x & m0) + (popcount(x & m1) << 1) + (popcount(x & m2) << 2) + (popcount(x & m3) << 3)


@njit(parallel=True, cache=CACHE, nogil=True)
def weighted_topk(items, qw, planes, k, ex_indptr, ex_indices, maxd, n_chunks, out_d, out_i):  # type: ignore[no-untyped-def]
    """items (W, n) uint64 word-major; qw (nq, W) uint64; planes (nq, P, W) uint64; results in
    out_d / out_i (nq, k), -1 where fewer than k items remain. Queries go in ``n_chunks`` parallel
    chunks, each with its own distance buffer and histogram (allocated once per chunk)."""
    n_words, n = items.shape
    nq = qw.shape[0]
    has_ex = ex_indptr.shape[0] > 0
    per = -(-nq // n_chunks)
    for c in prange(n_chunks):
        dist = np.empty(n, np.uint32)
        hist = np.empty(maxd + 2, np.int64)
        off = np.empty(maxd + 2, np.int64)
        for qi in range(c * per, min(nq, (c + 1) * per)):
            dist[:] = 0
            for w in range(n_words):
                _distances(items[w], qw[qi, w], planes[qi, :, w], dist)
            hist[:] = 0
            for j in range(n):
                hist[dist[j]] += 1
            n_ex = 0
            if has_ex:
                for e in range(ex_indptr[qi], ex_indptr[qi + 1]):
                    p = ex_indices[e]
                    hist[dist[p]] -= 1
                    dist[p] = maxd + 1  # past every real distance: never selected
                    n_ex += 1
            kk = min(k, n - n_ex)
            for r in range(max(kk, 0), k):
                out_d[qi, r] = -1
                out_i[qi, r] = -1
            if kk <= 0:
                continue
            # T: the distance at which the k-th item lies; buckets below it are taken whole
            below = 0
            T = 0
            while below + hist[T] < kk:
                off[T] = below
                below += hist[T]
                T += 1
            off[T] = below
            room_at_T = kk - below
            for j in range(n):
                dj = dist[j]
                if dj < T:
                    r = off[dj]
                    off[dj] = r + 1
                elif dj == T and room_at_T > 0:
                    r = off[T]
                    off[T] = r + 1
                    room_at_T -= 1
                else:
                    continue
                out_d[qi, r] = dj
                out_i[qi, r] = j


__all__ = ["weighted_topk"]
