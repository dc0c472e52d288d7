"""Fused exact Hamming top-k on a GPU (Triton): no score matrix, ties to the lower id, exclusions in the kernel.

``HammingIndex(bits, "triton", device="cuda")`` runs here. The torch path (:mod:`torch_search`)
materialises a (queries x items) score matrix and runs ``topk`` over tie-breaking keys; these kernels
instead walk tiles of packed codes once per pass, keep only a few counters per query in registers and
write exactly ``k`` results per query.

Layout: item codes as ``int32`` words, word-major ``(W, n)`` on the device (codes zero-padded to a
multiple of 4 bytes; zero padding changes no distance), queries ``(Q, W)``. The distance of a pair is
the sum over words of ``popc(q ^ x)`` (``libdevice.popc`` on CUDA; a bit-slicing count in Triton's
interpreter, which has no extern functions). A program owns a block of ``BQ`` queries and one
*split* (a contiguous range of item tiles of ``BN`` items), walked in increasing position.

Exact selection in three passes, no atomics (so every output slot is known in advance):

1. **Bound** (over the first ``bound_fraction`` of the items, in as few splits as fill the GPU): per query a threshold ``U`` that only goes down, and
   counts of the items at distance ``<= U - o`` (``o`` = 0, 1, 2, 4, ..., ``JA`` levels) seen since
   ``U`` last moved; when a level holds ``k`` items, ``U`` drops to it. Any ``k`` real items at distance ``<= U`` prove
   the global k-th distance ``T <= U``, so the minimum over splits is a valid upper bound.
2. **Count**: exact per-(query, split) counts of items at distance ``<= U - j``, ``j < JC``. The
   k-th distance ``T`` is the lowest level with ``k`` items in total; it is resolved when the level
   below it is also in the window (or ``T = 0``), which gives ``count(d < T)`` per split. Queries whose
   ``T`` lies below the window are counted again with the window moved down (rare: the bound is
   usually within a few levels), so the bound never changes a result.
3. **Collect**: every item at distance ``< T`` (fewer than ``k``) goes to a slot given by its split's
   offset plus its rank in the split (a running count plus a ``cumsum`` within the tile); items at
   distance ``T`` fill the remaining ``k - count(d < T)`` slots in position order: split ``s`` takes
   the first ``quota[s]`` of its own, the quotas given to the lowest splits first. That is ties to the
   lower id. A final ``sort`` of the ``(queries, k)`` keys ``distance * n + position`` orders them.

Exclusions (a user's seen items) come as CSR of sorted positions. Each program keeps, per query, a
cursor into its list (starting at the split's first item, found on the host by ``searchsorted``);
per tile it masks the pending excluded positions below the tile's end, one per query per step, so an
excluded item is never counted nor collected. No over-fetch.

The pass parameters (``TritonPlan``) are tunable: ``bench/gpu_retrieval_kernel.py`` measures them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import triton
import triton.language as tl

from hashgnn.errors import HashgnnError

try:  # libdevice moved between Triton releases; the kernels use it only on CUDA
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - very old Triton
    from triton.language.extra.cuda import libdevice


@dataclasses.dataclass(frozen=True)
class TritonPlan:
    """Tile sizes and pass settings of the kernels (powers of two where they are block shapes).

    Attributes:
        block_q: queries per program (BQ).
        block_n: items per tile (BN).
        splits: item splits per query block (None: enough programs to fill the GPU, 4 per SM).
        bound_levels: JA, window of the bound pass.
        count_levels: JC, window of the count pass.
        bound_fraction: part of the items (the first ones) the bound pass scans (a smaller part: a
            cheaper, looser bound; 0: no bound pass, the count pass starts from ``bits``).
        query_batch: queries per round of the three passes (bounds the (queries x splits) counters).
        num_warps: warps per program (CUDA only).
        packed_counts: count four levels per int32 (one byte each) in the count pass; used where
            ``block_n <= 128`` and ``count_levels`` is a multiple of 4.
    """

    block_q: int = 64
    block_n: int = 128
    splits: int | None = None
    bound_levels: int = 8
    count_levels: int = 8
    bound_fraction: float = 0.125
    query_batch: int = 16384
    num_warps: int = 4
    packed_counts: bool = True


# ----------------------------------------------------------------------------------------- kernels
@triton.jit
def _popcount(x, USE_POPC: tl.constexpr):  # type: ignore[no-untyped-def]
    if USE_POPC:
        return libdevice.popc(x)
    else:
        # bit-slicing count (the interpreter has no extern functions); unsigned, so shifts are logical
        u = x.to(tl.uint32, bitcast=True)
        u = u - ((u >> 1) & 0x55555555)
        u = (u & 0x33333333) + ((u >> 2) & 0x33333333)
        u = (u + (u >> 4)) & 0x0F0F0F0F
        u = u + (u >> 8)
        u = u + (u >> 16)
        return (u & 0x3F).to(tl.int32)


@triton.jit
def _tile_distance(  # type: ignore[no-untyped-def]
    items_ptr, n, qbase, offs_n, W: tl.constexpr, USE_POPC: tl.constexpr, BQ: tl.constexpr, BN: tl.constexpr
):
    # (BQ, BN) Hamming distances of the block's queries to the tile's items
    d = tl.zeros((BQ, BN), dtype=tl.int32)
    inside = offs_n < n
    for w in tl.static_range(W):
        x = tl.load(items_ptr + w * n + offs_n, mask=inside, other=0)
        q = tl.load(qbase + w)
        d += _popcount(q[:, None] ^ x[None, :], USE_POPC)
    return d


@triton.jit
def _tile_excluded(ex_ptr, cur, end, offs_n, tile_end, BQ: tl.constexpr, BN: tl.constexpr):  # type: ignore[no-untyped-def]
    # mask of the tile's excluded (query, item) pairs; advances each query's cursor past the tile
    exm = tl.zeros((BQ, BN), dtype=tl.int1)
    e = tl.load(ex_ptr + cur, mask=cur < end, other=0)
    pending = (cur < end) & (e < tile_end)
    while tl.max(pending.to(tl.int32), axis=0) > 0:
        exm = exm | ((offs_n[None, :] == e[:, None]) & pending[:, None])
        cur = cur + pending.to(tl.int32)
        e = tl.load(ex_ptr + cur, mask=cur < end, other=0)
        pending = (cur < end) & (e < tile_end)
    return exm, cur


@triton.jit
def _block_start(  # type: ignore[no-untyped-def]
    q_ptr, rows_ptr, A, exstart_ptr, exend_ptr, S, tiles_per_split, tiles_here, n_tiles,
    W: tl.constexpr, HAS_EX: tl.constexpr, BQ: tl.constexpr,
):  # fmt: skip
    # what every kernel derives from its (query block, split) program: the block's queries, their
    # words, the split's tile range (at most tiles_here tiles), and each query's exclusion cursor
    pid_s = tl.program_id(1)
    a = tl.program_id(0) * BQ + tl.arange(0, BQ)
    amask = a < A
    rows = tl.load(rows_ptr + a, mask=amask, other=0)
    t0 = pid_s * tiles_per_split
    t1 = tl.minimum(t0 + tiles_here, tl.minimum(t0 + tiles_per_split, n_tiles))
    cur = tl.zeros((BQ,), dtype=tl.int32)
    end = tl.zeros((BQ,), dtype=tl.int32)
    if HAS_EX:
        cur = tl.load(exstart_ptr + rows * S + pid_s, mask=amask, other=0)
        end = tl.load(exend_ptr + rows, mask=amask, other=0)
    return a, amask, q_ptr + rows * W, t0, t1, cur, end


@triton.jit
def _tile(  # type: ignore[no-untyped-def]
    items_ptr, n, qbase, amask, ex_ptr, cur, end, t,
    W: tl.constexpr, HAS_EX: tl.constexpr, USE_POPC: tl.constexpr, BQ: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    # tile t's item positions, distances, which (query, item) pairs count, and the advanced cursors
    offs_n = t * BN + tl.arange(0, BN)
    d = _tile_distance(items_ptr, n, qbase, offs_n, W, USE_POPC, BQ, BN)
    valid = (offs_n < n)[None, :] & amask[:, None]
    if HAS_EX:
        exm, cur = _tile_excluded(ex_ptr, cur, end, offs_n, t * BN + BN, BQ, BN)
        valid = valid & (exm == 0)
    return offs_n, d, valid, cur


@triton.jit
def _bound_kernel(  # type: ignore[no-untyped-def]
    items_ptr, n, q_ptr, rows_ptr, A, ex_ptr, exstart_ptr, exend_ptr, bound_ptr,
    S, tiles_per_split, scan_tiles, n_tiles, K,
    BITS: tl.constexpr, W: tl.constexpr, JA: tl.constexpr, HAS_EX: tl.constexpr,
    USE_POPC: tl.constexpr, BQ: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    a, amask, qbase, t0, t1, cur, end = _block_start(
        q_ptr, rows_ptr, A, exstart_ptr, exend_ptr, S, tiles_per_split, scan_tiles, n_tiles, W, HAS_EX, BQ
    )
    lvl = tl.arange(0, JA)
    off = (1 << lvl) >> 1  # window levels U - 0, 1, 2, 4, 8, ...: far jumps early, single steps late
    U = tl.full((BQ,), BITS, dtype=tl.int32)
    c = tl.zeros((BQ, JA), dtype=tl.int32)
    for t in range(t0, t1):
        _, d, valid, cur = _tile(items_ptr, n, qbase, amask, ex_ptr, cur, end, t, W, HAS_EX, USE_POPC, BQ, BN)
        # one (BQ, BN) compare + row sum per level: a (BQ, BN, JA) tensor would not fit in registers
        dv = tl.where(valid, d, BITS + 1)
        for j in tl.static_range(JA):
            cj = tl.sum((dv <= (U - ((1 << j) >> 1))[:, None]).to(tl.int32), axis=1)
            c += tl.where(lvl[None, :] == j, cj[:, None], 0)
        # k items at level j prove T <= U - off[j]: move to the deepest such level; the other levels'
        # counts do not carry over (they start again from zero, which only delays the next move)
        deep = tl.sum((c >= K).to(tl.int32), axis=1) - 1
        moved = deep >= 1
        c_deep = tl.sum(tl.where(lvl[None, :] == deep[:, None], c, 0), axis=1)
        U = U - tl.sum(tl.where(lvl[None, :] == deep[:, None], off[None, :], 0), axis=1) * moved.to(tl.int32)
        c = tl.where(moved[:, None], tl.where(lvl[None, :] == 0, c_deep[:, None], 0), c)
    tl.store(bound_ptr + a * S + tl.program_id(1), U, mask=amask)


@triton.jit
def _count_kernel(  # type: ignore[no-untyped-def]
    items_ptr, n, q_ptr, rows_ptr, A, ex_ptr, exstart_ptr, exend_ptr, top_ptr, counts_ptr,
    S, tiles_per_split, n_tiles,
    W: tl.constexpr, JC: tl.constexpr, PACKED: tl.constexpr, HAS_EX: tl.constexpr,
    USE_POPC: tl.constexpr, BQ: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    a, amask, qbase, t0, t1, cur, end = _block_start(
        q_ptr, rows_ptr, A, exstart_ptr, exend_ptr, S, tiles_per_split, tiles_per_split, n_tiles, W, HAS_EX, BQ
    )
    lvl = tl.arange(0, JC)
    top = tl.load(top_ptr + a, mask=amask, other=0)
    c = tl.zeros((BQ, JC), dtype=tl.int32)
    for t in range(t0, t1):
        _, d, valid, cur = _tile(items_ptr, n, qbase, amask, ex_ptr, cur, end, t, W, HAS_EX, USE_POPC, BQ, BN)
        dv = tl.where(valid, d, 1 << 20)  # never below a threshold
        if PACKED:
            # four levels per uint32, one byte each: an item at e = top - d >= 0 adds 1 to the bytes of
            # levels 0..min(e, 3) (of this group of four); a row sum of BN <= 128 items never carries
            # into the next byte (nor past 32 bits: unsigned)
            e = top[:, None] - dv
            ones = tl.full((BQ, BN), 0x01010101, tl.uint32)
            for g in tl.static_range(JC // 4):
                t = tl.minimum(tl.maximum(e - 4 * g + 1, 0), 4)
                w = ones >> tl.minimum(32 - 8 * t, 31).to(tl.uint32)  # t = 0: shifted out entirely
                packed = tl.sum(w, axis=1)
                for b in tl.static_range(4):
                    cj = ((packed >> (8 * b)) & 0xFF).to(tl.int32)
                    c += tl.where(lvl[None, :] == 4 * g + b, cj[:, None], 0)
        else:
            for j in tl.static_range(JC):
                cj = tl.sum((dv <= (top - j)[:, None]).to(tl.int32), axis=1)
                c += tl.where(lvl[None, :] == j, cj[:, None], 0)
    out = counts_ptr + (a[:, None] * S + tl.program_id(1)) * JC + lvl[None, :]
    tl.store(out, c, mask=amask[:, None])


@triton.jit
def _collect_kernel(  # type: ignore[no-untyped-def]
    items_ptr, n, q_ptr, rows_ptr, A, ex_ptr, exstart_ptr, exend_ptr,
    thr_ptr, lt_off_ptr, eq_off_ptr, quota_ptr, out_pos_ptr, out_d_ptr,
    S, tiles_per_split, n_tiles, K,
    W: tl.constexpr, HAS_EX: tl.constexpr, USE_POPC: tl.constexpr, BQ: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    a, amask, qbase, t0, t1, cur, end = _block_start(
        q_ptr, rows_ptr, A, exstart_ptr, exend_ptr, S, tiles_per_split, tiles_per_split, n_tiles, W, HAS_EX, BQ
    )
    T = tl.load(thr_ptr + a, mask=amask, other=-1)
    cell = a * S + tl.program_id(1)
    lt_off = tl.load(lt_off_ptr + cell, mask=amask, other=0)
    eq_off = tl.load(eq_off_ptr + cell, mask=amask, other=0)
    quota = tl.load(quota_ptr + cell, mask=amask, other=0)
    lt_seen = tl.zeros((BQ,), dtype=tl.int32)
    eq_seen = tl.zeros((BQ,), dtype=tl.int32)
    out_row = a[:, None] * K
    for t in range(t0, t1):
        offs_n, d, valid, cur = _tile(items_ptr, n, qbase, amask, ex_ptr, cur, end, t, W, HAS_EX, USE_POPC, BQ, BN)
        lt = (valid & (d < T[:, None])).to(tl.int32)
        eq = (valid & (d == T[:, None])).to(tl.int32)
        n_lt = tl.sum(lt, axis=1)
        n_eq = tl.sum(eq, axis=1)
        if tl.max(n_lt + n_eq, axis=0) > 0:  # most tiles hold no result: skip the ranking there
            pos = offs_n[None, :] + tl.zeros((BQ, BN), dtype=tl.int32)
            slot = lt_off[:, None] + lt_seen[:, None] + tl.cumsum(lt, axis=1) - 1
            tl.store(out_pos_ptr + out_row + slot, pos, mask=lt != 0)
            tl.store(out_d_ptr + out_row + slot, d, mask=lt != 0)
            rank = eq_seen[:, None] + tl.cumsum(eq, axis=1) - 1
            take = (eq != 0) & (rank < quota[:, None])
            slot = eq_off[:, None] + rank
            tl.store(out_pos_ptr + out_row + slot, pos, mask=take)
            tl.store(out_d_ptr + out_row + slot, d, mask=take)
        lt_seen += n_lt
        eq_seen += n_eq


@triton.jit
def _probe_kernel(x_ptr, q_ptr, out_ptr, reps, USE_POPC: tl.constexpr, BN: tl.constexpr):  # type: ignore[no-untyped-def]
    # XOR + popcount + min of `reps` query words against BN register-resident words: the arithmetic limit
    x = tl.load(x_ptr + tl.program_id(0) * BN + tl.arange(0, BN))
    m = tl.full((BN,), 64, dtype=tl.int32)
    for r in range(reps):
        q = tl.load(q_ptr + (r % 64))
        m = tl.minimum(m, _popcount(x ^ (q ^ r), USE_POPC))
    tl.store(out_ptr + tl.program_id(0) * BN + tl.arange(0, BN), m)


# ------------------------------------------------------------------------------------------- host
def interpreting() -> bool:
    """Whether these kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1`` when this module was imported)."""
    return type(_count_kernel).__name__ == "InterpretedFunction"


def popcount_probe(device: str | torch.device = "cuda", reps: int = 4096, programs: int | None = None) -> float:
    """Measured 32-bit XOR + popcounts per second of the device (a warm run of :func:`_probe_kernel`).

    Divided by ``words x items`` it gives the compute limit in queries per second, measured the same
    way as the CPU kernel's (``hashgnn.index._kernels.popcount_probe``).
    """
    import time

    dev = torch.device(device)
    BN = 1024
    if programs is None:
        programs = 64 * int(torch.cuda.get_device_properties(dev).multi_processor_count) if dev.type == "cuda" else 2
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-(2**31), 2**31 - 1, (programs * BN,), dtype=torch.int32, generator=g).to(dev)
    q = torch.randint(-(2**31), 2**31 - 1, (64,), dtype=torch.int32, generator=g).to(dev)
    out = torch.empty_like(x)
    kw = {"USE_POPC": not interpreting(), "BN": BN}
    _probe_kernel[(programs,)](x, q, out, 2, **kw)  # compile
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t = time.perf_counter()
    _probe_kernel[(programs,)](x, q, out, reps, **kw)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return programs * BN * reps / (time.perf_counter() - t)


def words_int32(rows: np.ndarray) -> np.ndarray:
    """Packed ``uint8`` codes (n, nbytes) -> (n, W) ``int32`` words (zero-padded to a 4-byte multiple)."""
    n, nbytes = rows.shape
    padded = -(-nbytes // 4) * 4
    if padded != nbytes:
        rows = np.concatenate([rows, np.zeros((n, padded - nbytes), np.uint8)], axis=1)
    return np.ascontiguousarray(rows).view(np.int32)


def _exclusive_cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.cumsum(x, dim) - x


class TritonHammingItems:
    """Item codes resident on a device as ``int32`` words, searchable by the fused exact top-k kernels.

    ``device`` is a CUDA device, or ``"cpu"`` under Triton's interpreter (``TRITON_INTERPRET=1``
    before Triton is imported; slow, for tests). ``bits`` is the code length in bits as stored
    (the zero pad bits of the last byte add nothing to a distance).
    """

    def __init__(
        self, rows: np.ndarray, bits: int, device: str | torch.device = "cuda", plan: TritonPlan | None = None
    ) -> None:
        self.device = torch.device(device)
        self.plan = plan or TritonPlan()
        words = words_int32(rows)
        self.n, self.W = words.shape
        if self.W * self.n >= 2**31:
            raise HashgnnError(
                f"{self.n} items x {self.W} words of code exceed the kernels' int32 offsets; split the items "
                "into several indexes"
            )
        if self.device.type != "cuda" and not interpreting():
            raise HashgnnError(
                f"the triton kernels run on CUDA devices, got {self.device}; on CPU they run only under Triton's "
                "interpreter, and TRITON_INTERPRET=1 was not set when hashgnn.index.triton_hamming was first imported"
            )
        self.bits = int(bits)
        self.items = torch.from_numpy(np.ascontiguousarray(words.T)).to(self.device)  # (W, n)
        self.use_popc = not interpreting()  # the interpreter has no libdevice
        if self.device.type == "cuda":
            self.sms = int(torch.cuda.get_device_properties(self.device).multi_processor_count)
        else:
            self.sms = 4
        # profile=True: synchronise after each pass and add its seconds to stats (for the benchmark)
        self.profile = False
        self.stats: dict[str, float] = {}

    def _mark(self, name: str, t0: float) -> float:
        import time

        if not self.profile:
            return t0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t = time.perf_counter()
        self.stats[name] = self.stats.get(name, 0.0) + (t - t0)
        return t

    def _splits(self, nq: int, n_tiles: int) -> int:
        p = self.plan
        if p.splits is not None:
            return int(max(1, min(p.splits, n_tiles)))
        nqb = -(-nq // p.block_q)
        return int(max(1, min(n_tiles, -(-4 * self.sms // nqb))))

    def search(self, q: np.ndarray, k: int, ex: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """(distances int32, positions int64) numpy arrays of shape (len(q), k), -1 padded."""
        d, pos = self.search_device(torch.from_numpy(words_int32(q)), k, ex)
        return d.cpu().numpy(), pos.cpu().numpy().astype(np.int64)

    def search_device(
        self, qwords: torch.Tensor, k: int, ex: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k of ``qwords`` ((Q, W) int32 words): (distances, positions) int32 tensors on the device.

        Rows are sorted by (distance, position); -1 marks a missing result (fewer than ``k`` items
        left after the exclusions). ``ex`` is the (indptr, sorted positions) CSR of the exclusions.
        """
        nq = int(qwords.shape[0])
        out_d = torch.full((nq, k), -1, dtype=torch.int32, device=self.device)
        out_p = torch.full((nq, k), -1, dtype=torch.int32, device=self.device)
        if nq == 0 or self.n == 0:
            return out_d, out_p
        qw = qwords.to(self.device, torch.int32).contiguous()
        bs = self.plan.query_batch
        for q0 in range(0, nq, bs):
            q1 = min(q0 + bs, nq)
            exb = None
            if ex is not None:
                indptr, indices = ex
                lo, hi = int(indptr[q0]), int(indptr[q1])
                exb = (indptr[q0 : q1 + 1] - lo, indices[lo:hi])
            d, p = self._search_batch(qw[q0:q1], k, exb)
            out_d[q0:q1], out_p[q0:q1] = d, p
        return out_d, out_p

    def _search_batch(
        self, qw: torch.Tensor, k: int, ex: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import time

        t_mark = time.perf_counter()
        p, dev, n = self.plan, self.device, self.n
        nq = int(qw.shape[0])
        BQ, BN = p.block_q, p.block_n
        n_tiles = -(-n // BN)
        S = self._splits(nq, n_tiles)
        tps = -(-n_tiles // S)
        S = -(-n_tiles // tps)  # no empty split
        # the bound pass scans the first bound_fraction of the items, split over just enough programs
        # to fill the GPU (few splits: each split's bound comes from more items, so it is tighter)
        scan_total = int(min(n_tiles, -(-p.bound_fraction * n_tiles // 1))) if p.bound_fraction > 0 else 0
        Sb = int(max(1, min(scan_total, -(-2 * self.sms // -(-nq // BQ)))))
        tps_b = -(-scan_total // Sb) if scan_total else 1
        Sb = -(-scan_total // tps_b) if scan_total else 1
        has_ex = ex is not None and len(ex[1]) > 0
        if has_ex:
            assert ex is not None
            indptr = torch.from_numpy(np.asarray(ex[0], np.int64)).to(dev)
            pos = torch.from_numpy(np.asarray(ex[1], np.int64)).to(dev)
            qrow = torch.repeat_interleave(torch.arange(nq, device=dev), indptr[1:] - indptr[:-1])
            keys = qrow * n + pos  # sorted: by query, then position

            def cursors(n_splits: int, tiles: int) -> torch.Tensor:
                # per (query, split): index in the exclusion list of the first item at or after the split's start
                starts = torch.arange(n_splits, device=dev, dtype=torch.int64) * (tiles * BN)
                want = torch.arange(nq, device=dev, dtype=torch.int64)[:, None] * n + starts[None, :]
                return torch.searchsorted(keys, want.reshape(-1)).to(torch.int32).reshape(nq, n_splits).contiguous()

            exstart = cursors(S, tps)
            exstart_b = cursors(Sb, tps_b)
            exend = indptr[1:].to(torch.int32).contiguous()
            expos = pos.to(torch.int32).contiguous()
        else:
            exstart = torch.zeros((1,), dtype=torch.int32, device=dev)
            exstart_b = exend = expos = exstart
        t_mark = self._mark("setup", t_mark)
        common = {"USE_POPC": self.use_popc, "BQ": BQ, "BN": BN}
        if dev.type == "cuda":
            common["num_warps"] = p.num_warps
        all_rows = torch.arange(nq, dtype=torch.int32, device=dev)

        # 1. bound
        top = torch.full((nq,), self.bits, dtype=torch.int32, device=dev)
        if scan_total > 0 and k < n:
            bound = torch.empty((nq, Sb), dtype=torch.int32, device=dev)
            _bound_kernel[(-(-nq // BQ), Sb)](
                self.items, n, qw, all_rows, nq, expos, exstart_b, exend, bound,
                Sb, tps_b, tps_b, scan_total, k,
                BITS=self.bits, W=self.W, JA=p.bound_levels, HAS_EX=has_ex, **common,
            )  # fmt: skip
            top = bound.min(dim=1).values
        t_mark = self._mark("bound", t_mark)

        # 2. count, until every query's k-th distance is inside its window
        JC = p.count_levels
        packed = bool(p.packed_counts and BN <= 128 and JC % 4 == 0)
        thr = torch.empty((nq,), dtype=torch.int32, device=dev)
        lt = torch.empty((nq, S), dtype=torch.int32, device=dev)
        eq = torch.empty((nq, S), dtype=torch.int32, device=dev)
        active = all_rows
        while active.numel():
            A = int(active.numel())
            counts = torch.empty((A, S, JC), dtype=torch.int32, device=dev)
            ta = top[active.long()].contiguous()
            _count_kernel[(-(-A // BQ), S)](
                self.items, n, qw, active, A, expos, exstart, exend, ta, counts,
                S, tps, n_tiles, W=self.W, JC=JC, PACKED=packed, HAS_EX=has_ex, **common,
            )  # fmt: skip
            total = counts.sum(dim=1)  # (A, JC), non-increasing in the level
            jstar = (total >= k).sum(dim=1) - 1  # deepest level with k items; -1: fewer than k items at all
            t_a = ta - jstar.to(torch.int32)  # jstar = -1 -> T = top + 1 (all remaining items are "< T")
            below = jstar + 1  # the level just under T
            level_ok = below < JC
            resolved = level_ok | (t_a == 0)
            idx_below = torch.clamp(below, max=JC - 1)
            lt_a = counts.gather(2, idx_below[:, None, None].expand(A, S, 1)).squeeze(2)
            lt_a = torch.where(level_ok[:, None], lt_a, torch.zeros_like(lt_a))
            idx_t = torch.clamp(jstar, min=0)
            at_or_below = counts.gather(2, idx_t[:, None, None].expand(A, S, 1)).squeeze(2)
            eq_a = torch.where((jstar >= 0)[:, None], at_or_below - lt_a, torch.zeros_like(lt_a))
            done = active.long()[resolved]
            thr[done] = t_a[resolved]
            lt[done] = lt_a[resolved]
            eq[done] = eq_a[resolved]
            # the rest: T lies under the window; count again with the window's top at this T
            top[active.long()[~resolved]] = t_a[~resolved]
            active = active[~resolved].contiguous()
            if self.profile:
                self.stats["count_rounds"] = self.stats.get("count_rounds", 0) + 1
                self.stats["recounted_queries"] = self.stats.get("recounted_queries", 0) + int(active.numel())
        t_mark = self._mark("count", t_mark)

        # 3. collect: slots of items below T by split, then the quota at T, lowest splits first
        n_lt = lt.sum(dim=1)
        need = torch.clamp(k - n_lt, min=0)
        quota = torch.clamp(need[:, None] - _exclusive_cumsum(eq, 1), min=0)
        quota = torch.minimum(quota, eq)
        lt_off = _exclusive_cumsum(lt, 1).to(torch.int32).contiguous()
        eq_off = (n_lt[:, None] + _exclusive_cumsum(quota, 1)).to(torch.int32).contiguous()
        quota = quota.to(torch.int32).contiguous()
        out_d = torch.full((nq, k), -1, dtype=torch.int32, device=dev)
        out_p = torch.full((nq, k), -1, dtype=torch.int32, device=dev)
        _collect_kernel[(-(-nq // BQ), S)](
            self.items, n, qw, all_rows, nq, expos, exstart, exend,
            thr, lt_off, eq_off, quota, out_p, out_d,
            S, tps, n_tiles, k, W=self.W, HAS_EX=has_ex, **common,
        )  # fmt: skip
        t_mark = self._mark("collect", t_mark)
        # order by (distance, position); missing slots (-1) last
        key = torch.where(out_p >= 0, out_d.long() * n + out_p.long(), torch.full_like(out_d, -1, dtype=torch.long))
        key = torch.where(key < 0, torch.full_like(key, (self.bits + 2) * n), key)
        key, _ = torch.sort(key, dim=1)
        missing = key >= (self.bits + 2) * n
        d = torch.where(missing, -1, key // n).to(torch.int32)
        pos = torch.where(missing, -1, key % n).to(torch.int32)
        self._mark("sort", t_mark)
        return d, pos
