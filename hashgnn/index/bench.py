"""Speed of retrieval: own Hamming kernel, faiss binary flat, hierarchical, and the float baselines.

``benchmark_retrieval`` builds a synthetic corpus, times every method on the same queries (one timed
run each, after a warm-up that also pays numba's compilation) and reports queries per second, bytes
per item, recall against exact continuous search, and the machine's arithmetic limit for the kernel.

Synthetic data. Codes are uniform random bits, or (``run_dir``) independent bits with the per-bit
frequencies of a trained run's item codes (items) and user codes (queries). The continuous vectors
agree with the codes in sign and carry random magnitudes, ``z = sign_bit * u`` with ``u`` uniform in
[0.05, 1) per coordinate, so ``sign(z)`` is exactly the code and the inner-product ranking is
correlated with, but not equal to, the Hamming ranking. That makes "hierarchical versus continuous
exact" a meaningful recall number, like a trained model's (whose z are not binary either).
"""

from __future__ import annotations

import gc
import os
import platform
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hashgnn.codes.packing import unpack_codes
from hashgnn.errors import HashgnnError

METHODS = ("own", "faiss", "hierarchical", "float", "torch")
OPTIONAL_METHODS = ("hnsw",)  # approximate; only when asked for


def _bit_probs(run_dir: str | Path, bits: int | None) -> tuple[np.ndarray, np.ndarray]:
    from hashgnn.codes.artifacts import load_codes

    codes = load_codes(run_dir)
    if bits is not None and bits != codes.bits:
        raise HashgnnError(f"--bits {bits} but the run {run_dir} has {codes.bits}-bit codes; drop --bits or match it")
    p_item = unpack_codes(codes.item_codes, codes.bits).mean(axis=0) * 0.5 + 0.5
    p_user = unpack_codes(codes.user_codes, codes.bits).mean(axis=0) * 0.5 + 0.5
    return p_item, p_user


