"""Own Hamming kernel versus faiss on ONE thread, in queries per CPU-second: robust to a busy machine.

    python bench/retrieval_single_core.py                 # 10^6 items x 32, 64, 128 bits, k = 100

On a shared machine wall-clock rates of multi-threaded code swing with other people's jobs (an
OpenMP barrier waits for the slowest thread). One thread timed by CPU time (``time.process_time``)
measures the work itself; next to it, the per-core arithmetic limit of the same code width
(``hashgnn.index.bench.arithmetic_limit``) shows the gap to the hardware.
"""

from __future__ import annotations

import argparse
import time
from functools import partial


def main() -> None:
    import faiss

    from hashgnn.index import HammingIndex
    from hashgnn.index.bench import arithmetic_limit, synthetic_corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--bits", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--k", type=int, nargs="+", default=[100])
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    print(
        "| bits | k | own kernel q per CPU-s | faiss heap | faiss counting | own / best faiss "
        "| per-core limit q/s | own / limit |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for bits in args.bits:
        data = synthetic_corpus(args.items, args.queries, bits, seed=0, with_z=False)
        items, queries = data["items"], data["queries"]
        own = HammingIndex(bits, threads=1)
        own.add(items)
        flat = faiss.IndexBinaryFlat(items.shape[1] * 8)
        flat.add(items)
        limit = arithmetic_limit(bits, 1, args.items)["compute_limit_qps"]
        for k in args.k:
            own.search(queries[:20], k)

            def rate(fn) -> float:  # type: ignore[no-untyped-def]
                best = 0.0
                for _ in range(3):
                    t = time.process_time()
                    fn()
                    best = max(best, args.queries / (time.process_time() - t))
                return best

            r_own = rate(partial(own.search, queries, k))
            r = {}
            for heap in (True, False):
                flat.use_heap = heap
                flat.search(queries[:5], k)
                r[heap] = rate(partial(flat.search, queries, k))
            print(
                f"| {bits} | {k} | {r_own:,.0f} | {r[True]:,.0f} | {r[False]:,.0f} | {r_own / max(r.values()):.1f}x "
                f"| {limit:,.0f} | {r_own / limit:.0%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
