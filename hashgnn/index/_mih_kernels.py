"""numba kernels of multi-index hashing (:mod:`hashgnn.index.mih`).

Norouzi, Punjani and Fleet, "Fast exact search in Hamming space with multi-index hashing" (TPAMI
2014). A B-bit code is cut into m disjoint substrings; table t maps the value of substring t to the
items that have it (a bucket). An item at Hamming distance d from the query is, by pigeonhole, at
distance <= floor(d / m) from it in at least one substring. So probing every table's buckets at
substring radius 0, 1, 2, ... finds the near items first, and after table t has been probed at
radius r (tables < t at r, tables > t at r - 1) every item at distance <= r m + t has been seen:
the k-th smallest distance found so far is certified exact once it is <= that bound.

Layout: table t's items are stored in bucket order, each with its full code (a copy per table), so
that a bucket is one contiguous run of codes and one cache miss, not one per candidate. ``offsets``
holds every table's bucket boundaries back to back (``offbase[t]`` is table t's first entry).

An item lies in one bucket of every table, so it is met up to m times. Instead of a visited set,
the kernel keeps a meeting only if it is the first in probing order: the item's substring
distances d_i say where it is met ((d_i, i) for every i), and the first is the smallest such pair.

The top-k is the histogram-threshold select of :mod:`hashgnn.index._kernels`: T is the smallest
distance with k accepted items at distance <= T; candidates at distance > T are rejected. Items at
distance T are all kept, so that a final sort by (distance, position) breaks ties by lower position
whatever order the buckets met them in.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hashgnn.index._kernels import _is_excluded, popcount


@njit(nogil=True, cache=True)
def substring_keys(rows, starts, lengths, out):  # type: ignore[no-untyped-def]
    """out[j, t] = the value of substring t (bits starts[t] .. + lengths[t], first bit highest) of row j.

    Bits are numbered as ``numpy.unpackbits`` numbers them: bit b is bit 7 - b % 8 of byte b // 8.
    """
    n = rows.shape[0]
    m = starts.shape[0]
    for j in range(n):
        for t in range(m):
            v = np.uint32(0)
            b0 = starts[t]
            for b in range(b0, b0 + lengths[t]):
                bit = (rows[j, b >> 3] >> np.uint8(7 - (b & 7))) & np.uint8(1)
                v = (v << np.uint32(1)) | np.uint32(bit)
            out[j, t] = v


@njit(nogil=True, cache=True)
def _grow(buf_d, buf_p, n, T, cap):  # type: ignore[no-untyped-def]
    """Drop entries at distance > T; double the buffers if they are still more than half full."""
    out = 0
    for j in range(n):
        if buf_d[j] <= T:
            buf_d[out] = buf_d[j]
            buf_p[out] = buf_p[j]
            out += 1
    if out * 2 > cap:
        cap *= 2
        nd = np.empty(cap, np.int32)
        npos = np.empty(cap, np.int64)
        nd[:out] = buf_d[:out]
        npos[:out] = buf_p[:out]
        return nd, npos, out, cap
    return buf_d, buf_p, out, cap


@njit(parallel=True, nogil=True, cache=True)
def mih_topk(  # type: ignore[no-untyped-def]
    offsets,
    offbase,
    lengths,
    tpos,
    tcodes,
    masks,
    qw,
    qkeys,
    k,
    ex_indptr,
    ex_indices,
    maxd,
    probe_cost,
    cand_cost,
    budget,
    out_d,
    out_i,
    stats,
):
    """Exact top-k of every query by multi-index hashing; see the module docstring.

    Args:
        offsets, offbase: bucket boundaries of all tables (int32/int64), table t's start in them.
        lengths: substring lengths (m,); tpos: (m, n) item positions in bucket order; tcodes:
            (m, n, W) their code words; masks: (m, W) each substring's bits in the word layout.
        qw: (nq, W) query words; qkeys: (nq, m) query substring values.
        probe_cost, cand_cost, budget: a query stops probing when buckets x probe_cost +
            candidates x cand_cost exceeds ``budget`` (a linear scan's cost in the same units) and
            is marked in ``stats[q, 3]`` for the caller to answer by linear scan. A query that cannot fill k (exclusions) is
            marked at once.
        out_d, out_i: (nq, k) results, positions, -1 padded; stats: (nq, 4) int64 per query:
            buckets probed, candidates met, final substring radius, 1 if left to the linear scan.
    """
    nq = qw.shape[0]
    m = lengths.shape[0]
    n = tpos.shape[1]
    W = qw.shape[1]
    has_ex = ex_indptr.shape[0] > 0
    smax = 0
    for t in range(m):
        smax = max(smax, lengths[t])
    for q in prange(nq):
        lo = 0
        hi = 0
        if has_ex:
            lo = ex_indptr[q]
            hi = ex_indptr[q + 1]
        avail = n - (hi - lo)
        for j in range(k):
            out_d[q, j] = -1
            out_i[q, j] = -1
        stats[q, 0] = 0
        stats[q, 1] = 0
        stats[q, 2] = -1
        stats[q, 3] = 0
        if avail < k:
            stats[q, 3] = 1  # every remaining item is in the result: that is a scan
            continue
        a = qw[q]
        cap = 2 * k + 64
        buf_d = np.empty(cap, np.int32)
        buf_p = np.empty(cap, np.int64)
        nbuf = 0
        hist = np.zeros(maxd + 1, np.int64)
        T = maxd
        cnt = 0  # accepted items at distance <= T
        probes = 0
        cands = 0
        done = False
        over = False
        r = 0
        while r <= smax and not done:
            for t in range(m):
                s = lengths[t]
                base = offbase[t]
                key = np.int64(qkeys[q, t])
                lim = np.int64(1) << s
                mask = (np.int64(1) << r) - 1
                while mask < lim:
                    b = key ^ mask
                    a0 = np.int64(offsets[base + b])
                    a1 = np.int64(offsets[base + b + 1])
                    probes += 1
                    cands += a1 - a0
                    for u in range(a0, a1):
                        d = 0
                        for w in range(W):
                            d += popcount(a[w] ^ tcodes[t, u, w])
                        if d > T:
                            continue
                        first = True
                        for i in range(m):
                            if i == t:
                                continue
                            di = 0
                            for w in range(W):
                                di += popcount((a[w] ^ tcodes[t, u, w]) & masks[i, w])
                            if di < r or (di == r and i < t):
                                first = False  # met before, in table i at radius di
                                break
                        if not first:
                            continue
                        p = np.int64(tpos[t, u])
                        if hi > lo and _is_excluded(p, ex_indices, lo, hi):
                            continue
                        if nbuf == cap:
                            buf_d, buf_p, nbuf, cap = _grow(buf_d, buf_p, nbuf, T, cap)
                        buf_d[nbuf] = d
                        buf_p[nbuf] = p
                        nbuf += 1
                        hist[d] += 1
                        cnt += 1
                        while T > 0 and cnt - hist[T] >= k:
                            cnt -= hist[T]
                            T -= 1
                    if probes * probe_cost + cands * cand_cost > budget:
                        over = True
                        break
                    if mask == 0:
                        break
                    # Gosper's hack: the next larger integer with the same number of set bits.
                    c = mask & -mask
                    rr = mask + c
                    mask = (((rr ^ mask) >> 2) // c) | rr
                if over:
                    stats[q, 3] = 1  # this pass is incomplete, so nothing is certified
                    done = True
                elif cnt >= k and r * m + t >= T:
                    done = True  # certified: every item at distance <= T has been met
                elif r == s:
                    done = True  # table t has been probed whole: every item has been met
                if done:
                    break
            if not done:
                r += 1
        stats[q, 0] = probes
        stats[q, 1] = cands
        stats[q, 2] = r
        if stats[q, 3] == 1:
            continue
        # Exact order: (distance, position) keys of the entries at distance <= T, k smallest.
        keys = np.empty(cnt, np.int64)
        c = 0
        for j in range(nbuf):
            if buf_d[j] <= T:
                keys[c] = np.int64(buf_d[j]) * n + buf_p[j]
                c += 1
        keys = np.sort(keys[:c])
        for j in range(min(k, c)):
            out_d[q, j] = keys[j] // n
            out_i[q, j] = keys[j] % n
