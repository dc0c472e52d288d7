"""WeightedHammingIndex and quantise_queries, checked against numpy brute force.

The reference computes every distance ``sum_d w_d [q_d != c_d]`` from unpacked bits and sorts by
(distance asc, id asc) after removing each query's exclusions; distances are integers, so ids must
agree exactly, ties included. The quantiser is checked against the inner product it stands for.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from hashgnn.codes.packing import pack_codes
from hashgnn.codes.query_weights import dequantised, quantise_queries
from hashgnn.errors import ConfigError, HashgnnError
from hashgnn.index import WeightedHammingIndex


def brute_force(
    qbits: np.ndarray, w: np.ndarray, cbits: np.ndarray, ids: np.ndarray, k: int, exclude: list[set[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """(distances, ids), -1 padded: distance asc, then id asc."""
    dist = ((qbits[:, None, :] != cbits[None, :, :]) * w[:, None, :].astype(np.int64)).sum(axis=2)
    out_d = np.full((len(qbits), k), -1, np.int64)
    out_i = np.full((len(qbits), k), -1, np.int64)
    for u in range(len(qbits)):
        keep = [j for j in range(len(ids)) if int(ids[j]) not in exclude[u]]
        order = sorted(keep, key=lambda j: (dist[u, j], ids[j]))[:k]
        out_d[u, : len(order)] = dist[u, order]
        out_i[u, : len(order)] = ids[order]
    return out_d, out_i


@given(
    n=st.integers(1, 300),
    nq=st.integers(1, 12),
    bits=st.integers(1, 140),
    planes=st.integers(1, 4),
    k=st.integers(1, 40),
    density=st.sampled_from([0.0, 0.1, 0.5]),
    with_ids=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=80, deadline=None)
def test_weighted_index_matches_brute_force(
    n: int, nq: int, bits: int, planes: int, k: int, density: float, with_ids: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    cbits = rng.random((n, bits)) < 0.5
    qbits = rng.random((nq, bits)) < 0.5
    w = rng.integers(0, 1 << planes, (nq, bits)).astype(np.uint8)  # every weight, zero and maximum included
    ids = rng.permutation(10 * n)[:n].astype(np.int64) if with_ids else np.arange(n, dtype=np.int64)
    ex = sp.random(nq, int(ids.max()) + 1, density=density, random_state=seed, format="csr")
    exclude = [set(ex.indices[ex.indptr[u] : ex.indptr[u + 1]].tolist()) for u in range(nq)]
    index = WeightedHammingIndex(bits, planes)
    index.add(np.packbits(cbits, axis=1), ids if with_ids else None)
    got_d, got_i = index.search(np.packbits(qbits, axis=1), w, k, exclude=ex)
    ref_d, ref_i = brute_force(qbits, w, cbits, ids, k, exclude)
    assert got_d.shape == got_i.shape == (nq, k) and got_d.dtype == np.int32
    np.testing.assert_array_equal(got_d, ref_d)
    np.testing.assert_array_equal(got_i, ref_i)


@given(
    nq=st.integers(1, 20),
    bits=st.integers(1, 100),
    planes=st.integers(1, 4),
    step=st.floats(0.1, 3.0),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_quantised_queries_rank_as_their_inner_product_with_the_item_codes(
    nq: int, bits: int, planes: int, step: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((nq, bits)).astype(np.float32) * rng.uniform(0.1, 10.0, (nq, 1)).astype(np.float32)
    items = np.where(rng.random((50, bits)) < 0.5, -1.0, 1.0).astype(np.float32)
    wq = quantise_queries(q, planes, step)
    assert wq.weights.dtype == np.uint8 and wq.weights.max() <= (1 << planes) - 1
    np.testing.assert_array_equal(wq.codes, pack_codes(q))  # the signs, in the project's convention
    # the weight follows the magnitude: a larger |q_d| never gets a smaller weight within a query
    for u in range(nq):
        order = np.argsort(np.abs(q[u]), kind="stable")
        assert (np.diff(wq.weights[u, order].astype(int)) >= 0).all()
    # <s * w, b> = sum(w) - 2 * weighted Hamming(s, b): the index's distance is the quantised score
    index = WeightedHammingIndex(bits, planes)
    index.add(pack_codes(items))
    d, ids = index.search(wq.codes, wq.weights, 50)
    score = dequantised(wq, bits) @ items.T
    got = np.take_along_axis(score, ids, axis=1)
    np.testing.assert_allclose(got, wq.weights.sum(1, dtype=np.float32)[:, None] - 2 * d, atol=1e-4)
    assert (np.diff(got, axis=1) <= 1e-4).all()  # descending by the quantised inner product


def test_the_quantiser_is_scale_free_and_keeps_zero_rows_at_zero() -> None:
    rng = np.random.default_rng(3)
    q = rng.standard_normal((5, 16)).astype(np.float32)
    a, b = quantise_queries(q, 2, 0.75), quantise_queries(7.5 * q, 2, 0.75)
    np.testing.assert_array_equal(a.weights, b.weights)  # a user's ranking ignores their vector's length
    z = quantise_queries(np.zeros((2, 16), np.float32), 2, 0.75)
    assert not z.weights.any()
    with pytest.raises(ConfigError, match="planes"):
        quantise_queries(q, 5)
    with pytest.raises(ConfigError, match="step"):
        quantise_queries(q, 2, 0.0)


def test_weights_outside_the_planes_or_of_the_wrong_shape_are_refused() -> None:
    index = WeightedHammingIndex(8, planes=1)
    index.add(np.zeros((3, 1), np.uint8))
    codes = np.zeros((2, 1), np.uint8)
    with pytest.raises(HashgnnError, match=r"0\.\.1 for 1 plane"):
        index.search(codes, np.full((2, 8), 2, np.uint8), 2)
    with pytest.raises(HashgnnError, match=r"shape \(2, 8\)"):
        index.search(codes, np.ones((2, 7), np.uint8), 2)
    with pytest.raises(HashgnnError, match="integers"):
        index.search(codes, np.ones((2, 8), np.float32), 2)
    with pytest.raises(HashgnnError, match="planes"):
        WeightedHammingIndex(8, planes=0)
    # an empty index answers -1 in every column
    d, ids = WeightedHammingIndex(8).search(codes, np.ones((2, 8), np.uint8), 3)
    assert (d == -1).all() and (ids == -1).all() and d.shape == (2, 3)


def test_a_bit_with_weight_zero_is_ignored_and_weights_scale_a_mismatch() -> None:
    # two items that differ from the query in bit 0 (item 0) or bit 1 (item 1)
    q = np.packbits(np.array([[True, True, False, False, False, False, False, False]]), axis=1)
    items = np.packbits(np.array([[False, True] + [False] * 6, [True, False] + [False] * 6]), axis=1)
    index = WeightedHammingIndex(8, planes=2)
    index.add(items)
    w = np.array([[3, 1, 0, 0, 0, 0, 0, 0]], np.uint8)
    d, ids = index.search(q, w, 2)
    assert ids.tolist() == [[1, 0]] and d.tolist() == [[1, 3]]
    w0 = np.array([[0, 1, 0, 0, 0, 0, 0, 0]], np.uint8)  # bit 0 ignored: item 0 matches everywhere it counts
    d, ids = index.search(q, w0, 2)
    assert ids.tolist() == [[0, 1]] and d.tolist() == [[0, 1]]


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_items_that_keep_getting_closer_overflow_the_kernels_buffer_and_still_rank_exactly(k: int) -> None:
    # every item is closer than all before it (each level twice, so ties sit at the threshold), so the
    # kernel accepts every item and must compact its buffer of 4k + 64 several times
    bits, levels = 130, 131
    query = np.zeros((1, bits), bool)
    rows = [np.arange(bits) < (levels - 1 - lvl) for lvl in range(levels) for _ in range(2)]
    cbits = np.array(rows)
    w = np.full((1, bits), 7, np.uint8)
    index = WeightedHammingIndex(bits, planes=3)
    index.add(np.packbits(cbits, axis=1))
    ex = sp.csr_matrix((np.ones(3), ([0, 0, 0], [len(rows) - 1, len(rows) - 4, 5])), shape=(1, len(rows)))
    exclude = [set(ex.indices.tolist())]
    ids = np.arange(len(rows), dtype=np.int64)
    got_d, got_i = index.search(np.packbits(query, axis=1), w, k, exclude=ex)
    ref_d, ref_i = brute_force(query, w, cbits, ids, k, exclude)
    np.testing.assert_array_equal(got_d, ref_d)
    np.testing.assert_array_equal(got_i, ref_i)


def test_items_accepted_before_the_buffer_is_compacted_stay_in_the_answer() -> None:
    # k = 3, buffer 4k + 64 = 76: items 0..75 each closer than the last (distance 2 * (120 - j)) fill
    # it; item 76 (distance 93) lands between items 74 and 73, so the answer mixes items from before
    # the compaction (75, 74) with one from after it (76); the rest are far
    bits, k = 256, 3
    mism = [2 * (120 - j) for j in range(76)] + [93] + [200] * 30
    cbits = np.array([np.arange(bits) < m for m in mism])
    index = WeightedHammingIndex(bits, planes=1)
    index.add(np.packbits(cbits, axis=1))
    d, ids = index.search(np.packbits(np.zeros((1, bits), bool), axis=1), np.ones((1, bits), np.uint8), k)
    assert ids.tolist() == [[75, 74, 76]] and d.tolist() == [[90, 92, 93]]
