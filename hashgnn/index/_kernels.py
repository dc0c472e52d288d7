"""numba kernels of the retrieval engine: exact Hamming top-k and inner-product re-ranking.

Item codes are stored word-major: a C-contiguous ``(W, n)`` array of ``uint64`` words (``uint32`` for
code widths that are not a multiple of 8 bytes), so that every word of every item is a contiguous
stream and the distance loop vectorises without shuffles. The distance of a pair is the sum over words
of ``popcount(q ^ x)``; LLVM turns the loops below into AVX-512 ``vpopcntq``/``vpopcntd`` where the CPU
has it and into scalar ``popcnt`` elsewhere (never a software bit count).

Top-k without a heap. Distances are integers in ``0..maxd``; per query the kernel keeps a histogram of
the distances it has accepted and a threshold ``T``: the smallest ``t`` with at least ``k`` accepted
items at distance ``<= t``. Items are visited in increasing position, so a later item at distance
``>= T`` can never enter the result (``k`` earlier items are at least as close) and is rejected. The
hot loop only computes, for each group of ``GROUP`` items, whether the group's minimum distance is
below ``T`` (branch-free, vectorised, nothing stored); a group that passes yields a 64-bit mask of its
candidates, whose set bits are visited with ``tzcnt``, and only those items touch the per-query
buffer. A stable counting sort by distance at the end gives the exact order (distance, position). For
large k a sampled starting threshold replaces the cold start; a query whose estimate proves too low
is scanned again from scratch, so the estimate never changes a result.

Blocking: a block of queries walks the items chunk by chunk, so each chunk (a few KiB) comes from memory
once per block and from L1/L2 for every other query of the block. Work units are (query block, item
shard); shards split the items only when there are too few query blocks to feed every thread, and their
partial results are merged per query.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from hashgnn.threads import start_numba_threads

start_numba_threads()  # a kernel of this module may be the process's first numba parallel region

GROUP = 128  # items whose minimum distance is tested before any of them is looked at one by one
SAMPLE_PIECES = 64  # runs of contiguous items that make up the sample of a threshold estimate


def _cache_probe() -> int:
    return 0


def _numba_can_cache() -> bool:
    """Whether numba finds a writable cache for this file (beside it, $NUMBA_CACHE_DIR or the user's cache).

    When none is (a read-only install, a locked-down home), ``cache=CACHE`` raises at decoration time,
    which would make every import of the kernels fail; the kernels are then compiled in memory in each
    process instead (a few seconds at first use) and nothing is written.
    """
    try:
        njit(cache=True)(_cache_probe)
    except RuntimeError:
        return False
    return True


CACHE = _numba_can_cache()


@intrinsic
def popcount(typingctx, x):  # type: ignore[no-untyped-def]
    """Hardware population count (LLVM ``ctpop``) of an integer, in its own type."""
    if not isinstance(x, types.Integer):
        return None
    sig = x(x)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return sig, codegen


@intrinsic
def trailing_zeros(typingctx, x):  # type: ignore[no-untyped-def]
    """Count of trailing zero bits (LLVM ``cttz``, a single ``tzcnt``); undefined for 0."""
    if not isinstance(x, types.Integer):
        return None
    sig = x(x)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.cttz(args[0], context.get_constant(types.boolean, True))

    return sig, codegen


@intrinsic
def prefetch(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """Ask the CPU to bring the cache line of ``arr[idx]`` in (LLVM ``llvm.prefetch``: read, keep).

    A hint only: no value, no fault on any address, no effect on a result. For loops that know
    which memory they will read a few steps ahead, where the hardware prefetcher cannot guess it.
    """
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def float32_bits(typingctx, x):  # type: ignore[no-untyped-def]
    """The IEEE-754 bits of a float32 as int32 (a register bitcast, no memory)."""
    if x != types.float32:
        return None
    sig = types.int32(x)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def bits_float32(typingctx, x):  # type: ignore[no-untyped-def]
    """The float32 whose IEEE-754 bits are the int32 ``x`` (inverse of :func:`float32_bits`)."""
    if x != types.int32:
        return None
    sig = types.float32(x)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@njit(nogil=True, cache=CACHE, inline="always")
def _is_excluded(pos, ex_indices, lo, hi):  # type: ignore[no-untyped-def]
    # Binary search in the query's sorted excluded positions; called only for accepted candidates.
    while lo < hi:
        mid = (lo + hi) >> 1
        v = ex_indices[mid]
        if v < pos:
            lo = mid + 1
        elif v > pos:
            hi = mid
        else:
            return True
    return False


@njit(nogil=True, cache=CACHE, inline="always")
def _distance(xt, a, j):  # type: ignore[no-untyped-def]
    """Hamming distance of query words ``a`` to item ``j``."""
    s = np.int64(0)
    for w in range(xt.shape[0]):
        s += np.int64(popcount(a[w] ^ xt[w, j]))
    return s


@njit(nogil=True, cache=CACHE)
def _group_hits(xt, a, c0, ng, T, flags):  # type: ignore[no-untyped-def]
    """flags[g] = whether any of items c0 + g*GROUP ... (+GROUP) is at distance < T from ``a``.

    One loop per common width so that LLVM sees a fixed number of word streams. Item indices are
    unsigned on purpose: numba wraps negative signed indices around, and that check alone stops LLVM
    from vectorising the loop (measured: 1 G instead of 30 G pairs/s per core).
    """
    W = xt.shape[0]
    t = np.uint32(T)
    G = np.uint64(GROUP)
    if W == 1:
        a0 = a[0]
        for g in range(ng):
            m = np.uint32(0xFFFF)
            j0 = np.uint64(c0 + g * GROUP)
            for j in range(G):
                u = j0 + np.uint64(j)
                d = np.uint32(popcount(a0 ^ xt[0, u]))
                m = d if d < m else m
            flags[g] = m < t
    elif W == 2:
        a0 = a[0]
        a1 = a[1]
        for g in range(ng):
            m = np.uint32(0xFFFF)
            j0 = np.uint64(c0 + g * GROUP)
            for j in range(G):
                u = j0 + np.uint64(j)
                d = np.uint32(popcount(a0 ^ xt[0, u]) + popcount(a1 ^ xt[1, u]))
                m = d if d < m else m
            flags[g] = m < t
    elif W == 4:
        a0 = a[0]
        a1 = a[1]
        a2 = a[2]
        a3 = a[3]
        for g in range(ng):
            m = np.uint32(0xFFFF)
            j0 = np.uint64(c0 + g * GROUP)
            for j in range(G):
                u = j0 + np.uint64(j)
                d = np.uint32(
                    popcount(a0 ^ xt[0, u])
                    + popcount(a1 ^ xt[1, u])
                    + popcount(a2 ^ xt[2, u])
                    + popcount(a3 ^ xt[3, u])
                )
                m = d if d < m else m
            flags[g] = m < t
    else:
        for g in range(ng):
            m = np.uint32(0xFFFF)
            j0 = np.uint64(c0 + g * GROUP)
            for j in range(G):
                u = j0 + np.uint64(j)
                d = np.uint32(0)
                for w in range(W):
                    d += np.uint32(popcount(a[w] ^ xt[w, u]))
                m = d if d < m else m
            flags[g] = m < t


@njit(nogil=True, cache=CACHE)
def _group_mask(xt, a, j0, L, T):  # type: ignore[no-untyped-def]
    """Bit j set where item j0 + j (j < L <= 64) is at distance < T from ``a`` (vectorised)."""
    W = xt.shape[0]
    b = np.uint64(j0)
    t = np.uint64(T)
    msk = np.uint64(0)
    if W == 1:
        a0 = a[0]
        for j in range(np.uint64(L)):
            msk |= np.uint64(np.uint64(popcount(a0 ^ xt[0, b + j])) < t) << j
    elif W == 2:
        a0 = a[0]
        a1 = a[1]
        for j in range(np.uint64(L)):
            u = b + j
            d = np.uint64(popcount(a0 ^ xt[0, u])) + np.uint64(popcount(a1 ^ xt[1, u]))
            msk |= np.uint64(d < t) << j
    else:
        for j in range(np.uint64(L)):
            u = b + j
            d = np.uint64(0)
            for w in range(W):
                d += np.uint64(popcount(a[w] ^ xt[w, u]))
            msk |= np.uint64(d < t) << j
    return msk


@njit(nogil=True, cache=CACHE)
def _compact(buf_d, buf_i, n, T, c, k):  # type: ignore[no-untyped-def]
    """Keep the items at distance < T and the first ``k - c`` at distance T (buffer order); new length."""
    need_t = k - c
    out = 0
    for j in range(n):
        d = buf_d[j]
        if d < T or (d == T and need_t > 0):
            if d == T:
                need_t -= 1
            buf_d[out] = d
            buf_i[out] = buf_i[j]
            out += 1
    return out


@njit(nogil=True, cache=CACHE)
def _scan_core(xt, qw, q0, q1, i0, i1, k, ex_indptr, ex_indices, maxd, chunk, out_d, out_i, row0, thr):  # type: ignore[no-untyped-def]
    """Top-k of queries q0..q1 over items i0..i1 among items at distance < thr[query] (updated in place).

    Writes sorted rows to out rows row0.. and returns, per query, how many items were accepted: when
    that is below k and the initial thr was below maxd + 1, the result may be incomplete.
    """
    nb = q1 - q0
    span = i1 - i0
    cap = max(1, min(2 * k + 64, span))
    buf_d = np.empty((nb, cap), np.int32)
    buf_i = np.empty((nb, cap), np.int64)
    nbuf = np.zeros(nb, np.int64)
    accepted = np.zeros(nb, np.int64)
    below = np.zeros(nb, np.int64)  # accepted items at distance < thr
    hist = np.zeros((nb, maxd + 2), np.int64)
    flags = np.empty(chunk // GROUP + 1, np.bool_)
    has_ex = ex_indptr.shape[0] > 0
    for c0 in range(i0, i1, chunk):
        L = min(chunk, i1 - c0)
        ng_full = L // GROUP
        ng = (L + GROUP - 1) // GROUP
        for qq in range(nb):
            q = q0 + qq
            T = thr[qq]
            if T == 0:
                continue
            a = qw[q]
            _group_hits(xt, a, c0, ng_full, T, flags)
            if ng > ng_full:
                flags[ng_full] = True  # the ragged tail is simply scanned
            lo = 0
            hi = 0
            if has_ex:
                lo = ex_indptr[q]
                hi = ex_indptr[q + 1]
            for g in range(ng):
                if not flags[g]:
                    continue
                for h in range(0, GROUP, 64):
                    j0 = c0 + g * GROUP + h
                    gl = min(64, c0 + L - j0)
                    if gl <= 0:
                        break
                    msk = _group_mask(xt, a, j0, gl, T)
                    # Visit only the candidates: one tzcnt per set bit.
                    while msk != 0:
                        pos = j0 + np.int64(trailing_zeros(msk))
                        msk &= msk - np.uint64(1)
                        d = _distance(xt, a, pos)
                        if d >= T:
                            continue  # T fell since the mask was taken
                        if hi > lo and _is_excluded(pos, ex_indices, lo, hi):
                            continue
                        n = nbuf[qq]
                        if n == cap:
                            n = _compact(buf_d[qq], buf_i[qq], n, T, below[qq], k)
                        buf_d[qq, n] = d
                        buf_i[qq, n] = pos
                        nbuf[qq] = n + 1
                        accepted[qq] += 1
                        hist[qq, d] += 1
                        # T is the smallest t with k accepted items at distance <= t; c counts those < T.
                        c = below[qq] + 1
                        while c >= k:
                            T -= 1
                            c -= hist[qq, T]
                        below[qq] = c
                if T == 0:
                    break
            thr[qq] = T
    counts = np.zeros(maxd + 2, np.int64)
    for qq in range(nb):
        T = thr[qq]
        n = nbuf[qq]
        if maxd >= T:
            n = _compact(buf_d[qq], buf_i[qq], n, T, below[qq], k)
        # Stable counting sort by distance: buffer order is position order, so ties stay by position.
        counts[:] = 0
        for j in range(n):
            counts[buf_d[qq, j] + 1] += 1
        for t in range(1, maxd + 2):
            counts[t] += counts[t - 1]
        r = row0 + qq
        for j in range(n):
            d = buf_d[qq, j]
            p = counts[d]
            counts[d] = p + 1
            out_d[r, p] = d
            out_i[r, p] = buf_i[qq, j]
        for p in range(n, k):
            out_d[r, p] = -1
            out_i[r, p] = -1
    return accepted


@njit(nogil=True, cache=CACHE)
def _block_distances(xt, a, j0, L, dbuf):  # type: ignore[no-untyped-def]
    """dbuf[j] = distance of ``a`` to item j0 + j for j < L (vectorised; unsigned indices as above)."""
    W = xt.shape[0]
    b = np.uint64(j0)
    for j in range(np.uint64(L)):
        dbuf[j] = 0
    for w in range(W):
        aw = a[w]
        for j in range(np.uint64(L)):
            dbuf[j] += np.int32(popcount(aw ^ xt[w, b + j]))


@njit(nogil=True, cache=CACHE)
def _estimate_threshold(xt, a, i0, i1, k, n_excluded, maxd, sample, dbuf, hist):  # type: ignore[no-untyped-def]
    """A starting threshold from a sample: ``t + 1`` where ~2k items (plus the excluded) are within ``t``.

    The sample is SAMPLE_PIECES evenly spaced runs of contiguous items (vectorised, and robust to
    corpora sorted by popularity). It only speeds the scan up: the caller checks that at least k items
    were accepted and rescans otherwise, so a bad estimate never changes a result.
    """
    span = i1 - i0
    piece = max(1, sample // SAMPLE_PIECES)
    hist[:] = 0
    seen = 0
    for p in range(SAMPLE_PIECES):
        j0 = i0 + (span * p) // SAMPLE_PIECES
        L = min(piece, i1 - j0)
        if L <= 0:
            continue
        _block_distances(xt, a, j0, L, dbuf)
        for j in range(L):
            hist[dbuf[j]] += 1
        seen += L
    # Expected count within t is cum(t) * span / seen; ask for 2k + excluded, and at least 16 sampled
    # items, so that an estimate below the true k-th distance (a rescan) is rare.
    need = max(16.0, (2.0 * k + n_excluded) * seen / span)
    c = 0
    for t in range(maxd + 1):
        c += hist[t]
        if c >= need:
            return t + 1
    return maxd + 1


@njit(nogil=True, cache=CACHE)
def _scan_block(xt, qw, q0, q1, i0, i1, k, ex_indptr, ex_indices, maxd, chunk, out_d, out_i, row0, sample):  # type: ignore[no-untyped-def]
    """Exact top-k of queries q0..q1 over items i0..i1, written sorted to out rows row0.. .

    With ``sample`` > 0, each query starts from a threshold estimated on that many items instead of
    accepting everything until k items are in; queries whose estimate proved too low are rescanned.
    """
    nb = q1 - q0
    thr = np.full(nb, maxd + 1, np.int64)
    span = i1 - i0
    if sample > 0 and span > 4 * sample:
        dbuf = np.empty(max(1, sample // SAMPLE_PIECES), np.int32)
        hist = np.zeros(maxd + 2, np.int64)
        has_ex = ex_indptr.shape[0] > 0
        for qq in range(nb):
            q = q0 + qq
            nex = ex_indptr[q + 1] - ex_indptr[q] if has_ex else 0
            thr[qq] = _estimate_threshold(xt, qw[q], i0, i1, k, nex, maxd, sample, dbuf, hist)
    start = thr.copy()
    accepted = _scan_core(xt, qw, q0, q1, i0, i1, k, ex_indptr, ex_indices, maxd, chunk, out_d, out_i, row0, thr)
    for qq in range(nb):
        if accepted[qq] < k and start[qq] <= maxd:
            again = np.full(1, maxd + 1, np.int64)
            _scan_core(
                xt,
                qw,
                q0 + qq,
                q0 + qq + 1,
                i0,
                i1,
                k,
                ex_indptr,
                ex_indices,
                maxd,
                chunk,
                out_d,
                out_i,
                row0 + qq,
                again,
            )


@njit(parallel=True, nogil=True, cache=CACHE)
def hamming_topk(xt, qw, k, ex_indptr, ex_indices, maxd, n_shards, qblock, chunk, sample, out_d, out_i):  # type: ignore[no-untyped-def]
    """Exact Hamming top-k of every row of ``qw`` (nq, W) against word-major items ``xt`` (W, n).

    ``ex_indptr``/``ex_indices``: CSR (sorted per row) of item positions to skip per query, or an empty
    ``indptr`` for none. ``chunk`` must be a multiple of ``GROUP``. ``sample``: items per shard used to
    estimate a starting threshold (0: none). Output rows are sorted by (distance, position) and padded
    with -1.
    """
    n = xt.shape[1]
    nq = qw.shape[0]
    nqb = (nq + qblock - 1) // qblock
    shard = (n + n_shards - 1) // n_shards
    shard = ((shard + chunk - 1) // chunk) * chunk
    if n_shards == 1:
        for b in prange(nqb):
            q0 = b * qblock
            q1 = min(q0 + qblock, nq)
            _scan_block(xt, qw, q0, q1, 0, n, k, ex_indptr, ex_indices, maxd, chunk, out_d, out_i, q0, sample)
        return
    part_d = np.empty((n_shards * nq, k), np.int32)
    part_i = np.empty((n_shards * nq, k), np.int64)
    for u in prange(nqb * n_shards):
        b = u // n_shards
        s = u % n_shards
        q0 = b * qblock
        q1 = min(q0 + qblock, nq)
        i0 = min(s * shard, n)
        i1 = min(i0 + shard, n)
        _scan_block(xt, qw, q0, q1, i0, i1, k, ex_indptr, ex_indices, maxd, chunk, part_d, part_i, s * nq + q0, sample)
    for q in prange(nq):
        # Shards hold increasing positions, so a stable counting sort over the shards in order keeps
        # (distance, position) order.
        counts = np.zeros(maxd + 2, np.int64)
        for s in range(n_shards):
            r = s * nq + q
            for j in range(k):
                d = part_d[r, j]
                if d < 0:
                    break
                counts[d + 1] += 1
        for t in range(1, maxd + 2):
            counts[t] += counts[t - 1]
        total = counts[maxd + 1]
        for s in range(n_shards):
            r = s * nq + q
            for j in range(k):
                d = part_d[r, j]
                if d < 0:
                    break
                p = counts[d]
                counts[d] = p + 1
                if p < k:
                    out_d[q, p] = d
                    out_i[q, p] = part_i[r, j]
        for p in range(min(total, k), k):
            out_d[q, p] = -1
            out_i[q, p] = -1


@njit(nogil=True, cache=CACHE, inline="always")
def _descending_key(score, pos):  # type: ignore[no-untyped-def]
    """uint64 key that sorts by score descending, then position ascending (float32 order as integers)."""
    if score == 0:
        score = np.float32(0.0)  # -0.0 == 0.0: one key, so that the position breaks the tie
    bits = np.int64(float32_bits(score))
    # Order-preserving map of float32 bits to uint32 (negatives flipped, positives offset by 2^31) ...
    u = (~bits) & 0xFFFFFFFF if bits < 0 else bits | 0x80000000
    # ... complemented for descending order, then the position breaks ties.
    return np.uint64(((0xFFFFFFFF - u) << 32) | pos)


@njit(nogil=True, cache=CACHE, inline="always")
def _key_score(key):  # type: ignore[no-untyped-def]
    """The score a :func:`_descending_key` was made from (exactly)."""
    u = 0xFFFFFFFF - np.int64(key >> np.uint64(32))
    bits = u & 0x7FFFFFFF if u >= 0x80000000 else (~u) & 0xFFFFFFFF
    return bits_float32(np.int32(bits if bits < 0x80000000 else bits - 0x100000000))


@njit(parallel=True, nogil=True, cache=CACHE, fastmath=True)
def rerank_ip(item_z, query_z, cand, k, out_s, out_i):  # type: ignore[no-untyped-def]
    """Top-k of each query's candidates (positions, -1 padded) by inner product, ties by lower position.

    One uint64 key per candidate (score bits, then position) makes the order total, so a partition
    and a sort of the k best replace a stable sort of all C.
    """
    nq, C = cand.shape
    dim = item_z.shape[1]
    for q in prange(nq):
        n = 0
        while n < C and cand[q, n] >= 0:
            n += 1
        keys = np.empty(n, np.uint64)
        for c in range(n):
            p = cand[q, c]
            s = np.float32(0.0)
            for t in range(dim):
                s += item_z[p, t] * query_z[q, t]
            keys[c] = _descending_key(s, p)
        m = min(n, k)
        if m < n:
            keys = np.partition(keys, m - 1)[:m]
        keys = np.sort(keys[:m])
        for j in range(m):
            out_i[q, j] = np.int64(keys[j] & np.uint64(0xFFFFFFFF))
            out_s[q, j] = _key_score(keys[j])
        for j in range(m, k):
            out_s[q, j] = -np.inf
            out_i[q, j] = -1


@njit(nogil=True, cache=CACHE)
def popcount_probe(qs, x, reps):  # type: ignore[no-untyped-def]
    """XOR + popcount + min of ``reps`` queries against a cache-resident ``x``: the arithmetic limit."""
    tot = 0
    for r in range(reps):
        a = qs[r % qs.shape[0]]
        m = np.uint32(0xFFFFFFFF)
        for j in range(x.shape[0]):
            d = np.uint32(popcount(a ^ x[j]))
            m = d if d < m else m
        tot += m
    return tot


@njit(parallel=True, nogil=True, cache=CACHE)
def stream_probe(x, qs):  # type: ignore[no-untyped-def]
    """One query's XOR + popcount over a large (memory-resident) word array: the streaming limit."""
    n = x.shape[0]
    nt = 64
    part = np.zeros(nt, np.uint64)
    step = (n + nt - 1) // nt
    for t in prange(nt):
        a = qs[t % qs.shape[0]]
        s = np.uint64(0)
        j0 = np.uint64(min(n, t * step))
        j1 = np.uint64(min(n, (t + 1) * step))
        for j in range(j1 - j0):  # unsigned indices, as in _group_hits
            s += popcount(a ^ x[j0 + j])
        part[t] = s
    return part.sum()
