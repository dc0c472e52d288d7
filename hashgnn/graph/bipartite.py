"""The user-item bipartite training graph, held as torch CSR arrays in both directions.

Users are nodes ``0..n_users-1`` and items ``0..n_items-1`` in their own index spaces; the
(U+I) x (U+I) adjacency used by LightGCN numbers users first and items after them
(item ``i`` is node ``n_users + i``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from hashgnn.arrays import repeat_rows
from hashgnn.errors import HashgnnError


@dataclass
class BipartiteGraph:
    """User->items and item->users adjacency of the training interactions as CSR tensors.

    Attributes:
        n_users, n_items: node counts per side.
        user_indptr, user_indices: CSR of user -> items (on ``device``); the items of user
            ``u`` are ``user_indices[user_indptr[u]:user_indptr[u+1]]``, sorted ascending. The
            pointers are int64, the indices int32 (int64 only for more than 2^31 - 1 nodes): per-edge
            arrays dominate a big graph's memory, and consumers cast the rows they gather.
        item_indptr, item_indices: CSR of item -> users, likewise.
        edge_users: the user of every edge in ``user_indices`` order (int32 like the indices), so
            ``(edge_users[e], user_indices[e])`` enumerates the positive training edges.
        device: where the tensors live.
    """

    n_users: int
    n_items: int
    user_indptr: torch.Tensor
    user_indices: torch.Tensor
    item_indptr: torch.Tensor
    item_indices: torch.Tensor
    edge_users: torch.Tensor
    device: torch.device
    _norm_adj: torch.Tensor | None = field(default=None, repr=False)
    _edge_keys: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def from_csr(cls, train: sp.spmatrix, device: torch.device | str = "cpu") -> BipartiteGraph:
        """Build from a scipy sparse (n_users x n_items) matrix; any stored entry is an edge."""
        if not sp.issparse(train) or train.ndim != 2:
            raise HashgnnError(f"expected a 2-D scipy sparse interaction matrix, got {type(train).__name__}")
        device = torch.device(device)
        r = sp.csr_matrix(train, copy=True)
        r.sum_duplicates()
        r.eliminate_zeros()
        r.sort_indices()
        c = r.tocsc()
        c.sort_indices()
        n_users, n_items = r.shape

        idx = np.int32 if max(n_users, n_items) < 2**31 - 1 else np.int64

        def t(a: np.ndarray, dtype: type = np.int64) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype)).to(device)

        edge_users = repeat_rows(np.diff(r.indptr), idx)
        user_indptr, user_indices = t(r.indptr), t(r.indices, idx)
        del r  # a big graph's copies go as soon as their tensors exist
        item_indptr, item_indices = t(c.indptr), t(c.indices, idx)
        del c
        return cls(
            n_users=int(n_users),
            n_items=int(n_items),
            user_indptr=user_indptr,
            user_indices=user_indices,
            item_indptr=item_indptr,
            item_indices=item_indices,
            edge_users=t(edge_users, idx),
            device=device,
        )

    @property
    def n_edges(self) -> int:
        """Number of (user, item) training edges."""
        return int(self.user_indices.numel())

    @property
    def n_nodes(self) -> int:
        """Users plus items (the size of :meth:`norm_adj`)."""
        return self.n_users + self.n_items

    def user_degree(self) -> torch.Tensor:
        """Number of training items of every user, (n_users,) int64."""
        return self.user_indptr[1:] - self.user_indptr[:-1]

    def item_degree(self) -> torch.Tensor:
        """Number of training users of every item, (n_items,) int64."""
        return self.item_indptr[1:] - self.item_indptr[:-1]

    def edge_keys(self) -> torch.Tensor:
        """Sorted ``user * n_items + item`` of every edge (cached), for vectorised membership tests."""
        if self._edge_keys is None:
            # CSR rows are in user order and sorted within a row, so the keys come out sorted.
            self._edge_keys = self.edge_users.long() * self.n_items + self.user_indices.long()
        return self._edge_keys

    def norm_adj(self) -> torch.Tensor:
        """Symmetric-normalised adjacency ``D^-1/2 A D^-1/2`` of the (U+I) x (U+I) graph (cached).

        A torch sparse CSR float32 tensor on ``device``; users are rows ``0..n_users-1`` and item
        ``i`` is row ``n_users + i``. Nodes without edges have empty rows (degree 0 gives 0, not
        inf). Indices are int32 when they fit: the CPU kernel (MKL) is about 3x faster with them.
        """
        if self._norm_adj is None:
            self._norm_adj = _normalised_adjacency(self)
        return self._norm_adj


def _normalised_adjacency(g: BipartiteGraph) -> torch.Tensor:
    nu = g.n_users
    ui = g.user_indptr.cpu().numpy()
    uj = g.user_indices.cpu().numpy()
    ii = g.item_indptr.cpu().numpy()
    ij = g.item_indices.cpu().numpy()
    du = np.diff(ui).astype(np.float64)
    di = np.diff(ii).astype(np.float64)
    with np.errstate(divide="ignore"):
        su = np.where(du > 0, du**-0.5, 0.0)
        si = np.where(di > 0, di**-0.5, 0.0)
    # User rows hold item columns (shifted by n_users), item rows hold user columns; both blocks are
    # already sorted, so the stacked rows are a valid CSR without a sort.
    indptr = np.concatenate([ui, ui[-1] + ii[1:]])
    indices = np.concatenate([uj + nu, ij])
    row_scale = np.concatenate([np.repeat(su, np.diff(ui)), np.repeat(si, np.diff(ii))])
    col_scale = np.concatenate([si[uj], su[ij]])
    values = (row_scale * col_scale).astype(np.float32)
    n = g.n_nodes
    idx_dtype = np.int32 if max(n, len(indices)) < 2**31 - 1 else np.int64
    return csr_tensor(
        torch.from_numpy(indptr.astype(idx_dtype)),
        torch.from_numpy(indices.astype(idx_dtype)),
        torch.from_numpy(values),
        (n, n),
    ).to(g.device)


def csr_tensor(
    indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """A torch sparse CSR tensor, without invariant checks and without torch's "beta" warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(indptr, indices, values, size=size, check_invariants=False)
