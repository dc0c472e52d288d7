"""numba kernel of :class:`~hashgnn.index.WeightedHammingIndex`: exact top-k by weighted Hamming distance.

The distance of item code ``c`` to a query (code ``q``, integer weight ``w_d`` in ``0 .. 2^P - 1`` per
bit) is ``sum_d w_d [q_d != c_d]``. The weights are stored as P bit planes (plane t holds bit t of
every weight), so the distance is ``sum_t 2^t popcount((q ^ c) & plane_t)`` over 64-bit words: P
popcounts per word instead of Hamming's one, and the same 8 bytes per 64-bit item code.

Per query, the items are visited in increasing position, a chunk at a time: one vectorisable pass
computes the chunk's distances, then a compare against the running threshold ``T`` (the smallest
distance with at least k accepted items at or below it) rejects almost every item once the first k
are in; an accepted item goes to a small buffer and lowers ``T`` through a histogram of accepted
distances. Exclusions (sorted positions) are checked only for items that pass. The buffer is sorted
at the end, stably, so the result is exact and deterministic: (distance ascending, position
ascending), as the Hamming kernel's (hashgnn/index/_kernels.py, which prunes the same way).
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


CHUNK = 2048  # items per distance pass: the distances of one chunk stay in L1


@njit(parallel=True, cache=CACHE, nogil=True)
def weighted_topk(items, qw, planes, k, ex_indptr, ex_indices, maxd, n_chunks, out_d, out_i):  # type: ignore[no-untyped-def]
    """items (W, n) uint64 word-major; qw (nq, W) uint64; planes (nq, P, W) uint64; ex_indices sorted
    per query; results in out_d / out_i (nq, k), -1 where fewer than k items remain. Queries go in
    ``n_chunks`` parallel groups, each with its own buffers (allocated once per group)."""
    n_words, n = items.shape
    nq = qw.shape[0]
    has_ex = ex_indptr.shape[0] > 0
    per = -(-nq // n_chunks)
    cap = 4 * k + 64
    for g in prange(n_chunks):
        dist = np.empty(CHUNK, np.uint32)
        hist = np.empty(maxd + 2, np.int64)
        buf_d = np.empty(cap, np.int64)
        buf_i = np.empty(cap, np.int64)
        for qi in range(g * per, min(nq, (g + 1) * per)):
            hist[:] = 0
            # T: the smallest distance with at least k accepted items at or below it (maxd + 1 until
            # k are accepted); below = accepted items with distance < T. An item is accepted only if
            # its distance is < T: items come in increasing position, so one at >= T is beaten by
            # k earlier ones that are at least as close.
            T = maxd + 1
            below = 0
            nb = 0
            e = ex_indptr[qi] if has_ex else 0
            e_end = ex_indptr[qi + 1] if has_ex else 0
            for j0 in range(0, n, CHUNK):
                m = min(CHUNK, n - j0)
                dist[:m] = 0
                for w in range(n_words):
                    _distances(items[w, j0 : j0 + m], qw[qi, w], planes[qi, :, w], dist)
                for jj in range(m):
                    d = np.int64(dist[jj])
                    if d >= T:
                        continue
                    j = j0 + jj
                    while e < e_end and ex_indices[e] < j:
                        e += 1
                    if e < e_end and ex_indices[e] == j:
                        continue
                    if nb == cap:  # keep what can still be in the top k, in position order
                        room = k - below
                        keep = 0
                        at_t = 0
                        for b in range(nb):
                            if buf_d[b] < T or (buf_d[b] == T and at_t < room):
                                if buf_d[b] == T:
                                    at_t += 1
                                buf_d[keep] = buf_d[b]
                                buf_i[keep] = buf_i[b]
                                keep += 1
                        nb = keep
                    buf_d[nb] = d
                    buf_i[nb] = j
                    nb += 1
                    hist[d] += 1
                    below += 1
                    while below >= k:
                        T -= 1
                        below -= hist[T]
            # the accepted items sorted by (distance, position): a stable sort of the position-ordered buffer
            order = np.argsort(buf_d[:nb], kind="mergesort")
            kk = min(k, nb)
            for r in range(kk):
                out_d[qi, r] = buf_d[order[r]]
                out_i[qi, r] = buf_i[order[r]]
            for r in range(kk, k):
                out_d[qi, r] = -1
                out_i[qi, r] = -1


__all__ = ["weighted_topk"]
