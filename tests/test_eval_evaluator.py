"""The full-ranking evaluator: masking, exact tie-break, batching, against a per-user reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_eval_metrics import csr_rows, reference_mean

from hashgnn.errors import HashgnnError
from hashgnn.eval import evaluate, metric_keys, topk_desc, topk_items
from hashgnn.eval.metrics import check_ks


def reference_rank(scores: np.ndarray, exclude: set[int], length: int) -> list[int]:
    """One user's list: non-excluded items with a finite score, by (score desc, index asc)."""
    items = [i for i in range(len(scores)) if i not in exclude and scores[i] != -np.inf]
    items.sort(key=lambda i: (-scores[i], i))
    return items[:length]


class TableScorer:
    """Serves rows of a fixed score matrix, as numpy or torch, and records the calls."""

    def __init__(self, table: np.ndarray, as_torch: bool) -> None:
        self.table, self.as_torch, self.calls = table, as_torch, []

    def __call__(self, users: np.ndarray):
        self.calls.append(np.array(users))
        block = self.table[users].copy()
        return torch.from_numpy(block) if self.as_torch else block


# ---- topk_desc --------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 40),
    st.integers(1, 50),
    st.integers(1, 4),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_topk_desc_matches_stable_sort(rows, n, k, levels, with_inf, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels, size=(rows, n)).astype(np.float32)  # few levels: ties everywhere
    if with_inf:
        x[rng.random((rows, n)) < 0.3] = -np.inf
    got = topk_desc(torch.from_numpy(x), k).numpy()
    for r in range(rows):
        want = reference_rank(x[r], set(), k)
        assert got[r].tolist() == want + [-1] * (k - len(want))


def test_topk_desc_large_ties_deterministic():
    # Hamming-like integer scores: 33 levels over 5000 items, many rows need the tie repair
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 33, size=(64, 5000)).astype(np.float32))
    got = topk_desc(x, 300)
    want = torch.sort(x, dim=1, descending=True, stable=True).indices[:, :300]
    assert torch.equal(got, want)
    assert torch.equal(topk_desc(x.flip(0), 300), want.flip(0))  # no dependence on row position
    assert torch.equal(topk_desc(x, 300, repair_entries=5 * 5000), want)  # repaired 5 rows at a time


def test_topk_desc_all_equal_and_nan():
    x = torch.zeros(3, 10)
    assert topk_desc(x, 4).tolist() == [[0, 1, 2, 3]] * 3
    x[1, 5] = float("nan")
    with pytest.raises(HashgnnError, match="NaN"):
        topk_desc(x, 4)


# ---- evaluate against the reference ---------------------------------------------------------------


@st.composite
def eval_case(draw):
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.integers(1, 20))
    levels = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, size=(n_users, n_items)).astype(np.float32)
    train = (rng.random((n_users, n_items)) < draw(st.floats(0, 0.7))).astype(np.float32)
    test = (rng.random((n_users, n_items)) < draw(st.floats(0, 0.5))).astype(np.float32)
    ks = draw(st.lists(st.integers(1, 25), min_size=1, max_size=3))  # K may exceed n_items
    return scores, sp.csr_matrix(train), sp.csr_matrix(test), ks, draw(st.integers(1, 5)), draw(st.booleans())


@settings(max_examples=120, deadline=None)
@given(eval_case())
def test_evaluate_against_reference(case):
    scores, train, test, ks, batch, as_torch = case
    got = evaluate(TableScorer(scores, as_torch), train, test, ks, batch_users=batch, progress=False)
    ks_u = check_ks(ks)
    ranked, tests = [], []
    for u in range(scores.shape[0]):
        ranked.append(reference_rank(scores[u], set(train[u].indices.tolist()), max(ks_u)))
        tests.append(set(test[u].indices.tolist()))
    want = reference_mean(ranked, tests, ks_u, max(ks_u))
    assert got["n_users"] == want["n_users"]
    for key in metric_keys(ks_u):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_training_items_are_masked():
    # item 0 scores highest but is user 0's training item; the test item 1 is second best
    scores = np.array([[9.0, 5.0, 1.0, 0.0]], np.float32)
    train, test = csr_rows([[0]], 4), csr_rows([[1]], 4)
    r = evaluate(TableScorer(scores, False), train, test, [1], progress=False)
    assert r["recall@1"] == 1.0 and r["ndcg@1"] == 1.0 and r["n_users"] == 1
    # a test item that is also a training item can never be retrieved (it counts in |test|)
    test = csr_rows([[0, 1]], 4)
    r = evaluate(TableScorer(scores, False), train, test, [3], progress=False)
    assert r["recall@3"] == 0.5


