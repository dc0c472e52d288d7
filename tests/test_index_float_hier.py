"""FloatIndex (faiss, torch) and HierarchicalIndex against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from hashgnn.codes.packing import hamming_distance_reference, pack_codes
from hashgnn.errors import HashgnnError
from hashgnn.index import FloatIndex, HierarchicalIndex

NEG = -np.inf


def brute_ip(items: np.ndarray, queries: np.ndarray, k: int, excluded: np.ndarray | None = None):
    """Scores descending, ties by lower position, excluded dropped, -inf / -1 padded."""
    s = queries.astype(np.float64) @ items.astype(np.float64).T
    if excluded is not None:
        s = np.where(excluded, NEG, s)
    return brute_ip_from_scores(s, k)


def int_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    # Small integers: float32 sums are exact, so scores are reproducible across libraries.
    return rng.integers(-8, 9, (n, dim)).astype(np.float32)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 300),
    nq=st.integers(1, 8),
    dim=st.sampled_from([1, 3, 16, 64]),
    k_extra=st.integers(-3, 10),
    density=st.sampled_from([0.0, 0.3, 1.0, -1.0]),  # -1: a density of its own per query
    form=st.sampled_from(["none", "csr", "list"]),
    backend=st.sampled_from(["faiss", "torch"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_float_index_matches_numpy(n, nq, dim, k_extra, density, form, backend, seed):
    rng = np.random.default_rng(seed)
    items = int_vectors(rng, n, dim)
    queries = rng.integers(-3, 4, (nq, dim)).astype(np.float32)
    k = max(1, min(n, 20) + k_extra)
    # per-query densities: faiss over-fetches by each query's own exclusions, in groups
    excluded = rng.random((nq, n)) < (rng.random((nq, 1)) if density < 0 else density)
    exclude = (
        None
        if form == "none"
        else (sp.csr_matrix(excluded) if form == "csr" else [np.flatnonzero(r) for r in excluded])
    )
    index = FloatIndex(dim, backend)
    index.add(items)
    scores, ids = index.search(queries, k, exclude=exclude)
    want_s, want_i = brute_ip(items, queries, k, excluded if exclude is not None else None)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    # Integer scores are exact: the sorted scores must match; equal scores may come in any id order
    # (FloatIndex does not promise one), so each id is checked to carry its own score.
    np.testing.assert_array_equal(scores, want_s.astype(np.float32))
    np.testing.assert_array_equal(ids < 0, want_i < 0)
    true = queries.astype(np.float64) @ items.astype(np.float64).T
    rows, cols = np.nonzero(ids >= 0)
    np.testing.assert_array_equal(true[rows, ids[rows, cols]], scores[rows, cols])
    if exclude is not None:
        assert not excluded[rows, ids[rows, cols]].any()
    for row in ids:  # a handful of rows: uniqueness per query
        kept = row[row >= 0]
        assert len(np.unique(kept)) == len(kept)


def brute_hierarchical(codes, vectors, qcodes, qvectors, k, c, excluded):
    d = hamming_distance_reference(qcodes, codes).astype(np.float64)
    if excluded is not None:
        d = np.where(excluded, np.inf, d)
    cand = np.argsort(d, axis=1, kind="stable")[:, :c]
    ok = np.isfinite(np.take_along_axis(d, cand, 1))
    s = np.full(d.shape, NEG)
    ip = qvectors.astype(np.float64) @ vectors.astype(np.float64).T
    rows = np.repeat(np.arange(len(qcodes)), cand.shape[1])[ok.ravel()]
    s[rows, cand.ravel()[ok.ravel()]] = ip[rows, cand.ravel()[ok.ravel()]]
    return brute_ip_from_scores(s, k)


def brute_ip_from_scores(s: np.ndarray, k: int):
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(s, order, 1)
    order = np.where(np.isneginf(top), -1, order)
    pad = k - top.shape[1]
    if pad > 0:
        top = np.concatenate([top, np.full((len(s), pad), NEG)], axis=1)
        order = np.concatenate([order, np.full((len(s), pad), -1)], axis=1)
    return top, order


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 300),
    nq=st.integers(1, 8),
    bits=st.sampled_from([8, 32, 64, 96]),
    c=st.integers(1, 80),
    k=st.integers(1, 30),
    density=st.sampled_from([0.0, 0.3, 1.0]),
    ties=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_hierarchical_matches_brute_force(n, nq, bits, c, k, density, ties, seed):
    rng = np.random.default_rng(seed)
    vectors = rng.integers(-4, 5, (n, bits)).astype(np.float32)
    if ties:
        vectors[:, 1:] = 0  # many equal scores: ties must go to the lower item id
        vectors[:, 0] = rng.integers(-2, 3, n)
    qvectors = rng.integers(-4, 5, (nq, bits)).astype(np.float32)
    codes = pack_codes(rng.standard_normal((n, bits)))
    qcodes = pack_codes(rng.standard_normal((nq, bits)))
    excluded = rng.random((nq, n)) < density
    index = HierarchicalIndex(bits, bits, candidates=c)
    index.add(codes, vectors)
    scores, ids = index.search(qcodes, qvectors, k, exclude=sp.csr_matrix(excluded))
    want_s, want_i = brute_hierarchical(codes, vectors, qcodes, qvectors, k, max(c, k), excluded)
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_array_equal(scores, want_s.astype(np.float32))


def test_hierarchical_with_explicit_ids_and_candidate_override():
    rng = np.random.default_rng(5)
    n, bits = 200, 32
    vectors = rng.standard_normal((n, bits)).astype(np.float32)
    codes = pack_codes(vectors)
    ids = rng.permutation(5000)[:n]
    q = rng.standard_normal((4, bits)).astype(np.float32)
    index = HierarchicalIndex(bits, bits, candidates=10)
    index.add(codes, vectors, ids)
    order = np.argsort(ids)
    for c in (10, 200):
        s, got = index.search(pack_codes(q), q, 5, candidates=c)
        want_s, want_pos = brute_hierarchical(codes[order], vectors[order], pack_codes(q), q, 5, c, None)
        np.testing.assert_array_equal(got, ids[order][want_pos])
        np.testing.assert_allclose(s, want_s, rtol=1e-5)
    # C = all items: hierarchical equals exact inner-product search.
    exact = FloatIndex(bits)
    exact.add(vectors, ids)
    np.testing.assert_array_equal(index.search(pack_codes(q), q, 5, candidates=n)[1], exact.search(q, 5)[1])


def test_float_and_hierarchical_errors():
    with pytest.raises(HashgnnError, match="dim must be a positive integer"):
        FloatIndex(0)
    with pytest.raises(HashgnnError, match="unknown float backend"):
        FloatIndex(4, "annoy")
    index = FloatIndex(4)
    with pytest.raises(HashgnnError, match=r"shape \(n, 4\)"):
        index.add(np.zeros((3, 5), np.float32))
    with pytest.raises(HashgnnError, match="floating-point"):
        index.add(np.zeros((3, 4), np.int64))
    index.add(np.zeros((3, 4), np.float32))
    with pytest.raises(HashgnnError, match="k must be a positive integer"):
        index.search(np.zeros((1, 4), np.float32), 0)
    h = HierarchicalIndex(16, 4)
    with pytest.raises(HashgnnError, match="2 codes but 3 vectors"):
        h.add(np.zeros((2, 2), np.uint8), np.zeros((3, 4), np.float32))
    with pytest.raises(HashgnnError, match="dtype uint8"):
        h.add(np.zeros((2, 2), np.int8), np.zeros((2, 4), np.float32))
    h.add(np.zeros((2, 2), np.uint8), np.zeros((2, 4), np.float32))
    with pytest.raises(HashgnnError, match="1 query codes but 2 query vectors"):
        h.search(np.zeros((1, 2), np.uint8), np.zeros((2, 4), np.float32), 3)


def test_rerank_keys_order_scores_then_positions():
    from numba import njit

    from hashgnn.index._kernels import _descending_key, _key_score

    @njit
    def keys_of(x, p):
        keys = np.empty(len(x), np.uint64)
        back = np.empty(len(x), np.float32)
        for i in range(len(x)):
            keys[i] = _descending_key(x[i], p[i])
            back[i] = _key_score(keys[i])
        return keys, back

    x = np.array([0.0, -0.0, 1.5, -1.5, 3e38, -3e38, np.inf, -np.inf, 1e-40, -1e-40, 7.25, 7.25], np.float32)
    p = np.array([5, 4, 0, 1, 2, 3, 6, 7, 8, 9, 11, 10])
    keys, back = keys_of(x, p)
    np.testing.assert_array_equal(back, x)  # -0.0 comes back as 0.0, which compares equal
    order = np.argsort(keys)
    want = np.lexsort((p, -x.astype(np.float64)))
    np.testing.assert_array_equal(p[order], p[want])


def test_over_fetch_follows_each_querys_own_exclusions():
    """One heavy query must not make every query fetch k + its exclusions; results stay exact."""
    from hashgnn.index._common import search_over_fetched

    rng = np.random.default_rng(3)
    n, nq, dim, k = 600, 40, 8, 10
    items = int_vectors(rng, n, dim)
    queries = rng.integers(-3, 4, (nq, dim)).astype(np.float32)
    lengths = np.where(np.arange(nq) == 7, 500, rng.integers(0, 12, nq))  # one heavy user
    excluded = np.zeros((nq, n), bool)
    for q, m in enumerate(lengths):
        excluded[q, rng.choice(n, m, replace=False)] = True
    ex = sp.csr_matrix(excluded)
    ex.sort_indices()
    fetched: list[tuple[int, int]] = []
    full = queries.astype(np.float64) @ items.astype(np.float64).T

    def search(qq: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
        fetched.append((len(qq), f))
        s = qq.astype(np.float64) @ items.astype(np.float64).T
        pos = np.argsort(-s, axis=1, kind="stable")[:, :f]
        return np.take_along_axis(s, pos, 1).astype(np.float32), pos

    csr = (ex.indptr.astype(np.int64), ex.indices.astype(np.int64))
    s, pos = search_over_fetched(search, queries, k, csr, n, -np.inf)
    want_s, _ = brute_ip_from_scores(np.where(excluded, NEG, full), k)
    np.testing.assert_array_equal(s, want_s.astype(np.float32))
    assert not excluded[np.arange(nq)[:, None], pos].any()
    assert sum(c for c, _ in fetched) == nq
    # only the heavy query's group fetches k + 500 (512: powers of two); the others k + 11 at most
    assert [(c, f) for c, f in fetched if f >= k + 500] == [(1, 512)]
    assert max(f for _, f in fetched if f < 512) <= 32
    fetched.clear()  # ungrouped: one search, every query fetching k + the most exclusions
    s2, pos2 = search_over_fetched(search, queries, k, csr, n, -np.inf, grouped=False)
    assert fetched == [(nq, k + 500)]
    np.testing.assert_array_equal(s2, s)
    np.testing.assert_array_equal(pos2, pos)
