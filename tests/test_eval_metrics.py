"""Ranking metrics: hand-computed cases and a slow, obviously-correct per-user reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from hashgnn.errors import ConfigError
from hashgnn.eval.metrics import check_ks, mean_metrics, metric_keys, per_user_metrics


def csr_rows(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    """Binary CSR matrix from lists of item indices (a test helper)."""
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    m = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(rows), n_items))
    m.sum_duplicates()
    m.data[:] = 1
    return m


# ---- the reference: one user at a time, written like NGCF's utility/metrics.py --------------------


def ref_dcg(r: list[int], k: int) -> float:
    return sum(rel / math.log2(pos + 2) for pos, rel in enumerate(r[:k]))


def reference_user(ranked: list[int], test_items: set[int], ks: list[int], depth: int) -> dict[str, float]:
    """Metrics of one user from a ranked list (no -1 entries); NGCF's hit vector r has length depth."""
    r = [1 if i in test_items else 0 for i in ranked[:depth]]
    out = {}
    for k in ks:
        hits = sum(1 for i in ranked[:k] if i in test_items)
        dcg = sum(1 / math.log2(pos + 2) for pos, i in enumerate(ranked[:k]) if i in test_items)
        ideal = sum(1 / math.log2(pos + 2) for pos in range(min(k, len(test_items))))
        out[f"recall@{k}"] = hits / len(test_items)
        out[f"precision@{k}"] = hits / k
        out[f"hit@{k}"] = 1.0 if hits else 0.0
        out[f"ndcg@{k}"] = dcg / ideal
        legacy_ideal = ref_dcg(sorted(r, reverse=True), k)  # NGCF: ndcg_at_k(r, k)
        out[f"ndcg_legacy@{k}"] = dcg / legacy_ideal if legacy_ideal else 0.0
    return out


def reference_mean(ranked: list[list[int]], tests: list[set[int]], ks: list[int], depth: int) -> dict[str, float]:
    """Average of :func:`reference_user` over the users with test items."""
    rows = [reference_user(r, t, ks, depth) for r, t in zip(ranked, tests, strict=True) if t]
    out = {key: (sum(x[key] for x in rows) / len(rows) if rows else 0.0) for key in metric_keys(ks)}
    out["n_users"] = len(rows)
    return out


# ---- hand-computed ----------------------------------------------------------------------------------


def test_hand_computed_case():
    # user 0: list [3, 1, 7, 2, 9], test {1, 2, 5} -> hit vector 0 1 0 1 0
    # user 1: no test items (skipped); user 2: list [4, -1, ...] (one real item), test {4}
    top = np.array([[3, 1, 7, 2, 9], [0, 1, 2, 3, 4], [4, -1, -1, -1, -1]])
    test = csr_rows([[1, 2, 5], [], [4]], 10)
    values, valid = per_user_metrics(top, test, [1, 3, 5])
    assert valid.tolist() == [True, False, True]
    d2, d3, d4, d5 = (1 / math.log2(x) for x in (2, 3, 4, 5))  # discounts of positions 1..4
    u0 = {k: v[0] for k, v in values.items()}
    # K=1: the first item (3) is no hit
    assert u0["recall@1"] == 0 and u0["ndcg@1"] == 0 and u0["ndcg_legacy@1"] == 0 and u0["hit@1"] == 0
    # K=3: one hit at position 2 -> DCG = 1/log2(3); ideal over min(3, |test|=3) positions
    assert u0["recall@3"] == pytest.approx(1 / 3)
    assert u0["precision@3"] == pytest.approx(1 / 3)
    assert u0["hit@3"] == 1
    assert u0["ndcg@3"] == pytest.approx(d3 / (d2 + d3 + d4))  # 0.29608
    # legacy: 2 hits in the top max(K)=5, so the ideal is 2 hits at the top: 1 + 1/log2(3)
    assert u0["ndcg_legacy@3"] == pytest.approx(d3 / (d2 + d3))  # 0.38685
    # K=5: hits at positions 2 and 4
    assert u0["recall@5"] == pytest.approx(2 / 3)
    assert u0["precision@5"] == pytest.approx(2 / 5)
    assert u0["ndcg@5"] == pytest.approx((d3 + d5) / (d2 + d3 + d4))  # 0.49819
    assert u0["ndcg_legacy@5"] == pytest.approx((d3 + d5) / (d2 + d3))  # 0.65092
    # user 2: a hit at position 1 is perfect whatever the padding
    u2 = {k: v[2] for k, v in values.items()}
    assert u2["recall@1"] == 1 and u2["ndcg@1"] == 1 and u2["ndcg_legacy@5"] == 1 and u2["ndcg@5"] == 1
    assert u2["precision@5"] == pytest.approx(1 / 5)

    means = mean_metrics(top, test, [1, 3, 5])
    assert means["n_users"] == 2
    assert means["recall@5"] == pytest.approx((2 / 3 + 1) / 2)