def test_ties_go_to_lower_index_and_k_beyond_items():
    scores = np.zeros((2, 5), np.float32)
    train, test = csr_rows([[1], []], 5), csr_rows([[0, 2], [4]], 5)
    top = topk_items(TableScorer(scores, True), [0, 1], 7, exclude=train)
    assert top.tolist() == [[0, 2, 3, 4, -1, -1, -1], [0, 1, 2, 3, 4, -1, -1]]
    r = evaluate(TableScorer(scores, True), train, test, [2, 7], progress=False)
    assert r["recall@2"] == pytest.approx((1.0 + 0.0) / 2)
    assert r["precision@7"] == pytest.approx((2 / 7 + 1 / 7) / 2)
    assert r["recall@7"] == 1.0


def test_users_without_test_items_are_not_scored():
    scores = np.random.default_rng(1).random((6, 8)).astype(np.float32)
    train, test = csr_rows([[0]] * 6, 8), csr_rows([[1], [], [2], [], [], [3]], 8)
    scorer = TableScorer(scores, False)
    r = evaluate(scorer, train, test, [3], batch_users=2, progress=False)
    assert r["n_users"] == 3
    assert np.concatenate(scorer.calls).tolist() == [0, 2, 5]
    assert [len(c) for c in scorer.calls] == [2, 1]
    r = evaluate(TableScorer(scores, False), train, test, [3], users=[5, 1, 0], progress=False)
    assert r["n_users"] == 2


def test_readonly_and_integer_blocks_accepted():
    degree = np.array([3, 1, 2, 2], np.int64)
    train, test = csr_rows([[0], [3]], 4), csr_rows([[2], [2]], 4)

    def broadcast(users):  # a read-only view: the evaluator must copy before masking
        return np.broadcast_to(degree, (len(users), 4))

    r = evaluate(broadcast, train, test, [1], progress=False)
    assert r["recall@1"] == 0.5  # user 0 gets item 2 (degree 2, lower index than 3); user 1 gets item 0
    fortran = np.asfortranarray(np.tile(degree.astype(np.float32), (2, 1)))
    r = evaluate(lambda users: fortran[: len(users)], train, test, [1], progress=False)
    assert r["recall@1"] == 0.5
    assert fortran.min() > -np.inf  # copied, not masked in place


def test_exclude_is_passed_to_scorers_that_ask():
    seen = []

    def scorer(users, exclude=None):
        seen.append(exclude.toarray())
        return np.zeros((len(users), 3), np.float32)

    train, test = csr_rows([[2], [0, 1]], 3), csr_rows([[0], [2]], 3)
    evaluate(scorer, train, test, [1], progress=False)
    assert np.array_equal(seen[0], train.toarray())


def test_bad_scorer_output():
    train, test = csr_rows([[0]], 4), csr_rows([[1]], 4)
    with pytest.raises(HashgnnError, match="shape"):
        evaluate(lambda u: np.zeros((len(u), 3)), train, test, [1], progress=False)
    with pytest.raises(HashgnnError, match="NaN"):
        evaluate(lambda u: np.full((len(u), 4), np.nan), train, test, [1], progress=False)
    with pytest.raises(HashgnnError):
        evaluate(lambda u: np.zeros((len(u), 4)), train, csr_rows([[1]], 5), [1], progress=False)
