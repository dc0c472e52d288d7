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

Queries are probed together, in stages (radius r, table t) in the certificate's order: a stage
collects every active query's ring-r buckets of table t, sorts them by bucket (a counting sort), and
walks the table once in memory order, so a bucket that several queries probe is read from memory
once, and the buckets AHEAD in the walk are prefetched. After each stage every query checks its
certificate and the finished ones drop out. A bucket is tested a SPAN at a time by its smallest
distance (vectorised; a loop of fixed length, over the padded table), then 64 codes at a time by a
bit mask. The hot loops call no function that takes an array and rebind no array: numba pays two
atomic reference-count updates for either, and they measured 60% of the search time.

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

from hashgnn.index._kernels import _is_excluded, popcount, prefetch, trailing_zeros

PIECE = 1 << 20  # probes sorted at a time: 16 MB of bucket ids and order
SPAN = 64  # codes of a bucket whose smallest distance is tested before they are looked at; tables
# carry SPAN codes of padding, so that the test always reads a whole SPAN (a loop of fixed length)
AHEAD = 8  # probes ahead whose bucket is prefetched (and twice that for its offsets)


@njit(nogil=True, cache=True)
def substring_keys(rows, order, starts, lengths, out):  # type: ignore[no-untyped-def]
    """out[j, t] = the value of substring t of row j: bits order[starts[t]] .. order[starts[t] + lengths[t] - 1].

    The first of them is the value's highest bit. Bits are numbered as ``numpy.unpackbits`` numbers
    them: bit b is bit 7 - b % 8 of byte b // 8.
    """
    n = rows.shape[0]
    m = starts.shape[0]
    for j in range(n):
        for t in range(m):
            v = np.uint32(0)
            b0 = starts[t]
            for x in range(b0, b0 + lengths[t]):
                b = order[x]
                bit = (rows[j, b >> 3] >> np.uint8(7 - (b & 7))) & np.uint8(1)
                v = (v << np.uint32(1)) | np.uint32(bit)
            out[j, t] = v


@njit(nogil=True, cache=True)
def sampled_candidates(sw, qw, masks, radius, out):  # type: ignore[no-untyped-def]
    """out[q] = sum over tables t of the sample codes within ``radius[q, t]`` of query q on substring t.

    ``sw`` (s, W) and ``qw`` (nq, W) are code words, ``masks`` (m, W) each substring's bits; a
    negative radius counts nothing. Times n / s, it estimates the candidates q's probing meets.
    """
    nq = qw.shape[0]
    ns = np.uint64(sw.shape[0])
    m = masks.shape[0]
    W = qw.shape[1]
    for q in range(nq):
        c = 0
        for t in range(m):
            r = radius[q, t]
            if r < 0:
                continue
            # One loop per common width, over unsigned indices, so that LLVM vectorises it.
            ur = np.uint64(r)
            if W == 1:
                a0 = qw[q, 0]
                k0 = masks[t, 0]
                for x in range(ns):
                    c += np.uint64(popcount((a0 ^ sw[x, 0]) & k0)) <= ur
            elif W == 2:
                a0 = qw[q, 0]
                a1 = qw[q, 1]
                k0 = masks[t, 0]
                k1 = masks[t, 1]
                for x in range(ns):
                    d = np.uint64(popcount((a0 ^ sw[x, 0]) & k0)) + np.uint64(popcount((a1 ^ sw[x, 1]) & k1))
                    c += d <= ur
            else:
                for x in range(ns):
                    d = np.uint64(0)
                    for w in range(W):
                        d += np.uint64(popcount((qw[q, w] ^ sw[x, w]) & masks[t, w]))
                    c += d <= ur
        out[q] = c


