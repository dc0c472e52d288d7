"""Queries per second of the asymmetric score (real query, +-1 item codes) beside Hamming and float search.

    python bench/asymmetric_speed.py --items 40981 --queries 2000 --bits 64 --k 20 --threads 2

Random data of the given shape (search time does not depend on what the codes mean): packed item
codes for :class:`HammingIndex` (own numba kernel) and :class:`AsymmetricIndex` (torch, items
unpacked block by block), and float32 item vectors of the same width for :class:`FloatIndex`
(faiss ``IndexFlatIP`` and torch), every query's top-k, no exclusions. Also the re-ranking that an
asymmetric hierarchical mode would do: the Hamming top-C, then ``<q, +-1 code>`` of those C items
only. And :class:`WeightedHammingIndex` with 1-3 weight planes (the same asymmetric score with the
query's magnitudes quantised, ``quantise_queries``, own numba kernel). One JSON row per engine on stdout (and appended to ``--out``): queries/s, bytes per item.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Best wall time of ``repeat`` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=40981)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from hashgnn.codes.packing import pack_codes
    from hashgnn.codes.query_weights import quantise_queries
    from hashgnn.environment import machine_info
    from hashgnn.index import AsymmetricIndex, FloatIndex, HammingIndex, WeightedHammingIndex

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    item_real = rng.standard_normal((args.items, args.bits)).astype(np.float32)
    query_real = rng.standard_normal((args.queries, args.bits)).astype(np.float32)
    item_codes, query_codes = pack_codes(item_real), pack_codes(query_real)
    k, c = args.k, args.candidates

    ham = HammingIndex(args.bits, threads=args.threads)
    ham.add(item_codes)
    asym = AsymmetricIndex(args.bits, threads=args.threads)
    asym.add(item_codes)
    flat_faiss = FloatIndex(args.bits, "faiss", threads=args.threads)
    flat_faiss.add(item_real)
    flat_torch = FloatIndex(args.bits, "torch", threads=args.threads)
    flat_torch.add(item_real)

    weighted = {}
    for planes in (1, 2, 3):
        index = WeightedHammingIndex(args.bits, planes, threads=args.threads)
        index.add(item_codes)
        weighted[planes] = (index, quantise_queries(query_real, planes))

    def rerank() -> None:
        # codes only: the candidates' packed codes are gathered and unpacked, no float item vector
        _, cand = ham.search(query_codes, c)
        for q0 in range(0, len(cand), 256):
            block = cand[q0 : q0 + 256]
            signs = np.unpackbits(item_codes[block], axis=2)[..., : args.bits].astype(np.float32) * 2.0 - 1.0
            s = np.einsum("qd,qcd->qc", query_real[q0 : q0 + 256], signs)
            top = np.argsort(-s, axis=1, kind="stable")[:, :k]
            np.take_along_axis(block, top, 1)

    engines = {
        "hamming (own kernel)": (lambda: ham.search(query_codes, k), ham.bytes_per_item),
        "asymmetric scan (AsymmetricIndex)": (lambda: asym.search(query_real, k), asym.bytes_per_item),
        **{
            f"weighted Hamming, {p} plane(s) (WeightedHammingIndex)": (
                lambda p=p: weighted[p][0].search(weighted[p][1].codes, weighted[p][1].weights, k),
                weighted[p][0].bytes_per_item,
            )
            for p in weighted
        },
        f"Hamming top-{c} + asymmetric re-rank": (rerank, ham.bytes_per_item),
        "float inner product (faiss IndexFlatIP)": (
            lambda: flat_faiss.search(query_real, k),
            flat_faiss.bytes_per_item,
        ),
        "float inner product (FloatIndex torch)": (lambda: flat_torch.search(query_real, k), flat_torch.bytes_per_item),
    }
    machine = machine_info()
    for name, (fn, nbytes) in engines.items():
        seconds = timed(fn, args.repeat)
        row = {
            "engine": name,
            "items": args.items,
            "queries": args.queries,
            "bits": args.bits,
            "k": k,
            "queries_per_s": round(args.queries / seconds, 1),
            "bytes_per_item": nbytes,
            "threads": torch.get_num_threads(),
            "cpu": machine["cpu"],
        }
        line = json.dumps(row)
        print(line, flush=True)
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
