"""Samplers: neighbours stay inside the neighbourhood, are distinct when they can be, and are uniform;
negatives are never training items and are uniform over the rest."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hashgnn.errors import HashgnnError
from hashgnn.graph import BipartiteGraph, sample_negatives, sample_neighbors


def _csr(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    indices = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]) if indptr[-1] else np.zeros(0, np.int64)
    return torch.from_numpy(indptr.astype(np.int64)), torch.from_numpy(indices)


def _chi2_ok(counts: np.ndarray, expected: np.ndarray) -> bool:
    """Pearson chi-square below mean + 5 sd of the chi-square distribution (df = cells - 1)."""
    stat = float(((counts - expected) ** 2 / expected).sum())
    df = len(counts) - 1
    return stat < df + 5 * math.sqrt(2 * df)


@settings(max_examples=60, deadline=None)
@given(
    degrees=st.lists(st.integers(0, 12), min_size=1, max_size=20),
    fanout=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
)
def test_neighbors_stay_inside_and_are_distinct_when_possible(degrees: list[int], fanout: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = [sorted(rng.choice(50, size=d, replace=False).tolist()) for d in degrees]
    indptr, indices = _csr(rows)
    nodes = torch.arange(len(rows))
    out = sample_neighbors(indptr, indices, nodes, fanout, torch.Generator().manual_seed(seed))
    assert out.shape == (len(rows), fanout) and out.dtype == torch.long
    for r, sample in zip(rows, out.tolist(), strict=True):
        if not r:
            assert sample == [-1] * fanout
            continue
        assert set(sample) <= set(r)
        if len(r) >= fanout:
            assert len(set(sample)) == fanout  # without replacement
        if len(r) == fanout:
            assert sorted(sample) == r  # all of them, as the authors' sampler returns them


def test_padding_nodes_and_empty_graph_give_padding() -> None:
    indptr, indices = _csr([[1, 2], []])
    out = sample_neighbors(indptr, indices, torch.tensor([-1, 0, 1]), 3, torch.Generator().manual_seed(0))
    assert out[0].tolist() == [-1, -1, -1] and out[2].tolist() == [-1, -1, -1]
    assert set(out[1].tolist()) <= {1, 2}
    empty_ptr, empty_idx = _csr([[], []])
    assert sample_neighbors(
        empty_ptr, empty_idx, torch.tensor([0, 1]), 2, torch.Generator().manual_seed(0)
    ).tolist() == [[-1, -1], [-1, -1]]


def test_neighbors_are_uniform_without_replacement() -> None:
    # One node with 12 neighbours, fanout 4, many repetitions: every neighbour appears with
    # probability 4/12 per draw, and every unordered pair equally often (Floyd gives uniform subsets).
    neigh = list(range(100, 112))
    indptr, indices = _csr([neigh])
    reps = 6000
    out = sample_neighbors(
        indptr, indices, torch.zeros(reps, dtype=torch.long), 4, torch.Generator().manual_seed(123)
    ).numpy()
    counts = np.array([(out == v).sum() for v in neigh], dtype=float)
    assert _chi2_ok(counts, np.full(12, reps * 4 / 12))
    # pairs: C(12, 2) = 66 cells, each in a subset with probability C(10, 2) / C(12, 4)
    pair_counts = np.zeros((12, 12))
    s = np.sort(out - 100, axis=1)
    for a in range(4):
        for b in range(a + 1, 4):
            np.add.at(pair_counts, (s[:, a], s[:, b]), 1)
    iu = np.triu_indices(12, 1)
    p_pair = math.comb(10, 2) / math.comb(12, 4)
    assert _chi2_ok(pair_counts[iu], np.full(66, reps * p_pair))


def test_neighbors_are_uniform_with_replacement() -> None:
    neigh = [3, 8, 9]
    indptr, indices = _csr([neigh])
    reps = 4000
    out = sample_neighbors(
        indptr, indices, torch.zeros(reps, dtype=torch.long), 5, torch.Generator().manual_seed(7)
    ).numpy()
    counts = np.array([(out == v).sum() for v in neigh], dtype=float)
    assert _chi2_ok(counts, np.full(3, reps * 5 / 3))
    # with replacement: repeats within a row must occur (5 draws from 3 values)
    assert all(len(set(r)) < 5 for r in out.tolist())


def test_sampling_is_reproducible_from_the_generator() -> None:
    indptr, indices = _csr([[1, 2, 3, 4, 5, 6], [7], [8, 9]])
    nodes = torch.tensor([0, 1, 2, 0])
    a = sample_neighbors(indptr, indices, nodes, 4, torch.Generator().manual_seed(5))
    b = sample_neighbors(indptr, indices, nodes, 4, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def _train_matrix(seed: int = 0, n_users: int = 30, n_items: int = 25) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < 0.3
    dense[0, :] = True
    dense[0, 4] = False  # user 0 has exactly one non-interacted item
    return sp.csr_matrix(dense.astype(np.float32))


def test_negatives_are_never_training_items() -> None:
    train = _train_matrix()
    g = BipartiteGraph.from_csr(train)
    users = torch.arange(g.n_users).repeat(20)
    neg = sample_negatives(g, users, 7, torch.Generator().manual_seed(1))
    assert neg.shape == (len(users), 7)
    dense = train.toarray() > 0
    assert not dense[users.numpy()[:, None], neg.numpy()].any()
    assert (neg[users == 0] == 4).all()  # the only choice left for user 0


def test_negatives_are_uniform_over_non_interacted_items() -> None:
    train = _train_matrix(seed=3)
    g = BipartiteGraph.from_csr(train)
    user = 5
    allowed = np.flatnonzero(train.toarray()[user] == 0)
    reps = 5000
    neg = sample_negatives(g, torch.full((reps,), user), 2, torch.Generator().manual_seed(9)).numpy()
    counts = np.array([(neg == i).sum() for i in allowed], dtype=float)
    assert counts.sum() == reps * 2
    assert _chi2_ok(counts, np.full(len(allowed), reps * 2 / len(allowed)))


def test_negatives_from_a_sparse_csr_tensor_match_the_graph_path() -> None:
    train = _train_matrix(seed=4)
    g = BipartiteGraph.from_csr(train)
    t = torch.sparse_csr_tensor(
        torch.from_numpy(train.indptr.astype(np.int64)),
        torch.from_numpy(train.indices.astype(np.int64)),
        torch.from_numpy(train.data),
        size=train.shape,
        check_invariants=False,
    )
    users = torch.arange(g.n_users)
    a = sample_negatives(g, users, 3, torch.Generator().manual_seed(2))
    b = sample_negatives(t, users, 3, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


def test_user_with_every_item_is_a_clear_error() -> None:
    g = BipartiteGraph.from_csr(sp.csr_matrix(np.ones((2, 3), np.float32)))
    with pytest.raises(HashgnnError, match="all 3 items"):
        sample_negatives(g, torch.tensor([1]), 2, torch.Generator().manual_seed(0))