def _draw(
    rng: np.random.Generator, n: int, p: np.ndarray, with_z: bool, batch: int = 1 << 18
) -> tuple[np.ndarray, np.ndarray | None]:
    """n codes with bit b set with probability p[b] (packed), and matching vectors; in batches."""
    bits = len(p)
    codes = np.empty((n, (bits + 7) // 8), np.uint8)
    z = np.empty((n, bits), np.float32) if with_z else None
    for s in range(0, n, batch):
        e = min(n, s + batch)
        b = rng.random((e - s, bits), dtype=np.float32) < p
        codes[s:e] = np.packbits(b, axis=1)
        if z is not None:
            mag = rng.random((e - s, bits), dtype=np.float32) * np.float32(0.95) + np.float32(0.05)
            z[s:e] = np.where(b, mag, -mag)
    return codes, z


def synthetic_corpus(
    n_items: int,
    n_queries: int,
    bits: int | None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    with_z: bool = True,
) -> dict[str, Any]:
    """Item and query codes (packed) and vectors: uniform bits, or a run's per-bit frequencies."""
    rng = np.random.default_rng(seed)
    if run_dir is not None:
        p_item, p_user = _bit_probs(run_dir, bits)
        source = f"per-bit frequencies of {run_dir}"
    else:
        if bits is None:
            raise HashgnnError("--bits is required without --run")
        p_item = p_user = np.full(bits, 0.5, np.float32)
        source = "uniform bits"
    items, item_z = _draw(rng, n_items, p_item.astype(np.float32), with_z)
    queries, query_z = _draw(rng, n_queries, p_user.astype(np.float32), True)
    return {
        "bits": len(p_item),
        "items": items,
        "item_z": item_z,
        "queries": queries,
        "query_z": query_z,
        "source": source,
    }


def _timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (ids; -1 ignored); vectorised."""
    k = truth.shape[1]
    key_t = np.where(truth >= 0, truth, -2 - np.arange(k))  # never matches
    hits = (found[:, :, None] == key_t[:, None, :]).any(axis=2).sum(axis=1)
    denom = np.maximum((truth >= 0).sum(axis=1), 1)
    return float(np.mean(hits / denom))


def tie_aware_recall(found_d: np.ndarray, exact_d: np.ndarray) -> float:
    """Recall of an approximate Hamming top-k whose exact distances are ``exact_d`` (sorted, -1 padded).

    Items tied at the k-th distance are interchangeable, so a result counts the items it returned at a
    distance below the exact k-th one, plus those at the k-th distance up to how many the exact list
    has there. ``found_d``: the true distances of the returned items (-1 where none).
    """
    valid = exact_d >= 0
    kth = np.where(valid.any(axis=1), np.max(np.where(valid, exact_d, -1), axis=1), -1)[:, None]
    got = found_d >= 0
    below = ((found_d < kth) & got).sum(axis=1)
    at = np.minimum(((found_d == kth) & got).sum(axis=1), (exact_d == kth).sum(axis=1))
    denom = np.maximum(valid.sum(axis=1), 1)
    return float(np.mean(np.minimum(below + at, denom) / denom))


def bench_hnsw(
    items: np.ndarray,
    queries: np.ndarray,
    k: int,
    exact_d: np.ndarray,
    threads: int,
    m: int = 32,
    ef_search: tuple[int, ...] = (64, 256),
) -> dict[str, Any]:
    """faiss ``IndexBinaryHNSW`` (sublinear, approximate): build time, q/s and recall per efSearch."""
    import faiss

    from hashgnn.index._common import faiss_threads

    bits = items.shape[1] * 8
    index = faiss.IndexBinaryHNSW(bits, m)
    with faiss_threads(threads):
        build, _ = _timed(lambda: index.add(items))
        out: dict[str, Any] = {"M": m, "build_seconds": build}
        for ef in ef_search:
            index.hnsw.efSearch = max(ef, k)
            dt, (_, ids) = _timed(lambda: index.search(queries, k))
            x = np.bitwise_xor(queries[:, None, :], items[np.maximum(ids, 0)])
            d = np.where(ids >= 0, np.unpackbits(x, axis=2).sum(axis=2), -1)  # true distances returned
            out[f"ef{ef}"] = {"qps": len(queries) / dt, "recall_vs_exact_hamming": tie_aware_recall(d, exact_d)}
    return out


def arithmetic_limit(bits: int, threads: int, n_items: int, words: np.ndarray | None = None) -> dict[str, Any]:
    """Measured ceilings of the kernel on this machine.

    ``popcounts_per_s_per_core``: XOR + popcount (+ min) of one query word against a 32 KiB array of
    words resident in L1, a tight numba loop (AVX-512 ``vpopcnt`` where present), one core, best of five
    runs. Divided by the words per code and the corpus size this gives the compute limit in queries per
    second for ``threads`` cores. ``stream_bytes_per_s``: the same loop over the whole corpus (from L3 or
    memory, as its size dictates), all threads, best of three: what a kernel without query blocking
    could reach at most.
    """
    from hashgnn.index import _kernels
    from hashgnn.index._common import numba_threads
    from hashgnn.index.hamming import word_layout

    dtype, n_words, padded = word_layout((bits + 7) // 8)
    rng = np.random.default_rng(1)
    x: np.ndarray = rng.integers(0, 2**32, size=32768 // np.dtype(dtype).itemsize, dtype=np.uint64).astype(dtype)
    qs = x[:16].copy()
    _kernels.popcount_probe(qs, x, 1)
    reps = 2000
    best = np.inf
    for _ in range(5):  # a limit: the best of a few short runs, so that a busy machine disturbs it less
        t = time.perf_counter()
        _kernels.popcount_probe(qs, x, reps)
        best = min(best, time.perf_counter() - t)
    per_core = len(x) * reps / best
    out: dict[str, Any] = {
        "word_bits": np.dtype(dtype).itemsize * 8,
        "words_per_code": n_words,
        "popcounts_per_s_per_core": per_core,
        "compute_limit_qps": per_core * threads / (n_words * n_items),
    }
    if words is not None:
        flat = np.ascontiguousarray(words).reshape(-1)
        with numba_threads(threads):
            _kernels.stream_probe(flat[: min(len(flat), 1 << 16)], qs)
            passes = max(1, (64 << 20) // max(flat.nbytes, 1))  # small corpora: amortise the thread start
            dt = np.inf
            for _ in range(3):
                t = time.perf_counter()
                for _ in range(passes):
                    _kernels.stream_probe(flat, qs)
                dt = min(dt, (time.perf_counter() - t) / passes)
        out["stream_bytes_per_s"] = flat.nbytes / dt
        out["stream_limit_qps_unblocked"] = (flat.nbytes / dt) / (padded * n_items)
    return out


MAX_BENCH_BYTES = 8 << 30  # the synthetic corpus (codes + float vectors) must fit a laptop


def check_bench_sizes(n_items: int, bits: int | None, n_queries: int, k: int, candidates: tuple[int, ...]) -> None:
    """Refuse sizes that make no sense or would not fit in memory, before anything is allocated."""
    from hashgnn.index.hamming import MAX_KERNEL_BITS

    for name, v in (("--items", n_items), ("--queries", n_queries), ("--k", k)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise HashgnnError(f"{name} must be a positive integer, got {v!r}")
    if bits is not None and not 1 <= bits <= MAX_KERNEL_BITS:
        raise HashgnnError(f"--bits must be between 1 and {MAX_KERNEL_BITS}, got {bits}")
    if k > n_items:
        raise HashgnnError(f"--k {k} is more than --items {n_items}")
    bad = [c for c in candidates if not k <= c <= n_items]
    if bad:
        raise HashgnnError(f"--candidates {bad}: each C must lie between --k ({k}) and --items ({n_items})")
    need = (n_items + n_queries) * (bits or 64) * (4 + 1 / 8)
    if need > MAX_BENCH_BYTES:
        raise HashgnnError(
            f"--items {n_items} x --bits {bits} needs about {need / 2**30:.0f} GiB for the synthetic "
            f"corpus; at most {MAX_BENCH_BYTES >> 30} GiB is allowed"
        )


def benchmark_retrieval(
    n_items: int = 1_000_000,
    bits: int | None = 64,
    n_queries: int = 1000,
    k: int = 100,
    threads: int | None = None,
    run_dir: str | Path | None = None,
    candidates: tuple[int, ...] = (500, 1000),
    methods: tuple[str, ...] = METHODS,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Time every method in ``methods`` on one synthetic corpus; see the module docstring.

    Returns a dict with the keys ``own_hamming_qps``, ``faiss_hamming_qps`` (the faster ``use_heap``
    setting; both are in ``faiss_hamming_detail``), ``hierarchical_qps`` (at the largest C; every C in
    ``hierarchical``), ``float_ip_qps``, ``torch_ip_qps``, ``recall_vs_float`` (hierarchical at the
    largest C versus exact continuous top-k), ``bytes_per_item``, ``limit`` and the settings.
    """
    import faiss
    import numba

    from hashgnn.index._common import faiss_threads
    from hashgnn.index.float_index import FloatIndex
    from hashgnn.index.hamming import HammingIndex
    from hashgnn.index.hierarchical import HierarchicalIndex

    check_bench_sizes(n_items, bits, n_queries, k, candidates)
    unknown = set(methods) - set(METHODS) - set(OPTIONAL_METHODS)
    if unknown:
        raise HashgnnError(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS + OPTIONAL_METHODS)}")
    if "hnsw" in methods and "own" not in methods:
        raise HashgnnError("the hnsw recall is measured against the own kernel's exact result; add 'own' to --methods")
    if n_items < 1 or n_queries < 1 or k < 1:
        raise HashgnnError("--items, --queries and --k must be positive")
    threads = int(threads or numba.config.NUMBA_NUM_THREADS)

    def say(msg: str) -> None:
        if progress:
            import sys

            print(f"[bench] {msg}", file=sys.stderr, flush=True)

    need_z = bool({"hierarchical", "float", "torch"} & set(methods))
    say(f"drawing {n_items:,} items and {n_queries:,} queries")
    data = synthetic_corpus(n_items, n_queries, bits, seed, run_dir, with_z=need_z)
    bits = int(data["bits"])
    items, queries, item_z, query_z = data["items"], data["queries"], data["item_z"], data["query_z"]
    warm = queries[: min(len(queries), 64)]
    res: dict[str, Any] = {
        "items": n_items,
        "bits": bits,
        "queries": n_queries,
        "k": k,
        "threads": threads,
        "codes": data["source"],
        "seed": seed,
        "machine": f"{platform.machine()} {_cpu_name()}, {os.cpu_count()} logical CPUs",
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "bytes_per_item": {},
    }
    truth = None  # exact continuous top-k ids: the reference of every recall number

    if "own" in methods:
        index = HammingIndex(bits, "own", threads=threads)
        index.add(items)
        index.search(warm, k)  # compiles (or loads the cached machine code)
        dt, (own_d, own_ids) = _timed(lambda: index.search(queries, k))
        res["own_hamming_qps"] = n_queries / dt
        res["bytes_per_item"]["own_hamming"] = index.bytes_per_item
        res["limit"] = arithmetic_limit(bits, threads, n_items, index._words)
        say(f"own Hamming kernel: {res['own_hamming_qps']:,.0f} q/s")
        if "hnsw" in methods:
            res["hnsw"] = bench_hnsw(items, queries, k, own_d, threads)
            say(f"faiss IndexBinaryHNSW: {res['hnsw']}")
        del index
    if "faiss" in methods:
        fb: Any = faiss.IndexBinaryFlat(items.shape[1] * 8)  # Any: mypy cannot see swig's use_heap
        fb.add(items)
        detail = {}
        with faiss_threads(threads):
            for use_heap in (True, False):
                fb.use_heap = use_heap
                fb.search(warm, k)
                dt, _ = _timed(partial(fb.search, queries, k))
                detail["heap" if use_heap else "counting"] = n_queries / dt
        res["faiss_hamming_detail"] = detail
        res["faiss_hamming_qps"] = max(detail.values())
        res["bytes_per_item"]["faiss_hamming"] = int(fb.code_size)
        say(f"faiss IndexBinaryFlat: heap {detail['heap']:,.0f} q/s, counting {detail['counting']:,.0f} q/s")
        del fb
    gc.collect()
    # Continuous baselines; the first one run gives the exact top-k that recall is measured against.
    for method, backend, key, name in (
        ("float", "faiss", "float_ip", "faiss IndexFlatIP"),
        ("torch", "torch", "torch_ip", "torch matmul + topk"),
    ):
        if method not in methods:
            continue
        fl = FloatIndex(bits, backend, threads=threads)
        fl.add(item_z)
        fl.search(query_z[:8], k)
        dt, (_, ids) = _timed(partial(fl.search, query_z, k))
        res[f"{key}_qps"] = n_queries / dt
        res["bytes_per_item"][key] = fl.bytes_per_item
        if truth is None:
            truth = ids
        say(f"{name}: {res[f'{key}_qps']:,.0f} q/s")
        del fl
        gc.collect()
    if truth is None and "hierarchical" in methods:
        fl = FloatIndex(bits, "torch", threads=threads)
        fl.add(item_z)
        _, truth = fl.search(query_z, k)
        del fl
        gc.collect()
    if truth is not None and "own" in methods:
        res["hamming_recall_vs_float"] = recall_at(own_ids, truth)
    if "hierarchical" in methods:
        hier: dict[str, Any] = {}
        assert truth is not None  # the block above computes it whenever hierarchical is run
        hi = HierarchicalIndex(bits, bits, max(candidates), threads=threads)
        hi.add(items, item_z)
        for c in candidates:
            hi.search(warm, query_z[: len(warm)], k, candidates=c)
            dt, (_, hids) = _timed(partial(hi.search, queries, query_z, k, candidates=c))
            hier[str(c)] = {"qps": n_queries / dt, "recall_vs_float": recall_at(hids, truth)}
            say(f"hierarchical C={c}: {n_queries / dt:,.0f} q/s, recall vs float {hier[str(c)]['recall_vs_float']:.3f}")
        res["hierarchical"] = hier
        top = hier[str(max(candidates))]
        res["hierarchical_qps"] = top["qps"]
        res["recall_vs_float"] = top["recall_vs_float"]
        res["bytes_per_item"]["hierarchical"] = hi.bytes_per_item
        del hi
        gc.collect()
    res["load_average_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    fast_float = max(res.get("float_ip_qps", 0.0), res.get("torch_ip_qps", 0.0))
    if "own_hamming_qps" in res and "faiss_hamming_qps" in res:
        res["own_over_faiss"] = res["own_hamming_qps"] / res["faiss_hamming_qps"]
    if fast_float and "own_hamming_qps" in res:
        res["hamming_over_float"] = res["own_hamming_qps"] / fast_float
    if fast_float and "hierarchical_qps" in res:
        res["hierarchical_over_float"] = res["hierarchical_qps"] / fast_float
    return res


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
