"""HammingIndex (own kernel, faiss, torch) against a brute-force numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashgnn.codes.packing import hamming_distance_reference, pack_codes
from hashgnn.errors import HashgnnError
from hashgnn.index import HammingIndex, _kernels
from hashgnn.index.hamming import to_words

BIG = 1 << 30


def brute_topk(items: np.ndarray, queries: np.ndarray, k: int, excluded: np.ndarray | None = None):
    """Distance ascending, ties by lower position, excluded dropped, -1 padded: the obvious way."""
    d = hamming_distance_reference(queries, items) if len(items) else np.zeros((len(queries), 0), np.int64)
    if excluded is not None:
        d = np.where(excluded, BIG, d)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    dist = np.take_along_axis(d, order, 1)
    gone = dist >= BIG
    dist, order = np.where(gone, -1, dist), np.where(gone, -1, order)
    pad = k - dist.shape[1]
    if pad > 0:
        dist = np.concatenate([dist, np.full((len(queries), pad), -1)], axis=1)
        order = np.concatenate([order, np.full((len(queries), pad), -1)], axis=1)
    return dist, order


def random_codes(rng: np.random.Generator, n: int, bits: int, varying: int | None) -> np.ndarray:
    """Random packed codes; with ``varying`` only that many bits vary (heavy ties)."""
    signs = rng.random((n, bits)) < 0.5
    if varying is not None:
        signs[:, varying:] = False
    return pack_codes(np.where(signs, 1.0, -1.0)) if bits else np.zeros((n, 0), np.uint8)


BITS = st.sampled_from([8, 12, 16, 24, 32, 40, 64, 96, 128, 200, 256])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bits=BITS,
    n=st.integers(0, 400),
    nq=st.integers(1, 12),
    k_extra=st.integers(-5, 20),
    varying=st.sampled_from([None, 0, 1, 2, 3, 5]),
    density=st.sampled_from([0.0, 0.1, 0.6, 1.0, -1.0]),  # -1: a density of its own per query
    form=st.sampled_from(["none", "csr", "list"]),
    backend=st.sampled_from(["own", "faiss-heap", "faiss-counting", "torch"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_brute_force(bits, n, nq, k_extra, varying, density, form, backend, seed):
    rng = np.random.default_rng(seed)
    items = random_codes(rng, n, bits, varying)
    queries = random_codes(rng, nq, bits, varying)
    k = max(1, min(n, 30) + k_extra)  # also k larger than the corpus
    # per-query densities: faiss over-fetches by each query's own exclusions, in groups
    excluded = rng.random((nq, n)) < (rng.random((nq, 1)) if density < 0 else density)
    name, _, variant = backend.partition("-")
    index = HammingIndex(bits, name, faiss_use_heap=(variant == "heap") if variant else None)
    index.add(items)
    if form == "none":
        exclude, excluded = None, None
    elif form == "csr":
        exclude = sp.csr_matrix(excluded.astype(np.float32))
    else:
        exclude = [np.flatnonzero(row) for row in excluded]
    dist, ids = index.search(queries, k, exclude=exclude)
    want_d, want_i = brute_topk(items, queries, k, excluded)
    assert dist.shape == ids.shape == (nq, k)
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(ids, want_i)


@settings(max_examples=40, deadline=None)
@given(
    words_bytes=st.sampled_from([4, 8, 12, 16, 32]),
    n=st.integers(1, 1500),
    nq=st.integers(1, 9),
    k=st.integers(1, 60),
    shards=st.integers(1, 4),
    qblock=st.integers(1, 5),
    varying=st.sampled_from([None, 2]),
    sample=st.sampled_from([0, 64, 200]),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_blocking_and_shards(words_bytes, n, nq, k, shards, qblock, varying, sample, seed):
    """The kernel's query blocks, item chunks, shard merge and sampled thresholds keep the result."""
    rng = np.random.default_rng(seed)
    bits = words_bytes * 8
    items = random_codes(rng, n, bits, varying)
    queries = random_codes(rng, nq, bits, varying)
    excluded = rng.random((nq, n)) < 0.2
    ex = sp.csr_matrix(excluded)
    ex.sort_indices()
    kk = min(k, n)
    out_d = np.empty((nq, kk), np.int32)
    out_i = np.empty((nq, kk), np.int64)
    xt = np.ascontiguousarray(to_words(items).T)
    _kernels.hamming_topk(
        xt,
        to_words(queries),
        kk,
        ex.indptr.astype(np.int64),
        ex.indices.astype(np.int64),
        bits,
        shards,
        qblock,
        _kernels.GROUP,
        sample,
        out_d,
        out_i,
    )
    want_d, want_i = brute_topk(items, queries, kk, excluded)
    np.testing.assert_array_equal(out_d, want_d)
    np.testing.assert_array_equal(out_i, want_i)


