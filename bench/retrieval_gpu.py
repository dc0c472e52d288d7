"""GPU check of the torch search path, prepared as one short run (`--device cuda`).

    python bench/retrieval_gpu.py                       # 10^6 and 10^7 items x 64 bits, 10,000 queries
    python bench/retrieval_gpu.py --items 1000000 --queries 2000 --device cpu   # a dry run anywhere

For each size: (1) exactness: the torch path's top-k equals the own CPU kernel's on 200 queries;
(2) queries per second, after a warm-up, of
  - ``HammingIndex(bits, "torch", device=...)``: ±1 codes as an fp16 matrix product, top-k on exact
    (distance, position) keys, so ties go to the lower id;
  - the plain anchor of issue 4: ±1 codes as a bf16 matrix product, then ``topk`` (ties unordered);
  - float32 matrix product + ``topk`` over K-dimensional vectors (``FloatIndex(K, "torch")``).
Prints one JSON object per size.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

import numpy as np
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


def main() -> None:
    from hashgnn.codes.packing import unpack_codes
    from hashgnn.index import FloatIndex, HammingIndex
    from hashgnn.index.bench import synthetic_corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--check", type=int, default=200, help="queries compared with the CPU kernel")
    args = ap.parse_args()
    device = torch.device(args.device)
    for n in args.items:
        data = synthetic_corpus(n, args.queries, args.bits, seed=0)
        items, queries, item_z, query_z = data["items"], data["queries"], data["item_z"], data["query_z"]
        res: dict = {
            "items": n,
            "bits": args.bits,
            "queries": args.queries,
            "k": args.k,
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        }
        gpu = HammingIndex(args.bits, "torch", device=args.device)
        gpu.add(items)
        cpu = HammingIndex(args.bits, "own")
        cpu.add(items)
        c = queries[: args.check]
        exact = all(np.array_equal(a, b) for a, b in zip(gpu.search(c, args.k), cpu.search(c, args.k), strict=True))
        res["torch_equals_own_kernel"] = bool(exact)
        gpu.search(queries[:256], args.k)
        res["torch_hamming_qps"] = args.queries / timed(partial(gpu.search, queries, args.k), device)
        del cpu

        ipm = torch.from_numpy(unpack_codes(items, args.bits)).to(device, torch.bfloat16)
        qpm = torch.from_numpy(unpack_codes(queries, args.bits)).to(device, torch.bfloat16)
        batch = 4096 if device.type == "cuda" else 256
        plain_bf16(ipm, qpm[:batch], args.k, batch)
        res["plain_bf16_topk_qps"] = args.queries / timed(partial(plain_bf16, ipm, qpm, args.k, batch), device)
        del ipm, qpm

        f = FloatIndex(args.bits, "torch", device=args.device)
        f.add(item_z)
        f.search(query_z[:256], args.k)
        res["torch_float32_qps"] = args.queries / timed(partial(f.search, query_z, args.k), device)
        del f, gpu
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
