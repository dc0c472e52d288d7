"""The fused Triton Hamming kernels (backend="triton"), run by Triton's CPU interpreter.

CI has no GPU: ``TRITON_INTERPRET=1`` makes Triton execute the same kernels (the same tiles, passes,
counters and output slots) with numpy on CPU tensors; only the popcount differs (``libdevice.popc``
on CUDA, a bit-slicing count here, checked by the brute-force distances below). The interpreter is slow (~0.1 s per
tile step), so the sizes are small and the tile plans small enough that every case spans several
tiles and several item splits.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is first imported in this process

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("triton")

from hashgnn.errors import HashgnnError
from hashgnn.index import HammingIndex, HierarchicalIndex
from hashgnn.index.triton_hamming import TritonPlan, interpreting

PLAN = TritonPlan(block_q=16, block_n=64, splits=3, bound_fraction=0.5)


def brute_force(items: np.ndarray, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None = None):
    """Exact top-k by (distance, id) from the full distance matrix; -1 pads missing results."""
    xi = np.unpackbits(items, axis=1).astype(np.int32)
    xq = np.unpackbits(queries, axis=1).astype(np.int32)
    dist = (xq[:, None, :] != xi[None, :, :]).sum(axis=2)
    big = 10**6
    if exclude is not None:
        dist = np.where(exclude.toarray() != 0, big, dist)
    n = len(items)
    order = np.lexsort((np.broadcast_to(np.arange(n), dist.shape), dist), axis=1)[:, :k]
    d = np.take_along_axis(dist, order, 1)
    pos = np.where(d >= big, -1, order)
    d = np.where(d >= big, -1, d)
    if k > n:
        pad = np.full((len(queries), k - n), -1)
        d, pos = np.concatenate([d, pad], 1), np.concatenate([pos, pad], 1)
    return d.astype(np.int32), pos.astype(np.int64)


def corpus(bits: int, n: int, nq: int, seed: int, dup: int = 0):
    """Random codes, with ``dup`` copies of one code spread over the items (ties across tiles and splits)."""
    rng = np.random.default_rng(seed)
    nb = (bits + 7) // 8
    items = rng.integers(0, 256, (n, nb), dtype=np.uint8)
    queries = rng.integers(0, 256, (nq, nb), dtype=np.uint8)
    if dup:
        at = np.sort(rng.choice(n, dup, replace=False))
        items[at] = items[at[0]]
        queries[0] = items[at[0]]
        queries[1] = items[at[0]] ^ np.uint8(1)
    return items, queries


def triton_index(items: np.ndarray, bits: int, plan: TritonPlan = PLAN) -> HammingIndex:
    index = HammingIndex(bits, "triton", device="cpu", triton_plan=plan)
    index.add(items)
    return index


def test_runs_in_the_interpreter():
    assert interpreting()


@pytest.mark.parametrize("bits,n", [(32, 500), (64, 500), (128, 400), (256, 200)])
def test_equals_brute_force_and_the_cpu_kernel_with_ties(bits, n):
    items, queries = corpus(bits, n, 16, seed=bits, dup=40)
    k = 50
    d, ids = triton_index(items, bits).search(queries, k)
    bd, bids = brute_force(items, queries, k)
    np.testing.assert_array_equal(d, bd)
    np.testing.assert_array_equal(ids, bids)
    own = HammingIndex(bits, "own")
    own.add(items)
    own_d, own_ids = own.search(queries, k)
    np.testing.assert_array_equal(ids, own_ids)
    np.testing.assert_array_equal(d, own_d)
    # queries 0 and 1 sit on / next to the 40 copies: ties decided by the lower id, across splits
    assert (d[0, :40] == 0).all() and (np.diff(ids[0, :40]) > 0).all()


def test_exclusions_inside_the_kernel():
    bits, n, nq, k = 64, 400, 16, 30
    items, queries = corpus(bits, n, nq, seed=3, dup=50)
    rng = np.random.default_rng(4)
    ex = sp.lil_matrix((nq, n), dtype=np.int8)
    for q in range(nq):
        ex[q, rng.choice(n, 3, replace=False)] = 1
    dup_ids = brute_force(items, queries[:1], 50)[1][0]
    ex[0, dup_ids[5:25]] = 1  # the middle of query 0's tied run: later copies must move up
    ex[2, : n - 10] = 1  # fewer than k items left: -1 pads
    ex = ex.tocsr()
    d, ids = triton_index(items, bits).search(queries, k, exclude=ex)
    bd, bids = brute_force(items, queries, k, ex)
    np.testing.assert_array_equal(d, bd)
    np.testing.assert_array_equal(ids, bids)
    assert (ids[2, 10:] == -1).all() and (ids[2, :10] >= n - 10).all()
    left = np.setdiff1d(np.flatnonzero((items == queries[0]).all(1)), ex[0].indices)  # copies not excluded
    np.testing.assert_array_equal(ids[0, : min(k, len(left))], left[:k])


def test_k_larger_than_a_tile_and_near_n_items():
    bits, n = 64, 200
    items, queries = corpus(bits, n, 9, seed=5, dup=20)
    index = triton_index(items, bits)
    for k in (100, n - 1, n + 7):  # block_n is 64: k spans several tiles; n + 7 pads with -1
        d, ids = index.search(queries, k)
        bd, bids = brute_force(items, queries, k)
        np.testing.assert_array_equal(d, bd)
        np.testing.assert_array_equal(ids, bids)


def test_loose_bound_counts_again_until_resolved():
    # no bound pass and a 2-level window: the k-th distance is found only after many recounts
    # (from 64 down to ~20, one level per round)
    bits, n = 64, 256
    items, queries = corpus(bits, n, 16, seed=6, dup=12)
    plan = TritonPlan(block_q=16, block_n=128, splits=2, bound_fraction=0.0, count_levels=2)
    d, ids = triton_index(items, bits, plan).search(queries, 20)
    bd, bids = brute_force(items, queries, 20)
    np.testing.assert_array_equal(d, bd)
    np.testing.assert_array_equal(ids, bids)


def test_codes_not_a_multiple_of_32_bits_and_explicit_ids():
    bits, n = 48, 330  # 6 bytes: zero-padded to two int32 words
    items, queries = corpus(bits, n, 8, seed=7, dup=9)
    ids_ext = np.random.default_rng(8).permutation(10 * n)[:n] + 5
    index = HammingIndex(bits, "triton", device="cpu", triton_plan=PLAN)
    index.add(items, ids=ids_ext)
    d, got = index.search(queries, 25)
    own = HammingIndex(bits, "own")
    own.add(items, ids=ids_ext)
    od, oids = own.search(queries, 25)
    np.testing.assert_array_equal(d, od)
    np.testing.assert_array_equal(got, oids)


def test_hierarchical_reranks_on_the_device_like_the_cpu_path():
    bits, dim, n, nq = 64, 16, 300, 12
    items, queries = corpus(bits, n, nq, seed=9, dup=30)
    rng = np.random.default_rng(10)
    # small integers: every inner product is exact in float32, so both paths see the same scores and ties
    vec = rng.integers(-3, 4, (n, dim)).astype(np.float32)
    vec[np.flatnonzero((items == items[0]).all(1))] = vec[0]
    qv = rng.integers(-3, 4, (nq, dim)).astype(np.float32)
    ex = sp.random(nq, n, density=0.01, random_state=11, format="csr")
    gpu = HierarchicalIndex(bits, dim, candidates=60, hamming_backend="triton", device="cpu", triton_plan=PLAN)
    gpu.add(items, vec)
    cpu = HierarchicalIndex(bits, dim, candidates=60)
    cpu.add(items, vec)
    s1, i1 = gpu.search(queries, qv, 20, exclude=ex)
    s2, i2 = cpu.search(queries, qv, 20, exclude=ex)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    assert (s1[:, :-1] >= s1[:, 1:]).all() and len(np.unique(s1[0])) < 20  # sorted, with ties in the list


def test_clear_errors_without_cuda_or_triton(monkeypatch):
    with pytest.raises(HashgnnError, match="CUDA"):
        HammingIndex(64, "triton", device="cuda")  # the CPU build of torch sees no GPU
    with pytest.raises(HashgnnError, match="interpreter"):
        HammingIndex(64, "triton", device="mps")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(HashgnnError, match="TRITON_INTERPRET"):
        HammingIndex(64, "triton", device="cpu")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    with pytest.raises(HashgnnError, match="hashgnn\\[gpu\\]"):
        HammingIndex(64, "triton", device="cuda")
