"""GPU check of the retrieval engine, prepared as one short run (`--device cuda`).

    python bench/retrieval_gpu.py                       # 10^6 and 10^7 items x 64 bits, 10,000 queries
    TRITON_INTERPRET=1 python bench/retrieval_gpu.py --device cpu --items 3000 --queries 64 --k 10 \\
        --check 16 --plans '{"block_q": 16, "block_n": 64}'          # a dry run anywhere (slow interpreter)

For each size: (1) exactness: the top-k of the fused Triton kernels (every plan) and of the torch
path equal the own CPU kernel's on ``--check`` queries, without and with exclusions (random seen
items per query); the hierarchical mode on the GPU is compared with the CPU one (ids, C = 500);
(2) queries per second, after a warm-up (which also compiles the kernels), of
  - ``HammingIndex(bits, "triton", device=...)``: the fused kernels, one row per plan (``--plans``,
    JSON objects of ``TritonPlan`` fields), with the seconds of each pass;
  - ``HammingIndex(bits, "torch", device=...)``: ±1 codes as an fp16 matrix product, top-k on exact
    (distance, position) keys, so ties go to the lower id;
  - the plain anchor of issue 4: ±1 codes as a bf16 matrix product, then ``topk`` (ties unordered);
  - float32 matrix product + ``topk`` over K-dimensional vectors (``FloatIndex(K, "torch")``);
  - ``HierarchicalIndex(K, K, 500, hamming_backend="triton")``: both stages on the GPU;
(3) the compute limit: the device's measured 32-bit XOR + popcount rate
(``hashgnn.index.triton_hamming.popcount_probe``) divided by words x items, and the fraction of it that
the best plan reaches. Prints one JSON object per size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial

import numpy as np
import scipy.sparse as sp
import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def plain_bf16(items_pm: torch.Tensor, q_pm: torch.Tensor, k: int, batch: int) -> None:
    for s in range(0, len(q_pm), batch):
        torch.topk(q_pm[s : s + batch] @ items_pm.T, k, dim=1)


def seen_items(n_queries: int, n_items: int, per_query: int, seed: int) -> sp.csr_matrix:
    """Random exclusions: ``per_query`` distinct items per query (sampled with replacement, deduplicated)."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_queries), per_query)
    cols = rng.integers(0, n_items, n_queries * per_query)
    m = sp.csr_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n_queries, n_items))
    m.sum_duplicates()
    return m


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def main() -> None:
    from hashgnn.codes.packing import unpack_codes
    from hashgnn.index import FloatIndex, HammingIndex, HierarchicalIndex
    from hashgnn.index.bench import synthetic_corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--check", type=int, default=200, help="queries compared with the CPU kernel")
    ap.add_argument("--seen", type=int, default=50, help="excluded items per query in the exclusion check")
    ap.add_argument(
        "--plans",
        nargs="*",
        default=[
            "{}",
            '{"block_q": 32}',
            '{"block_q": 128, "num_warps": 8}',
            '{"block_n": 256, "num_warps": 8}',
            '{"count_levels": 4, "bound_fraction": 0.25}',
            '{"packed_counts": false}',
        ],
        help="TritonPlan settings to measure, JSON objects (the first is the default plan)",
    )
    ap.add_argument(
        "--methods", default="triton,torch,bf16,float32,hier", help="comma-separated subset of the methods above"
    )
    args = ap.parse_args()
    from hashgnn.index.triton_hamming import TritonPlan, popcount_probe

    device = torch.device(args.device)
    methods = set(args.methods.split(","))
    plans = [json.loads(p) for p in args.plans]
    # (the interpreter runs ~10^4 popcount steps a second: a few reps there)
    probe = popcount_probe(device, reps=4096 if device.type == "cuda" else 8) if "triton" in methods else None
    for n in args.items:
        t_start = time.perf_counter()
        data = synthetic_corpus(n, args.queries, args.bits, seed=0)
        items, queries, item_z, query_z = data["items"], data["queries"], data["item_z"], data["query_z"]
        res: dict = {
            "items": n,
            "bits": args.bits,
            "queries": args.queries,
            "k": args.k,
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__,
        }
        c = queries[: args.check]
        ex = seen_items(len(c), n, args.seen, seed=1)
        cpu = HammingIndex(args.bits, "own")
        cpu.add(items)
        want = cpu.search(c, args.k)
        want_ex = cpu.search(c, args.k, exclude=ex)
        log(f"n={n}: corpus and CPU reference in {time.perf_counter() - t_start:.1f}s")

        if "triton" in methods:
            import triton

            res["triton"] = triton.__version__
            words = -(-args.bits // 32)
            res["popcounts_per_s"] = probe
            res["compute_limit_qps"] = probe / (words * n) if probe else None
            res["plans"] = []
            for spec in plans:
                plan = TritonPlan(**spec)
                row: dict = {"plan": spec}
                try:
                    gpu = HammingIndex(args.bits, "triton", device=args.device, triton_plan=plan)
                    gpu.add(items)
                    got = gpu.search(c, args.k)
                    got_ex = gpu.search(c, args.k, exclude=ex)
                    row["equals_own_kernel"] = bool(all(np.array_equal(a, b) for a, b in zip(got, want, strict=True)))
                    row["equals_own_kernel_with_exclusions"] = bool(
                        all(np.array_equal(a, b) for a, b in zip(got_ex, want_ex, strict=True))
                    )
                    gpu.search(queries[:512], args.k)
                    row["qps"] = args.queries / timed(partial(gpu.search, queries, args.k), device)
                    items_dev = gpu.triton_items()
                    items_dev.profile, items_dev.stats = True, {}
                    gpu.search(queries, args.k)
                    row["seconds_by_pass"] = {key: round(v, 4) for key, v in items_dev.stats.items()}
                    items_dev.profile = False
                    del gpu, items_dev
                except Exception as e:  # one failing plan must not cost the other measurements
                    row["error"] = f"{type(e).__name__}: {e}"
                log(f"n={n} triton {spec}: {row}")
                res["plans"].append(row)
            ok = [r for r in res["plans"] if "qps" in r]
            if ok:
                best = max(ok, key=lambda r: r["qps"])
                res["triton_qps"] = best["qps"]
                res["triton_best_plan"] = best["plan"]
                res["triton_fraction_of_limit"] = best["qps"] / res["compute_limit_qps"]
            if device.type == "cuda":
                torch.cuda.empty_cache()

        if "torch" in methods:
            tg = HammingIndex(args.bits, "torch", device=args.device)
            tg.add(items)
            res["torch_equals_own_kernel"] = bool(
                all(np.array_equal(a, b) for a, b in zip(tg.search(c, args.k), want, strict=True))
            )
            tg.search(queries[:256], args.k)
            res["torch_hamming_qps"] = args.queries / timed(partial(tg.search, queries, args.k), device)
            del tg
            log(f"n={n} torch path: {res['torch_hamming_qps']:.0f} q/s")

        if "bf16" in methods:
            ipm = torch.from_numpy(unpack_codes(items, args.bits)).to(device, torch.bfloat16)
            qpm = torch.from_numpy(unpack_codes(queries, args.bits)).to(device, torch.bfloat16)
            batch = 4096 if device.type == "cuda" else 256
            plain_bf16(ipm, qpm[:batch], args.k, batch)
            res["plain_bf16_topk_qps"] = args.queries / timed(partial(plain_bf16, ipm, qpm, args.k, batch), device)
            del ipm, qpm
            log(f"n={n} bf16: {res['plain_bf16_topk_qps']:.0f} q/s")

        if "float32" in methods:
            f = FloatIndex(args.bits, "torch", device=args.device)
            f.add(item_z)
            f.search(query_z[:256], args.k)
            res["torch_float32_qps"] = args.queries / timed(partial(f.search, query_z, args.k), device)
            del f
            log(f"n={n} float32: {res['torch_float32_qps']:.0f} q/s")

        if "hier" in methods and "triton" in methods:
            plan = TritonPlan(**res.get("triton_best_plan", {}))
            hg = HierarchicalIndex(
                args.bits, args.bits, 500, hamming_backend="triton", device=args.device, triton_plan=plan
            )
            hg.add(items, item_z)
            hc = HierarchicalIndex(args.bits, args.bits, 500)
            hc.add(items, item_z)
            gi = hg.search(c, query_z[: args.check], args.k)[1]
            ci = hc.search(c, query_z[: args.check], args.k)[1]
            res["hier_ids_equal_cpu_fraction"] = float((gi == ci).all(axis=1).mean())
            del hc
            hg.search(queries[:256], query_z[:256], args.k)
            res["hier_c500_qps"] = args.queries / timed(partial(hg.search, queries, query_z, args.k), device)
            del hg
            log(f"n={n} hierarchical: {res['hier_c500_qps']:.0f} q/s")

        if "triton_qps" in res and "torch_float32_qps" in res:
            res["triton_over_float32"] = res["triton_qps"] / res["torch_float32_qps"]
        res["seconds"] = time.perf_counter() - t_start
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