def test_legacy_ideal_depends_on_depth():
    # the same list evaluated at K=3 alone: only 1 hit within the top 3, so the legacy ideal is 1
    top = np.array([[3, 1, 7, 2, 9]])
    test = csr_rows([[1, 2, 5]], 10)
    alone = mean_metrics(top, test, [3])
    assert alone["ndcg_legacy@3"] == pytest.approx(1 / math.log2(3))  # 0.63093
    deep = mean_metrics(top, test, [3], legacy_depth=5)
    assert deep["ndcg_legacy@3"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert alone["ndcg@3"] == deep["ndcg@3"]  # the standard NDCG does not depend on it


def test_minus_one_is_never_a_hit():
    # item n_items-1 of row 0 and the -1 of row 1 map to neighbouring keys; -1 must not match
    top = np.array([[0, 1], [-1, -1]])
    test = csr_rows([[2], [2]], 3)
    values, _ = per_user_metrics(top, test, [2])
    assert values["recall@2"].tolist() == [0.0, 0.0]
    test = csr_rows([[0], [0]], 3)
    top = np.array([[1, 2], [-1, -1]])
    values, _ = per_user_metrics(top, test, [2])
    assert values["hit@2"].tolist() == [0.0, 0.0]


def test_check_ks():
    assert check_ks([20, 50, 20, 100]) == [20, 50, 100]
    assert check_ks(10) == [10]
    for bad in ([0], [-5], [], [2.5], [True]):
        with pytest.raises(ConfigError):
            check_ks(bad)


def test_short_lists_rejected():
    with pytest.raises(ValueError, match="ranked lists hold 3 items, need 5"):
        per_user_metrics(np.zeros((1, 3), np.int64), csr_rows([[1]], 5), [5])


# ---- random data against the reference ------------------------------------------------------------


@st.composite
def ranked_case(draw):
    n_items = draw(st.integers(1, 25))
    n_users = draw(st.integers(1, 8))
    ks = draw(st.lists(st.integers(1, 30), min_size=1, max_size=4))
    depth = draw(st.one_of(st.none(), st.integers(1, 30)))
    length = max(*ks, depth or 0)
    ranked, tests, top = [], [], np.full((n_users, length), -1, np.int64)
    for u in range(n_users):
        perm = draw(st.permutations(range(n_items)))
        m = draw(st.integers(0, min(n_items, length)))
        ranked.append(list(perm[:m]))
        top[u, :m] = perm[:m]
        tests.append(set(draw(st.lists(st.integers(0, n_items - 1), max_size=n_items))))
    return n_items, ks, depth, ranked, tests, top


@settings(max_examples=150, deadline=None)
@given(ranked_case())
def test_against_reference(case):
    n_items, ks, depth, ranked, tests, top = case
    test = csr_rows([sorted(t) for t in tests], n_items)
    got = mean_metrics(top, test, ks, legacy_depth=depth)
    ks_u = check_ks(ks)
    want = reference_mean(ranked, tests, ks_u, depth or max(ks_u))
    assert got["n_users"] == want["n_users"]
    for key in metric_keys(ks_u):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