def test_kernel_rescans_when_the_sampled_threshold_is_too_low():
    """A sample that sees only the query's twins estimates a threshold too low; the result stays exact."""
    n, k, sample = 4096, 100, 64
    q = np.full((1, 8), 0xAB, np.uint8)
    items = np.repeat(~q, n, axis=0)  # distance 64 from the query ...
    twins = (n * np.arange(_kernels.SAMPLE_PIECES)) // _kernels.SAMPLE_PIECES
    items[twins] = q  # ... except the 64 items the sample looks at (distance 0)
    items[5] ^= 1  # and one item at distance 63
    out_d = np.empty((1, k), np.int32)
    out_i = np.empty((1, k), np.int64)
    empty = np.zeros(0, np.int64)
    _kernels.hamming_topk(
        np.ascontiguousarray(to_words(items).T),
        to_words(q),
        k,
        empty,
        empty,
        64,
        1,
        1,
        _kernels.GROUP,
        sample,
        out_d,
        out_i,
    )
    want_d, want_i = brute_topk(items, q, k)
    np.testing.assert_array_equal(out_d, want_d)
    np.testing.assert_array_equal(out_i, want_i)


def test_hand_computed_case():
    # items: 0000 0000, 1111 1111, 1000 0000, 0000 0001, 1000 0000 (a tie with item 2)
    items = np.array([[0x00], [0xFF], [0x80], [0x01], [0x80]], np.uint8)
    index = HammingIndex(8)
    index.add(items)
    dist, ids = index.search(np.array([[0x80]], np.uint8), 4)
    assert dist.tolist() == [[0, 0, 1, 2]]
    assert ids.tolist() == [[2, 4, 0, 3]]
    dist, ids = index.search(np.array([[0x80]], np.uint8), 7, exclude=[np.array([4, 0])])
    assert dist.tolist() == [[0, 2, 7, -1, -1, -1, -1]]
    assert ids.tolist() == [[2, 3, 1, -1, -1, -1, -1]]


def test_explicit_ids_ties_by_lower_id_and_exclusion_by_id():
    rng = np.random.default_rng(0)
    items = random_codes(rng, 50, 32, 2)
    ids = rng.permutation(1000)[:50] + 7
    index = HammingIndex(32)
    index.add(items[:20], ids[:20])
    index.add(items[20:], ids[20:])  # added in two parts, out of id order
    q = random_codes(rng, 3, 32, 2)
    order = np.argsort(ids)
    want_d, want_pos = brute_topk(items[order], q, 60)
    dist, got = index.search(q, 60, exclude=[np.array([ids[0], 99999]), np.array([], int), ids])
    ref_ex = np.zeros((3, 50), bool)
    ref_ex[0, np.flatnonzero(ids[order] == ids[0])] = True
    ref_ex[2, :] = True
    want_d, want_pos = brute_topk(items[order], q, 60, ref_ex)
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(got, np.where(want_pos >= 0, ids[order][want_pos], -1))
    assert (got[2] == -1).all() and (dist[2] == -1).all()


