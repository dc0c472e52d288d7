"""BipartiteGraph: CSR arrays both ways and the normalised adjacency, against dense references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hashgnn.errors import HashgnnError
from hashgnn.graph import BipartiteGraph


def _random_train(n_users: int = 9, n_items: int = 7, density: float = 0.35, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density).astype(np.float32)
    dense[2, :] = 0  # a user without items
    dense[:, 5] = 0  # an item without users
    return sp.csr_matrix(dense)


def test_csr_both_directions_match_the_matrix() -> None:
    train = _random_train()
    g = BipartiteGraph.from_csr(train)
    dense = train.toarray() > 0
    assert (g.n_users, g.n_items, g.n_edges) == (9, 7, int(dense.sum()))
    for u in range(g.n_users):
        items = g.user_indices[g.user_indptr[u] : g.user_indptr[u + 1]].tolist()
        assert items == sorted(np.flatnonzero(dense[u]).tolist())
    for i in range(g.n_items):
        users = g.item_indices[g.item_indptr[i] : g.item_indptr[i + 1]].tolist()
        assert users == sorted(np.flatnonzero(dense[:, i]).tolist())
    # edge_users pairs with user_indices to enumerate exactly the training edges
    pairs = set(zip(g.edge_users.tolist(), g.user_indices.tolist(), strict=True))
    assert pairs == set(zip(*np.nonzero(dense), strict=True))
    keys = g.edge_keys()
    assert bool((keys[1:] > keys[:-1]).all())
    assert g.user_degree().tolist() == dense.sum(1).tolist()
    assert g.item_degree().tolist() == dense.sum(0).tolist()


def test_duplicates_and_explicit_zeros_are_handled() -> None:
    m = sp.csr_matrix((np.array([1.0, 1.0, 0.0], np.float32), (np.array([0, 0, 1]), np.array([1, 1, 0]))), shape=(2, 2))
    g = BipartiteGraph.from_csr(m)
    assert g.n_edges == 1 and g.user_indices.tolist() == [1]


def test_norm_adj_is_symmetric_normalised_adjacency() -> None:
    train = _random_train()
    g = BipartiteGraph.from_csr(train)
    adj = g.norm_adj()
    assert adj.layout == torch.sparse_csr and adj.dtype == torch.float32
    assert g.norm_adj() is adj  # cached
    r = train.toarray()
    n = g.n_nodes
    a = np.zeros((n, n))
    a[: g.n_users, g.n_users :] = r
    a[g.n_users :, : g.n_users] = r.T
    deg = a.sum(1)
    with np.errstate(divide="ignore"):
        s = np.where(deg > 0, deg**-0.5, 0.0)
    expected = s[:, None] * a * s[None, :]
    np.testing.assert_allclose(adj.to_dense().numpy(), expected, rtol=1e-6, atol=1e-7)
    assert np.isfinite(adj.values().numpy()).all()


def test_rejects_non_sparse_input() -> None:
    with pytest.raises(HashgnnError, match="sparse"):
        BipartiteGraph.from_csr(np.ones((2, 2)))  # type: ignore[arg-type]