@njit(nogil=True, cache=True)
def ring_masks(s, r):  # type: ignore[no-untyped-def]
    """Every ``s``-bit value with ``r`` bits set, ascending (Gosper's hack)."""
    c = np.int64(1)
    for j in range(r):
        c = c * (s - j) // (j + 1)
    out = np.empty(c, np.int64)
    mask = (np.int64(1) << r) - 1
    lim = np.int64(1) << s
    j = 0
    while mask < lim and j < c:
        out[j] = mask
        j += 1
        if mask == 0:
            break
        low = mask & -mask
        rr = mask + low
        mask = (((rr ^ mask) >> 2) // low) | rr
    return out


@njit(nogil=True, cache=True)
def _probe_order(pb, nbuckets):  # type: ignore[no-untyped-def]
    """A permutation that sorts bucket ids ``pb`` (counting sort when the table is small enough)."""
    P = pb.shape[0]
    if nbuckets > 4 * P + 1024:
        return np.argsort(pb)
    counts = np.zeros(nbuckets + 1, np.int64)
    for j in range(P):
        counts[pb[j] + 1] += 1
    for b in range(nbuckets):
        counts[b + 1] += counts[b]
    order = np.empty(P, np.int64)
    for j in range(P):
        b = pb[j]
        order[counts[b]] = j
        counts[b] += 1
    return order


@njit(nogil=True, cache=True)
def _mih_block(  # type: ignore[no-untyped-def]
    q0,
    q1,
    offsets,
    offbase,
    lengths,
    tpos,
    tflat,
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
    """Queries q0..q1 together, in stages (radius r, table t); see :func:`mih_topk`."""
    nb = q1 - q0
    m = lengths.shape[0]
    n = tpos.shape[1]
    W = qw.shape[1]
    uW = np.uint64(W)
    has_ex = ex_indptr.shape[0] > 0
    smax = 0
    for t in range(m):
        smax = max(smax, lengths[t])
    # Fixed buffers: an array variable rebound in the loop (to grow it) costs atomic reference-count
    # updates on every pass, which measured 60% of the search time. A query whose ties at its k-th
    # distance do not fit is left to the scan.
    cap = 4 * k + 256
    buf_d = np.empty((nb, cap), np.int32)
    buf_p = np.empty((nb, cap), np.int64)
    nbuf = np.zeros(nb, np.int64)
    hist = np.zeros((nb, maxd + 1), np.int64)
    T = np.full(nb, maxd, np.int64)
    cnt = np.zeros(nb, np.int64)  # accepted items at distance <= T
    probes = np.zeros(nb, np.int64)
    cands = np.zeros(nb, np.int64)
    state = np.zeros(nb, np.int8)  # 0 probing, 1 certified, 2 left to the scan
    radius = np.full(nb, -1, np.int64)
    active = np.empty(nb, np.int64)
    na = 0
    for qq in range(nb):
        q = q0 + qq
        for j in range(k):
            out_d[q, j] = -1
            out_i[q, j] = -1
        nex = ex_indptr[q + 1] - ex_indptr[q] if has_ex else 0
        if n - nex < k:
            state[qq] = 2  # every remaining item is in the result: that is a scan
        else:
            active[na] = qq
            na += 1
    probe_budget = budget / probe_cost if probe_cost > 0 else np.inf
    r = 0
    while r <= smax and na > 0:
        for t in range(m):
            if na == 0:
                break
            s = lengths[t]
            ring = ring_masks(s, r)
            R = ring.shape[0]
            # A query whose probes alone in this stage pass the budget would pass it here anyway.
            for ai in range(na):
                qq = active[ai]
                if probes[qq] + R > probe_budget:
                    state[qq] = 2
            tf = tflat[t]
            base = offbase[t]
            total = na * R
            for p0 in range(0, total, PIECE):
                p1 = min(total, p0 + PIECE)
                pb = np.empty(p1 - p0, np.int64)
                for p in range(p0, p1):
                    qq = active[p // R]
                    pb[p - p0] = np.int64(qkeys[q0 + qq, t]) ^ ring[p % R]
                order = _probe_order(pb, np.int64(1) << s)
                npb = p1 - p0
                for o in range(npb):
                    # Buckets come in ascending order but with gaps the hardware prefetcher cannot
                    # guess: ask for the bucket AHEAD probes on (and its offsets before that).
                    if o + 2 * AHEAD < npb:
                        prefetch(offsets, base + pb[order[o + 2 * AHEAD]])
                    if o + AHEAD < npb:
                        ua = np.int64(offsets[base + pb[order[o + AHEAD]]])
                        prefetch(tf, ua * W)
                        prefetch(tf, ua * W + 8)
                    j = order[o]
                    qq = active[(p0 + j) // R]
                    if state[qq] != 0:
                        continue
                    b = pb[j]
                    a0 = np.int64(offsets[base + b])
                    a1 = np.int64(offsets[base + b + 1])
                    probes[qq] += 1
                    if a1 > a0:
                        cands[qq] += a1 - a0
                        q = q0 + qq
                        Tq = T[qq]
                        w0 = qw[q, 0]
                        w1 = qw[q, 1] if W > 1 else w0
                        lo = 0
                        hi = 0
                        if has_ex:
                            lo = ex_indptr[q]
                            hi = ex_indptr[q + 1]
                        for s0 in range(a0, a1, SPAN):
                            # A span's smallest distance first (one horizontal reduction per SPAN
                            # codes); only a span that has a candidate is looked at 64 codes at a time.
                            s1 = min(a1, s0 + SPAN)
                            sb = np.uint64(s0)
                            tq = np.uint64(Tq)
                            mn = np.uint64(0)
                            if W == 1:
                                # SPAN codes whatever the bucket's length (the codes after it are
                                # the next bucket's or padding: they can only let a span through).
                                mn32 = np.uint32(255)
                                for j in range(np.uint64(SPAN)):
                                    dd32 = np.uint32(popcount(w0 ^ tf[sb + j]))
                                    mn32 = dd32 if dd32 < mn32 else mn32
                                mn = np.uint64(mn32)
                            elif W == 2:
                                mn = np.uint64(255)
                                for j in range(np.uint64(SPAN)):
                                    v = np.uint64(2) * (sb + j)
                                    dd = np.uint64(popcount(w0 ^ tf[v])) + np.uint64(
                                        popcount(w1 ^ tf[v + np.uint64(1)])
                                    )
                                    mn = dd if dd < mn else mn
                            if mn > tq:
                                continue
                            for g0 in range(s0, s1, 64):
                                # Bit j: code g0 + j is within Tq. Written out here, not called: a
                                # call with arrays costs two atomic reference-count updates per group.
                                # Unsigned indices: a signed index's wrap-around check stops LLVM from
                                # vectorising the loop.
                                gb = np.uint64(g0)
                                L = np.uint64(min(64, s1 - g0))
                                tq = np.uint64(Tq)
                                msk = np.uint64(0)
                                if W == 1:
                                    for j in range(np.uint64(64)):
                                        msk |= np.uint64(np.uint64(popcount(w0 ^ tf[gb + j])) <= tq) << j
                                    if s1 - g0 < 64:
                                        msk &= (np.uint64(1) << L) - np.uint64(1)  # this bucket's codes only
                                elif W == 2:
                                    for j in range(L):
                                        v = np.uint64(2) * (gb + j)
                                        dd = np.uint64(popcount(w0 ^ tf[v])) + np.uint64(
                                            popcount(w1 ^ tf[v + np.uint64(1)])
                                        )
                                        msk |= np.uint64(dd <= tq) << j
                                else:
                                    for j in range(L):
                                        v = uW * (gb + j)
                                        dd = np.uint64(0)
                                        for w in range(uW):
                                            dd += np.uint64(popcount(qw[q, w] ^ tf[v + w]))
                                        msk |= np.uint64(dd <= tq) << j
                                while msk != 0:
                                    u = g0 + np.int64(trailing_zeros(msk))
                                    msk &= msk - np.uint64(1)
                                    d = 0
                                    for w in range(W):
                                        d += popcount(qw[q, w] ^ tf[u * W + w])
                                    if d > Tq:
                                        continue  # T fell since the mask was taken
                                    first = True
                                    for i in range(m):
                                        if i == t:
                                            continue
                                        di = 0
                                        for w in range(W):
                                            di += popcount((qw[q, w] ^ tf[u * W + w]) & masks[i, w])
                                        if di < r or (di == r and i < t):
                                            first = False  # met in table i at radius di, an earlier stage
                                            break
                                    if not first:
                                        continue
                                    pos = np.int64(tpos[t, u])
                                    if hi > lo and _is_excluded(pos, ex_indices, lo, hi):
                                        continue
                                    nn = nbuf[qq]
                                    if nn == cap:
                                        nn = _drop_above(buf_d, buf_p, qq, nn, Tq)
                                        nbuf[qq] = nn
                                        if nn == cap:
                                            state[qq] = 2  # more ties than the buffer holds: the scan answers
                                            break
                                    buf_d[qq, nn] = d
                                    buf_p[qq, nn] = pos
                                    nbuf[qq] = nn + 1
                                    hist[qq, d] += 1
                                    cnt[qq] += 1
                                    while Tq > 0 and cnt[qq] - hist[qq, Tq] >= k:
                                        cnt[qq] -= hist[qq, Tq]
                                        Tq -= 1
                                if state[qq] != 0:
                                    break
                            if state[qq] != 0:
                                break
                        T[qq] = Tq
                    if probes[qq] * probe_cost + cands[qq] * cand_cost > budget:
                        state[qq] = 2
            # Certify: after table t at radius r, every item at distance <= r m + t has been met.
            keep = 0
            for ai in range(na):
                qq = active[ai]
                if state[qq] == 0:
                    if cnt[qq] >= k and r * m + t >= T[qq]:
                        state[qq] = 1
                    elif r == s:
                        state[qq] = 1  # table t has been probed whole: every item has been met
                if state[qq] == 0:
                    active[keep] = qq
                    keep += 1
                else:
                    radius[qq] = r
            na = keep
        if na > 0:
            r += 1
    for qq in range(nb):
        q = q0 + qq
        stats[q, 0] = probes[qq]
        stats[q, 1] = cands[qq]
        stats[q, 2] = radius[qq]
        stats[q, 3] = 1 if state[qq] == 2 else 0
        if state[qq] == 2:
            continue
        # Exact order: (distance, position) keys of the entries at distance <= T, k smallest.
        Tq = T[qq]
        keys = np.empty(cnt[qq], np.int64)
        c = 0
        for j in range(nbuf[qq]):
            if buf_d[qq, j] <= Tq:
                keys[c] = np.int64(buf_d[qq, j]) * n + buf_p[qq, j]
                c += 1
        keys = np.sort(keys[:c])
        for j in range(min(k, c)):
            out_d[q, j] = keys[j] // n
            out_i[q, j] = keys[j] % n


@njit(nogil=True, cache=True)
def _drop_above(buf_d, buf_p, row, n, T):  # type: ignore[no-untyped-def]
    """Keep the entries of buffer row ``row`` at distance <= T (in order); the new length."""
    out = 0
    for j in range(n):
        if buf_d[row, j] <= T:
            buf_d[row, out] = buf_d[row, j]
            buf_p[row, out] = buf_p[row, j]
            out += 1
    return out


@njit(parallel=True, nogil=True, cache=True)
def mih_topk(  # type: ignore[no-untyped-def]
    offsets,
    offbase,
    lengths,
    tpos,
    tflat,
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
    blocks,
    out_d,
    out_i,
    stats,
):
    """Exact top-k of every query by multi-index hashing; see the module docstring.

    Args:
        offsets, offbase: bucket boundaries of all tables (int32/int64), table t's start in them.
        lengths: substring lengths (m,); tpos: (m, n) item positions in bucket order; tflat:
            (m, n W) their code words, item by item; masks: (m, W) each substring's bits in the
            word layout.
        qw: (nq, W) query words; qkeys: (nq, m) query substring values.
        probe_cost, cand_cost, budget: a query stops probing when buckets x probe_cost +
            candidates x cand_cost exceeds ``budget`` (a linear scan's cost in the same units) and
            is marked in ``stats[q, 3]`` for the caller to answer by linear scan. A query that
            cannot fill k (exclusions) is marked at once.
        blocks: the queries are cut into this many blocks of consecutive queries, one per thread.
        out_d, out_i: (nq, k) results, positions, -1 padded; stats: (nq, 4) int64 per query:
            buckets probed, candidates met, final substring radius, 1 if left to the linear scan.
    """
    nq = qw.shape[0]
    size = (nq + blocks - 1) // blocks
    for bi in prange(blocks):
        q0 = bi * size
        q1 = min(nq, q0 + size)
        if q1 > q0:
            _mih_block(
                q0,
                q1,
                offsets,
                offbase,
                lengths,
                tpos,
                tflat,
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
            )
