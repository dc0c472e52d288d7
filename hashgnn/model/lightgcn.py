"""LightGCN (He et al., SIGIR 2020): full-graph propagation over the normalised adjacency.

``E^(k+1) = A_hat E^(k)`` with ``A_hat = D^-1/2 A D^-1/2`` of the user-item graph, no weights and
no non-linearity; the output is the mean of ``E^(0) .. E^(K)``. Embeddings are initialised
N(0, 0.1^2) as in the reference LightGCN-PyTorch code.

Speed: ``A_hat`` is symmetric, so the backward of ``A_hat @ X`` is ``A_hat @ grad``; training uses
:class:`LightGCNRows`, one autograd node that computes only the batch's rows of the output and
back-propagates with the same CSR matrix (int32 indices, MKL's kernel on CPU) instead of a
transpose, keeping no per-layer autograd graph.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from hashgnn.graph.bipartite import BipartiteGraph, csr_tensor


def spmm(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``adj @ x`` for a sparse CSR ``adj`` and a dense ``x``.

    On CPU this writes MKL's product straight into a fresh tensor (``addmm`` with ``beta=0`` and
    ``out`` the input, which PyTorch documents as ignoring the input's content); plain ``adj @ x``
    zero-fills a temporary and copies it, about 25% more time on this memory-bound product.
    """
    if adj.device.type != "cpu":
        return adj @ x
    y = torch.empty((adj.shape[0], x.shape[1]), dtype=x.dtype, device=x.device)
    return torch.addmm(y, adj, x.contiguous(), beta=0.0, out=y)


class SymmetricSpMM(torch.autograd.Function):
    """``adj @ x`` for a symmetric sparse ``adj``; the gradient w.r.t. ``x`` is ``adj @ grad``."""

    @staticmethod
    def forward(ctx: Any, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return spmm(adj, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, spmm(ctx.adj, grad)


def symmetric_spmm(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``adj @ x`` with the symmetric-adjacency backward of :class:`SymmetricSpMM`."""
    return SymmetricSpMM.apply(adj, x)


def csr_rows(adj: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The rows ``rows`` (any order, repeats allowed) of a sparse CSR matrix, as a new CSR matrix.

    Vectorised gather of the rows' index ranges; torch has no CSR ``index_select`` on CPU.
    """
    indptr = adj.crow_indices()
    ip = indptr.long()
    start = ip[rows]
    counts = ip[rows + 1] - start
    new_ptr = torch.zeros(rows.numel() + 1, dtype=torch.long, device=rows.device)
    torch.cumsum(counts, 0, out=new_ptr[1:])
    pos = torch.arange(int(new_ptr[-1]), device=rows.device) - torch.repeat_interleave(new_ptr[:-1] - start, counts)
    return csr_tensor(new_ptr.to(indptr.dtype), adj.col_indices()[pos], adj.values()[pos], (rows.numel(), adj.shape[1]))


class LightGCNRows(torch.autograd.Function):
    """Rows ``rows`` of LightGCN's output ``P x0`` with ``P = (I + A + ... + A^K) / (K + 1)``.

    Forward: ``x_k = A x_{k-1}`` over the whole graph for k < K, and the last layer only on the
    requested rows (a row-subset sparse product). Backward: the gradient w.r.t. ``x0`` is
    ``P^T G = P G`` (A is symmetric) for the scattered row gradient G, computed with Horner's rule
    ``y = G; y = G + A y`` (K times): one sparse product per step plus an ``index_add`` of the
    batch's rows (G is zero elsewhere).
    No autograd graph over the (n_nodes x d) intermediates is kept.
    """

    @staticmethod
    def forward(ctx: Any, x0: torch.Tensor, adj: torch.Tensor, rows: torch.Tensor, layers: int) -> torch.Tensor:
        ctx.adj, ctx.layers = adj, layers
        ctx.save_for_backward(rows)
        if layers == 0:
            return x0[rows]
        acc = x0[rows]
        x = x0
        for _ in range(layers - 1):
            x = spmm(adj, x)
            acc += x[rows]
        acc += spmm(csr_rows(adj, rows), x)
        return acc / (layers + 1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (rows,) = ctx.saved_tensors
        adj, layers = ctx.adj, ctx.layers
        g = (grad / (layers + 1)).contiguous()
        y = torch.zeros((adj.shape[0], grad.shape[1]), dtype=grad.dtype, device=grad.device)
        y.index_add_(0, rows, g)
        for _ in range(layers):
            # G is zero outside the batch's rows, so "+ G" is a small index_add, not a full pass.
            y = spmm(adj, y)
            y.index_add_(0, rows, g)
        return y, None, None, None


class LightGCN(nn.Module):
    """LightGCN encoder: ID embeddings propagated ``layers`` times, layer outputs averaged.

    Args:
        graph: the training graph (its :meth:`~hashgnn.graph.bipartite.BipartiteGraph.norm_adj`).
        dim: embedding width (64 in LightGCN's experiments).
        layers: propagation layers K (3).

    One (n_users + n_items, dim) table holds the layer-0 embeddings, users first, so the
    propagation needs no concatenation and its gradient no split.
    """

    def __init__(self, graph: BipartiteGraph, dim: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.graph, self.layers, self.out_dim = graph, layers, dim
        self.embedding = nn.Embedding(graph.n_users + graph.n_items, dim)
        nn.init.normal_(self.embedding.weight, std=0.1)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final representations of all users (n_users, dim) and items (n_items, dim)."""
        adj = self.graph.norm_adj()
        x = self.embedding.weight
        acc = x
        for _ in range(self.layers):
            x = symmetric_spmm(adj, x)
            acc = acc + x
        out = acc / (self.layers + 1)
        return out[: self.graph.n_users], out[self.graph.n_users :]

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Representations of a batch; ``generator`` is unused (LightGCN does not sample)."""
        rows = torch.cat([users, items + self.graph.n_users])
        out = LightGCNRows.apply(self.embedding.weight, self.graph.norm_adj(), rows, self.layers)
        return out[: users.numel()], out[users.numel() :]

    def ego(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-0 embeddings of the batch (LightGCN's L2 penalty acts on these).

        Looked up with a sparse gradient, so the penalty adds only the batch's rows to the dense
        gradient of the propagation instead of a second full-table gradient.
        """
        w = self.embedding.weight
        return F.embedding(users, w, sparse=True), F.embedding(items + self.graph.n_users, w, sparse=True)

    @torch.no_grad()
    def embed_all(
        self, generator: torch.Generator | None = None, batch_size: int = 4096
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All users' and items' representations (deterministic; no sampling)."""
        return self.propagate()