@pytest.mark.parametrize("backend", ["own", "faiss"])
def test_larger_corpus_parallel_paths(backend):
    """A corpus big enough for several chunks, shards (one query) and blocks (many queries)."""
    rng = np.random.default_rng(3)
    items = random_codes(rng, 40_000, 64, None)
    index = HammingIndex(64, backend, threads=2)
    index.add(items)
    for nq in (1, 70):
        q = random_codes(rng, nq, 64, None)
        excluded = rng.random((nq, len(items))) < 0.01
        dist, ids = index.search(q, 25, exclude=sp.csr_matrix(excluded))
        want_d, want_i = brute_topk(items, q, 25, excluded)
        np.testing.assert_array_equal(dist, want_d)
        np.testing.assert_array_equal(ids, want_i)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    items = random_codes(rng, 300, 40, None)
    q = random_codes(rng, 5, 40, None)
    for ids in (None, rng.permutation(300) * 3):
        index = HammingIndex(40)
        index.add(items, ids)
        index.save(tmp_path / "idx")
        back = HammingIndex.load(tmp_path / "idx")
        assert back.bits == 40 and back.ntotal == 300
        np.testing.assert_array_equal(back.codes, index.codes)
        np.testing.assert_array_equal(back.ids, index.ids)
        for a, b in zip(index.search(q, 17), back.search(q, 17), strict=True):
            np.testing.assert_array_equal(a, b)
    header = (tmp_path / "idx" / "index.json").read_text()
    assert '"bits": 40' in header


def test_load_errors(tmp_path):
    with pytest.raises(HashgnnError, match=r"no index\.json"):
        HammingIndex.load(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(HashgnnError, match="not valid JSON"):
        HammingIndex.load(tmp_path)


def test_bad_input_errors():
    index = HammingIndex(64)
    with pytest.raises(HashgnnError, match="dtype uint8"):
        index.add(np.zeros((3, 8), np.float32))
    with pytest.raises(HashgnnError, match=r"shape \(n, 8\)"):
        index.add(np.zeros((3, 4), np.uint8))
    with pytest.raises(HashgnnError, match="numpy uint8 array"):
        index.add([[0] * 8])
    index.add(np.zeros((3, 8), np.uint8))
    q = np.zeros((2, 8), np.uint8)
    for bad_k in (0, -1, 2.5, True):
        with pytest.raises(HashgnnError, match="k must be a positive integer"):
            index.search(q, bad_k)
    with pytest.raises(HashgnnError, match=r"shape \(n, 8\)"):
        index.search(np.zeros((2, 16), np.uint8), 3)
    with pytest.raises(HashgnnError, match="2 queries"):
        index.search(q, 3, exclude=[np.array([0])])
    with pytest.raises(HashgnnError, match="2 queries"):
        index.search(q, 3, exclude=sp.csr_matrix((5, 3)))
    with pytest.raises(HashgnnError, match="unknown Hamming backend"):
        HammingIndex(64, "gpu")
    with pytest.raises(HashgnnError, match="bits must be a positive integer"):
        HammingIndex(0)
    with pytest.raises(HashgnnError, match="up to 2048 bits"):
        HammingIndex(4096)
    with pytest.raises(HashgnnError, match="ids= must be given from the first"):
        index.add(np.zeros((1, 8), np.uint8), ids=np.array([5]))
    other = HammingIndex(8)
    other.add(np.zeros((2, 1), np.uint8), ids=np.array([4, 9]))
    with pytest.raises(HashgnnError, match="duplicate item id 4"):
        other.add(np.zeros((1, 1), np.uint8), ids=np.array([4]))
    with pytest.raises(HashgnnError, match="pass ids= for every add"):
        other.add(np.zeros((1, 1), np.uint8))


def test_empty_index_and_no_queries():
    index = HammingIndex(16)
    d, i = index.search(np.zeros((2, 2), np.uint8), 3)
    assert (d == -1).all() and (i == -1).all() and d.shape == (2, 3)
    index.add(np.zeros((4, 2), np.uint8))
    d, i = index.search(np.zeros((0, 2), np.uint8), 3)
    assert d.shape == (0, 3)


def test_popcount_compiles_to_hardware_instruction():
    """The kernel's popcount is LLVM's ctpop, never a software bit count."""
    from numba import njit

    @njit
    def count(x):
        return _kernels.popcount(x)

    assert count(np.uint64(0xF0F0_0000_0000_0001)) == 9
    assert count(np.uint32(0xFFFF_FFFF)) == 32
    llvm = next(iter(count.inspect_llvm().values()))
    assert "llvm.ctpop.i64" in llvm
