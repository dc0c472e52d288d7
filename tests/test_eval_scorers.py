"""Scorers: Hamming vs the packing reference, hierarchical vs brute force, inner product, popular."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_eval_evaluator import reference_rank
from test_eval_metrics import csr_rows, reference_mean

from hashgnn.codes.packing import hamming_distance_reference, pack_codes
from hashgnn.errors import HashgnnError
from hashgnn.eval import (
    HammingScorer,
    HierarchicalScorer,
    InnerProductScorer,
    PopularScorer,
    evaluate,
    metric_keys,
    topk_items,
)


def random_codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    return pack_codes(rng.standard_normal((n, bits)))


@pytest.mark.parametrize("bits", [1, 7, 8, 13, 32, 64, 128])
def test_hamming_scorer_exact(bits):
    rng = np.random.default_rng(bits)
    u, i = random_codes(rng, 9, bits), random_codes(rng, 31, bits)
    users = np.array([3, 0, 8, 3])
    got = HammingScorer(u, i, bits)(users).numpy()
    want = bits - hamming_distance_reference(u[users], i)
    assert np.array_equal(got, want.astype(np.float32))


def test_hamming_scorer_rejects_wrong_width():
    rng = np.random.default_rng(0)
    with pytest.raises(HashgnnError, match="packed"):
        HammingScorer(random_codes(rng, 3, 16), random_codes(rng, 3, 16), bits=32)


def test_inner_product_scorer():
    rng = np.random.default_rng(0)
    ue, ie = rng.standard_normal((5, 8)), rng.standard_normal((11, 8))
    got = InnerProductScorer(ue, torch.from_numpy(ie))(np.array([4, 1])).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ue[[4, 1]] @ ie.T, rtol=1e-5, atol=1e-5)
    with pytest.raises(HashgnnError, match="width"):
        InnerProductScorer(ue, ie[:, :3])


def test_popular_scorer():
    train = csr_rows([[0, 2], [2], [2, 3], []], 5)
    block = PopularScorer(train)(np.array([0, 3]))
    assert block.tolist() == [[1, 0, 3, 1, 0]] * 2
    assert topk_items(PopularScorer(train), [0], 3).tolist() == [[2, 0, 3]]  # unmasked, n_items from scorer
    # user 0: item 2 (train) masked; degree ties 0 vs 3 -> lower index first, then 3, 1, 4
    r = evaluate(PopularScorer(train), train, csr_rows([[3], [], [], [1]], 5), [1, 2], progress=False)
    # user 0 list [3, 1, ...] -> hit at 1; user 3 list [2, 0, 3, ...] -> no hit in 2
    assert r["n_users"] == 2
    assert r["recall@1"] == pytest.approx(0.5) and r["recall@2"] == pytest.approx(0.5)


def brute_hierarchical(uc, ic, bits, uz, iz, users, c, exclude_rows):
    """One user at a time: the C best non-excluded items by Hamming (ties: lower index), scored by z."""
    sim = bits - hamming_distance_reference(uc[users], ic)
    out = np.full(sim.shape, -np.inf)
    for b, u in enumerate(users):
        excl = set(exclude_rows[b].indices.tolist()) if exclude_rows is not None else set()
        cand = reference_rank(sim[b].astype(np.float64), excl, c)
        out[b, cand] = iz[cand] @ uz[u]
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 20),
    st.integers(1, 30),
    st.sampled_from([3, 8, 16]),
    st.integers(1, 35),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_hierarchical_scorer_vs_brute_force(n_users, n_items, bits, c, with_exclude, seed):
    rng = np.random.default_rng(seed)
    uc, ic = random_codes(rng, n_users, bits), random_codes(rng, n_items, bits)
    # small integer vectors make float32 products exact, so the comparison can be exact too
    uz = rng.integers(-3, 4, (n_users, 4)).astype(np.float32)
    iz = rng.integers(-3, 4, (n_items, 4)).astype(np.float32)
    users = rng.permutation(n_users)[: max(1, n_users // 2)]
    excl = (
        csr_rows([rng.choice(n_items, rng.integers(0, n_items + 1), replace=False).tolist() for _ in users], n_items)
        if with_exclude
        else None
    )
    scorer = HierarchicalScorer(uc, ic, bits, uz, iz, candidates=c)
    got = scorer(users, exclude=excl).numpy()
    assert np.array_equal(got, brute_hierarchical(uc, ic, bits, uz, iz, users, c, excl))


def test_hierarchical_evaluation_masks_before_choosing_candidates():
    # 3 items; item 0 is nearest in Hamming space but is the user's training item, so with C=1 the
    # candidate must be item 1 (the test item), not the masked item 0
    bits = 8
    uc = pack_codes(np.ones((1, bits)))
    ic = pack_codes(np.array([[1] * 8, [1] * 7 + [-1], [-1] * 8], np.float32))
    z = np.ones((1, 2), np.float32)
    scorer = HierarchicalScorer(uc, ic, bits, z, np.ones((3, 2), np.float32), candidates=1)
    r = evaluate(scorer, csr_rows([[0]], 3), csr_rows([[1]], 3), [1, 3], progress=False)
    assert r["recall@1"] == 1.0
    assert r["precision@3"] == pytest.approx(1 / 3)  # only one candidate is ever recommended
    # without the mask (as the authors' code), item 0 would take the only slot
    assert np.isneginf(scorer(np.array([0]))[0, 1].item())


def test_hierarchical_evaluation_vs_reference():
    rng = np.random.default_rng(7)
    n_users, n_items, bits, c = 30, 60, 8, 12
    uc, ic = random_codes(rng, n_users, bits), random_codes(rng, n_items, bits)
    uz = rng.integers(-2, 3, (n_users, 3)).astype(np.float32)
    iz = rng.integers(-2, 3, (n_items, 3)).astype(np.float32)
    train = csr_rows([rng.choice(n_items, 5, replace=False).tolist() for _ in range(n_users)], n_items)
    test = csr_rows([rng.choice(n_items, 4, replace=False).tolist() for _ in range(n_users)], n_items)
    got = evaluate(
        HierarchicalScorer(uc, ic, bits, uz, iz, candidates=c), train, test, [5, 20], batch_users=7, progress=False
    )
    users = np.arange(n_users)
    full = brute_hierarchical(uc, ic, bits, uz, iz, users, c, train)
    ranked = [reference_rank(full[u], set(train[u].indices.tolist()), 20) for u in users]
    want = reference_mean(ranked, [set(test[u].indices.tolist()) for u in users], [5, 20], 20)
    for key in metric_keys([5, 20]):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
