"""Exact Hamming top-k without scanning every code: multi-index hashing, ``MultiIndexHashing``.

Norouzi, Punjani and Fleet, "Fast exact search in Hamming space with multi-index hashing" (TPAMI
2014); the kernel and its certificate are described in :mod:`hashgnn.index._mih_kernels`. Results are
those of :class:`~hashgnn.index.hamming.HammingIndex`, bit for bit: distance ascending, ties by lower
id, -1 padded, the same ``exclude`` forms.

Why not faiss's ``IndexBinaryMultiHash``: it probes a fixed radius (``nflip``) and returns the best
of what it met, so it is approximate and needs a radius chosen per corpus; the certificate here
grows the radius per query until the k-th distance is exact. Multi-index hashing wins when the k-th
nearest code is close (few substring radii to probe) and the corpus is large; a query whose probe
cost would pass a linear scan's (``budget``) is answered by the linear scan of ``HammingIndex``
instead: predicted before any probing from its k-th distance among a sample of the items and the
candidates that the buckets needed to certify it hold in that sample, and, as a
backstop, when the probing actually passes the budget, so a query never costs much more than about
twice a scan. docs/SCALING.md has the measurements.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hashgnn.arrays import repeat_rows
from hashgnn.errors import HashgnnError
from hashgnn.index._common import (
    Exclude,
    SizedIndex,
    check_bits,
    check_codes,
    check_k,
    code_bytes,
    exclusion_csr,
    numba_threads,
)
from hashgnn.index.hamming import MAX_KERNEL_BITS, HammingIndex, to_words

MAX_SUBSTRING_BITS = 26  # a table of 2^26 buckets is 256 MiB of offsets
# Cost of probing one bucket (enumerating its key, a cache miss on the offsets, the run of codes),
# in units of one code of a linear scan: measured ~220 ns a probe against ~3 ns a scanned code on the
# loaded 2-core machine of docs/SCALING.md; 64 errs toward probing.
PROBE_COST = 64
# A candidate in a probed bucket, in scanned codes, where it is not measured (corpora below
# PREDICT_MIN_ITEMS, or too few candidates to time). Measured, it is 2.6 on a CPU without a vector
# popcount and 4.3 on one with it (docs/SCALING.md, 2026-12-05), so larger corpora time it on the
# machine when the tables are built (MultiIndexHashing._calibrate).
CANDIDATE_COST = 3
CANDIDATE_COST_RANGE = (1.0, 16.0)  # a measured cost outside this is a timing accident: clipped
CALIBRATION_QUERIES = 32  # item codes timed through both kernels when the tables are built
CALIBRATION_MIN_CANDIDATES = 2000  # per query; with fewer, the probes' fixed costs swamp the timing
ORDER_SAMPLE = 1 << 16  # codes whose bit correlations choose the substrings (correlated_bit_order)
ORDER_MAX_BITS = 512  # longer codes keep consecutive substrings (the search costs O(bits^2) a swap)
BIT_ORDERS = ("correlation", "consecutive")
SAMPLE_ITEMS = 1 << 16  # items whose distances estimate each query's k-th distance before probing
CANDIDATE_SAMPLE = 1 << 10  # of the sampled items, those whose substring distances estimate the candidates
PREDICT_MIN_ITEMS = 1 << 16  # below this, no estimate: every query probes (with the backstop)


def substring_lengths(bits: int, m: int) -> np.ndarray:
    """Lengths of ``m`` near-equal substrings of a ``bits``-bit code (the first ``bits % m`` one longer)."""
    base, extra = divmod(bits, m)
    return np.array([base + 1] * extra + [base] * (m - extra), np.int64)


def correlated_bit_order(codes: np.ndarray, bits: int, lengths: np.ndarray, sample: int = ORDER_SAMPLE) -> np.ndarray:
    """An order of the ``bits`` bit positions whose consecutive runs of ``lengths`` are the substrings.

    Trained codes have correlated bits; two correlated bits in one substring make some of its buckets
    crowded and others empty, and a query's near buckets are then the crowded ones. So bits are
    assigned to substrings to make the within-substring sum of squared bit correlations (estimated on
    a fixed sample of ``sample`` codes) small: from consecutive substrings, the swap of two bits of
    different substrings that lowers it most is made until none does (at most 4 x bits swaps). At
    10^7 x 64 bits with a trained run's bit statistics this cut the candidates per query by a sixth
    (5 substrings) to a third (4) (docs/SCALING.md). Any order gives exact results; only the work differs. Codes of more than
    ``ORDER_MAX_BITS`` bits, or fewer than two codes, keep the consecutive order.
    """
    order = np.arange(bits, dtype=np.int64)
    n = len(codes)
    if n < 2 or bits > ORDER_MAX_BITS or len(lengths) < 2:
        return order
    rng = np.random.default_rng(0)
    sample = min(sample, max(1024, (1 << 24) // bits))  # at most ~128 MB of float64 bits
    pick = np.sort(rng.choice(n, size=sample, replace=False)) if n > sample else slice(None)
    x = np.unpackbits(codes[pick], axis=1)[:, :bits].astype(np.float64)
    x -= x.mean(0)
    cov = x.T @ x / len(x)
    sd = np.sqrt(np.diag(cov))
    live = sd > 1e-12  # a constant bit has no correlation with anything
    corr = np.zeros_like(cov)
    corr[np.ix_(live, live)] = cov[np.ix_(live, live)] / np.outer(sd[live], sd[live])
    w = corr**2
    np.fill_diagonal(w, 0.0)
    group = repeat_rows(lengths)
    onehot = np.zeros((bits, len(lengths)))
    onehot[np.arange(bits), group] = 1.0
    g = w @ onehot  # g[b, t]: b's weight to the bits of substring t
    for _ in range(4 * bits):
        own = g[np.arange(bits), group]
        across = g[:, group]  # across[i, j] = g[i, group[j]]
        # The change of the within-substring sum when bits i and j trade substrings.
        delta = across - own[:, None] + across.T - own[None, :] - 2.0 * w
        delta[group[:, None] == group[None, :]] = np.inf
        i, j = np.unravel_index(int(np.argmin(delta)), delta.shape)
        if delta[i, j] >= -1e-12:
            break
        ti, tj = group[i], group[j]
        g[:, ti] += w[:, j] - w[:, i]
        g[:, tj] += w[:, i] - w[:, j]
        group[i], group[j] = tj, ti
    return np.concatenate([np.flatnonzero(group == t) for t in range(len(lengths))]).astype(np.int64)


def default_substrings(bits: int, n: int) -> int:
    """Substrings of about log2(n) - 10 bits: buckets of ~1,000 items (docs/SCALING.md).

    Norouzi et al. take log2(n) bits (a bucket per item). Here a bucket is a contiguous run of codes,
    so a candidate is cheap next to a probe, and with trained codes' far k-th neighbours (about 0.3 K
    at k = 100) fewer, fuller buckets measured faster: at 10^7 x 64 bits (2026-12-04, with the bit
    order of :func:`correlated_bit_order`), 5 substrings of 13 bits answered 3.9x the linear scan's
    queries/s, 4 of 16 bits 2.7x and 6 of 10-11 bits 3.2x; log2(n)'s 3 had answered 0.6x (12-01).
    At 10^7 x 128 bits the scan wins: 10 substrings 1.05x (most queries handed to the scan), 8 0.83x.
    """
    target = min(max(round(math.log2(max(n, 2))) - 10, 8), 24)
    m = max(1, round(bits / target), math.ceil(bits / MAX_SUBSTRING_BITS))
    return int(min(m, bits))


class MultiIndexHashing(SizedIndex):
    """Exact top-k Hamming search by multi-index hashing over ``bits``-bit packed codes.

    Args:
        bits: code length K (up to 2048 bits).
        substrings: number m of substrings (hash tables); None picks about ``bits / (log2(n) - 10)``
            when the tables are built (:func:`default_substrings`). At most 26 bits per substring.
        threads: numba threads for a search (None: numba's default).
        budget: a query is answered by the linear scan instead when its probing is predicted to cost
            (or, as it goes, does cost) more than ``budget`` linear scans (buckets probed x
            ``PROBE_COST`` + candidates x ``candidate_cost``, against n); 0 scans every query.
        bit_order: which bits make up each substring. ``"correlation"`` (default) spreads correlated
            bits over the substrings (:func:`correlated_bit_order`, chosen from the items when the
            tables are built); ``"consecutive"`` cuts the code into consecutive runs (Norouzi et al.).
            Results are the same; the work differs.
        candidate_cost: what a candidate costs, in codes of a linear scan, for the router and the
            backstop. None (default) times it on this machine when the tables are built (corpora
            of at least 2^16 items; ``calibration`` keeps the figures) and uses ``CANDIDATE_COST``
            below that; a number fixes it. Results are the same either way; the speed is not.

    Example::

        index = MultiIndexHashing(64)
        index.add(item_codes)                      # uint8 (n_items, 8)
        dist, ids = index.search(user_codes, k=100, exclude=train_csr)
        index.last_stats                           # buckets, candidates, radius, fallbacks
    """

    def __init__(
        self,
        bits: int,
        substrings: int | None = None,
        *,
        threads: int | None = None,
        budget: float = 1.0,
        bit_order: str = "correlation",
        candidate_cost: float | None = None,
    ) -> None:
        self.bits = check_bits(bits)
        if self.bits > MAX_KERNEL_BITS:
            raise HashgnnError(f"MultiIndexHashing supports codes of up to {MAX_KERNEL_BITS} bits, got {self.bits}")
        if substrings is not None:
            if isinstance(substrings, bool) or not isinstance(substrings, (int, np.integer)) or substrings < 1:
                raise HashgnnError(f"substrings must be a positive integer, got {substrings!r}")
            if substrings > self.bits:
                raise HashgnnError(f"substrings ({substrings}) cannot exceed the code length ({self.bits} bits)")
            if -(-self.bits // int(substrings)) > MAX_SUBSTRING_BITS:
                need = -(-self.bits // MAX_SUBSTRING_BITS)
                raise HashgnnError(
                    f"{substrings} substrings of a {self.bits}-bit code are longer than {MAX_SUBSTRING_BITS} "
                    f"bits (2^{MAX_SUBSTRING_BITS} buckets per table); use at least {need}"
                )
        if not isinstance(budget, (int, float)) or budget < 0 or not math.isfinite(budget):
            raise HashgnnError(f"budget must be a non-negative number, got {budget!r}")
        if bit_order not in BIT_ORDERS:
            raise HashgnnError(f"bit_order must be one of {', '.join(BIT_ORDERS)}, got {bit_order!r}")
        if candidate_cost is not None and (
            isinstance(candidate_cost, bool)
            or not isinstance(candidate_cost, (int, float))
            or not math.isfinite(candidate_cost)
            or candidate_cost <= 0
        ):
            raise HashgnnError(f"candidate_cost must be a positive number or None, got {candidate_cost!r}")
        self.bit_order = bit_order
        self.requested_candidate_cost = None if candidate_cost is None else float(candidate_cost)
        self.candidate_cost = self.requested_candidate_cost or float(CANDIDATE_COST)
        self.calibration: dict[str, float] = {}
        self.requested_substrings = None if substrings is None else int(substrings)
        self.threads = threads
        self.budget = float(budget)
        self.code_size = code_bytes(self.bits)
        self._flat = HammingIndex(self.bits, "own", threads=threads)  # codes, ids, and the fallback scan
        self._idmap = self._flat._idmap
        self._tables: dict[str, np.ndarray] | None = None
        self._sample: HammingIndex | None = None
        self._cand_sample: np.ndarray | None = None
        self.last_stats: dict[str, Any] = {}

    @property
    def codes(self) -> np.ndarray:
        """The items' packed codes, (ntotal, code_size) ``uint8``, in id order."""
        return self._flat.codes

    @property
    def ids(self) -> np.ndarray:
        """The items' ids in position order (ascending)."""
        return self._flat.ids

    @property
    def substrings(self) -> int:
        """Number of substrings the tables use (or will use, for the current size)."""
        if self._tables is not None:
            return len(self._tables["lengths"])
        return self.requested_substrings or default_substrings(self.bits, self.ntotal)

    def add(self, codes: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Append packed codes, (n, ceil(bits/8)) ``uint8``; ``ids`` optional unique non-negative ints."""
        self._flat.add(codes, ids)
        self._tables = None  # rebuilt on the next search
        self._sample = None
        self._cand_sample = None

    def memory_bytes(self) -> int:
        """Bytes held by the hash tables and the codes (built tables only)."""
        held = self._flat.bytes_per_item * self.ntotal
        if self._tables is not None:
            held += sum(a.nbytes for a in self._tables.values())
        return int(held)

    def build(self) -> None:
        """Build the hash tables now (``search`` does it on first use after ``add``)."""
        from hashgnn.index import _mih_kernels

        n = self.ntotal
        if n >= np.iinfo(np.int32).max:
            raise HashgnnError(f"MultiIndexHashing holds fewer than 2^31 items, got {n}")
        m = self.substrings
        lengths = substring_lengths(self.bits, m)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        rows = self.codes
        if self.bit_order == "correlation":
            bit_order = correlated_bit_order(rows, self.bits, lengths)
        else:
            bit_order = np.arange(self.bits, dtype=np.int64)
        keys = np.empty((n, m), np.uint32)
        _mih_kernels.substring_keys(rows, bit_order, starts, lengths, keys)
        words = to_words(rows)  # (n, W) in the kernel's word layout
        tpos = np.empty((m, n), np.int32)
        # SPAN codes of padding after each table: the kernel's span test reads whole spans.
        tcodes = np.zeros((m, n + _mih_kernels.SPAN, words.shape[1]), words.dtype)
        offsets = []
        for t in range(m):
            order = np.argsort(keys[:, t], kind="stable")  # within a bucket, positions ascending
            tpos[t] = order
            tcodes[t, :n] = words[order]
            counts = np.bincount(keys[:, t], minlength=1 << int(lengths[t]))
            offsets.append(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        offbase = np.concatenate([[0], np.cumsum([len(o) for o in offsets])[:-1]]).astype(np.int64)
        masks = np.zeros((m, self.code_size), np.uint8)
        for t in range(m):
            bits = np.zeros(self.code_size * 8, bool)
            bits[bit_order[starts[t] : starts[t] + lengths[t]]] = True
            masks[t] = np.packbits(bits)
        self._tables = {
            "offsets": np.concatenate(offsets),
            "offbase": offbase,
            "lengths": lengths,
            "starts": starts,
            "order": bit_order,
            "tpos": tpos,
            "tcodes": tcodes,
            "masks": np.ascontiguousarray(to_words(masks)),
        }
        self.calibration = {}
        if self.requested_candidate_cost is not None:
            self.candidate_cost = self.requested_candidate_cost
        elif n >= PREDICT_MIN_ITEMS:
            self.candidate_cost = self._calibrate()
        else:
            self.candidate_cost = float(CANDIDATE_COST)

    def _calibrate(self) -> float:
        """A candidate's cost in scanned codes on this machine (see ``candidate_cost``).

        ``CALIBRATION_QUERIES`` item codes (a candidate's cost does not depend on who asks) are
        answered by the linear scan and by probing without a budget, best of two turns each after a
        warm-up; the probing time less its buckets x ``PROBE_COST`` scanned codes, over its
        candidates, is the cost. Corpora whose queries meet too few candidates keep the constant.
        """
        import time

        n = self.ntotal
        rng = np.random.default_rng(1)
        q = self.codes[np.sort(rng.choice(n, size=min(CALIBRATION_QUERIES, n), replace=False))]
        k = min(100, n)

        def best(fn: Any) -> tuple[float, Any]:
            fn()  # compiles the kernels once per process, and warms the caches
            times, out = [], None
            for _ in range(2):
                t0 = time.perf_counter()
                out = fn()
                times.append(time.perf_counter() - t0)
            return min(times), out

        t_scan, _ = best(lambda: self._flat.search(q, k))
        t_probe, (_, _, stats) = best(lambda: self._probe(q, k, None, math.inf, 1.0))
        per_code = t_scan / (len(q) * n)
        buckets, candidates = float(stats[:, 0].sum()), float(stats[:, 1].sum())
        self.calibration = {
            "queries": float(len(q)),
            "scan_seconds": t_scan,
            "probe_seconds": t_probe,
            "buckets": buckets,
            "candidates": candidates,
            "scan_ns_per_code": per_code * 1e9,
            "probe_ns_per_candidate": t_probe / max(candidates, 1.0) * 1e9,
        }
        if candidates < CALIBRATION_MIN_CANDIDATES * len(q) or per_code <= 0:
            cost = float(CANDIDATE_COST)
        else:
            cost = (t_probe / per_code - buckets * PROBE_COST) / candidates
            cost = float(np.clip(cost, *CANDIDATE_COST_RANGE))
        self.calibration["candidate_cost"] = cost
        return cost

    def _probe(
        self,
        q: np.ndarray,
        k: int,
        ex: tuple[np.ndarray, np.ndarray] | None,
        budget: float,
        candidate_cost: float,
        qw: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Multi-index probing of packed queries ``q``: distances, positions and per-query stats.

        ``qw`` is ``q`` in the kernel's word layout when the caller has it already.
        """
        import numba

        from hashgnn.index import _mih_kernels

        tb = self._tables
        assert tb is not None
        m = len(tb["lengths"])
        qkeys = np.empty((len(q), m), np.uint32)
        _mih_kernels.substring_keys(q, tb["order"], tb["starts"], tb["lengths"], qkeys)
        empty = np.zeros(0, np.int64)
        indptr, indices = ex if ex is not None else (empty, empty)
        d = np.full((len(q), k), -1, np.int32)
        pos = np.full((len(q), k), -1, np.int64)
        stats = np.zeros((len(q), 4), np.int64)
        if len(q) == 0:
            return d, pos, stats
        with numba_threads(self.threads):
            _mih_kernels.mih_topk(
                tb["offsets"],
                tb["offbase"],
                tb["lengths"],
                tb["tpos"],
                tb["tcodes"].reshape(m, -1),
                tb["masks"],
                np.ascontiguousarray(to_words(q)) if qw is None else qw,
                qkeys,
                k,
                indptr,
                indices,
                self.bits,
                PROBE_COST,
                candidate_cost,
                budget,
                max(1, min(len(q), numba.get_num_threads())),
                d,
                pos,
                stats,
            )
        return d, pos, stats

    def _predict_scan(self, q: np.ndarray, qw: np.ndarray, k: int, lengths: np.ndarray) -> np.ndarray:
        """Queries whose probing is predicted to cost more than ``budget`` scans (bool per query).

        The k-th distance D of a query is estimated by its ``ceil(k s / n)``-th distance among a
        fixed sample of s items; certifying D needs substring radius D // m in the first D % m + 1
        tables and one less in the others. That many buckets are counted, and the candidates in
        them are estimated from ``CANDIDATE_SAMPLE`` of the sampled items (those within the radius
        on each substring, times n over the sample's size).
        """
        n = self.ntotal
        budget = self.budget * n
        if budget <= 0:
            return np.ones(len(q), bool)
        m = len(lengths)
        # cum[t, r] = buckets of table t within radius r (capped at the table's size).
        rmax = int(lengths.max()) + 1
        cum = np.zeros((m, rmax + 1), np.float64)
        for t, s in enumerate(lengths):
            c = np.array([math.comb(int(s), r) for r in range(rmax + 1)], np.float64)
            cum[t] = np.cumsum(c)
        if n < PREDICT_MIN_ITEMS:
            return np.zeros(len(q), bool)  # small corpora: the probing backstop alone
        size = min(SAMPLE_ITEMS, n // 16)  # the estimate costs at most 1/16 of a scan
        if self._sample is None:
            rng = np.random.default_rng(0)
            pick = np.sort(rng.choice(n, size=size, replace=False))
            self._sample = HammingIndex(self.bits, "own", threads=self.threads)
            self._sample.add(self.codes[pick])
            step = max(1, size // CANDIDATE_SAMPLE)  # spread over the (sorted) sample
            self._cand_sample = np.ascontiguousarray(to_words(self.codes[pick[::step][:CANDIDATE_SAMPLE]]))
        ks = max(1, -(-k * size // n))
        d_est = self._sample.search(q, ks)[0][:, ks - 1].astype(np.int64)
        d_est = np.where(d_est < 0, self.bits, d_est)
        r = np.minimum(d_est // m, rmax - 1)
        last = d_est % m
        tables = np.arange(m)[None, :]
        radius = np.where(tables <= last[:, None], r[:, None], r[:, None] - 1)
        probes = np.where(radius >= 0, cum[tables, np.maximum(radius, 0)], 0).sum(1)
        # Candidates from a sample, not from n / 2^s per bucket: trained codes' buckets are far
        # from uniform (near a user's code, emptier than average at 10^7 x 64 bits; at 128 bits, or
        # with a few varying bits, fuller).
        from hashgnn.index import _mih_kernels

        assert self._tables is not None and self._cand_sample is not None
        hits = np.zeros(len(q), np.int64)
        _mih_kernels.sampled_candidates(
            self._cand_sample,
            qw,
            self._tables["masks"],
            np.ascontiguousarray(radius, np.int64),
            hits,
        )
        candidates = hits * (n / len(self._cand_sample))
        return probes * PROBE_COST + candidates * self.candidate_cost > budget

    # ------------------------------------------------------------------------------------ search
    def search(self, query_codes: np.ndarray, k: int, exclude: Exclude = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items of every query: ``(distances, ids)``, int arrays of shape (queries, k).

        Exactly :meth:`HammingIndex.search`'s result: rows sorted by distance, ties by lower id,
        padded with distance -1 and id -1 where fewer than ``k`` items remain; ``exclude`` (a scipy
        sparse matrix of queries x item ids, or a list of id arrays, one per query) removes items.
        """
        q = check_codes(query_codes, self.bits, "MultiIndexHashing.search")
        k = check_k(k)
        ex = exclusion_csr(exclude, len(q), self._idmap)
        n, nq = self.ntotal, len(q)
        if n == 0 or nq == 0:
            self.last_stats = {}
            return np.full((nq, k), -1, np.int32), np.full((nq, k), -1, np.int64)
        if self._tables is None:
            self.build()
        tb = self._tables
        assert tb is not None
        kk = min(k, n)
        m = len(tb["lengths"])
        qw = np.ascontiguousarray(to_words(q))
        routed = self._predict_scan(q, qw, kk, tb["lengths"])
        probe = np.flatnonzero(~routed)
        out_d = np.full((nq, kk), -1, np.int32)  # rows sent to the scan are filled below
        out_i = np.full((nq, kk), -1, np.int64)
        stats = np.zeros((nq, 4), np.int64)
        if ex is not None and len(probe) < nq:
            ex = exclusion_csr(_exclude_rows(exclude, probe), len(probe), self._idmap)
        pd, pi, pstats = self._probe(q[probe], kk, ex, self.budget * n, self.candidate_cost, qw[probe])
        out_d[probe], out_i[probe], stats[probe] = pd, pi, pstats
        stats[routed] = 0
        ids = self._idmap.to_ids(out_i)
        scan = np.flatnonzero(stats[:, 3] | routed)
        if len(scan):
            sub = _exclude_rows(exclude, scan)
            out_d[scan], ids[scan] = self._flat.search(q[scan], kk, exclude=sub)
        self.last_stats = {
            "queries": nq,
            "substrings": m,
            "mean_buckets": float(stats[:, 0].mean()),
            "mean_candidates": float(stats[:, 1].mean()),
            "mean_radius": float(stats[~(stats[:, 3] | routed).astype(bool), 2].mean())
            if len(scan) < nq
            else float("nan"),
            "scanned": len(scan),
            "scanned_predicted": int(routed.sum()),
            "candidate_cost": self.candidate_cost,
        }
        if kk < k:
            out_d = np.concatenate([out_d, np.full((nq, k - kk), -1, out_d.dtype)], axis=1)
            ids = np.concatenate([ids, np.full((nq, k - kk), -1, ids.dtype)], axis=1)
        return out_d, ids


def _exclude_rows(exclude: Exclude, rows: np.ndarray) -> Exclude:
    """The rows ``rows`` of an ``exclude`` argument, in the same form."""
    if exclude is None:
        return None
    import scipy.sparse as sp

    if sp.issparse(exclude):
        return sp.csr_matrix(exclude)[rows]
    seq = list(exclude)
    return [seq[int(i)] for i in rows]
