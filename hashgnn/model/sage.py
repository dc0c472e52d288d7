"""The paper's bipartite GraphSAGE: uniform neighbour sampling, mean aggregation.

Mirrors the authors' TensorFlow code (qiaoyu-tan/HashGNN, ``model.py`` and ``aggregators.py``):

* Sampling alternates node types hop by hop (``interleaving_seq``): a user's tower samples
  ``user_fanouts[0]`` items, then ``user_fanouts[1]`` users of each of those items, ...; an item's
  tower samples ``item_fanouts[0]`` users, ... (defaults 10,5 and 10).
* Every sampled node, whatever its hop, is first encoded by its own type's input encoder (the user
  and the item :class:`~hashgnn.model.inputs.InputEncoder` are shared by both towers).
* The user tower and the item tower have their own aggregators, one per depth (``u_agg_0, u_agg_1``
  and ``i_agg_0``). Aggregator ``l`` is applied to every hop that still has a hop below it, so in the
  user tower ``u_agg_0`` updates both the users (from their items) and the hop-1 items (from their
  hop-2 users): the weights of a depth are shared across node types, as in the code's ``aggregate``.
* ``MeanAggregator``: ``h' = leaky_relu([h_self || mean(h_neigh)] W)``, no bias, Glorot init.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hashgnn.graph.bipartite import BipartiteGraph
from hashgnn.graph.sampling import sample_neighbors
from hashgnn.model.inputs import LEAKY_SLOPE, InputEncoder, glorot_


class MeanAggregator(nn.Module):
    """GraphSAGE mean aggregator of the authors' code: ``leaky_relu([h_self || mean(h_neigh)] W)``.

    Args:
        self_dim: width of the node's own vector.
        neigh_dim: width of the neighbours' vectors.
        out_dim: output width.
    """

    def __init__(self, self_dim: int, neigh_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(glorot_(torch.empty(self_dim + neigh_dim, out_dim)))

    def forward(self, h_self: torch.Tensor, h_neigh: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Aggregate ``h_neigh`` (N, F, d) into ``h_self`` (N, d_self) -> (N, out_dim).

        ``valid`` (N,) bool marks the nodes that have neighbours; for the others the neighbour mean is
        taken as zero (the sampler gives such nodes a row of padding).
        """
        mean = h_neigh.mean(dim=1)
        if valid is not None:
            mean = mean * valid.unsqueeze(1).to(mean.dtype)
        return F.leaky_relu(torch.cat([h_self, mean], dim=1) @ self.weight, LEAKY_SLOPE)


class BipartiteSAGE(nn.Module):
    """Encodes users and items with their sampled multi-hop neighbourhoods.

    Args:
        graph: the training graph (its CSR arrays are used for sampling).
        user_input, item_input: input encoders of the two node types (same output width).
        user_fanouts: neighbours sampled per hop in a user's tower (items, users, items, ...).
        item_fanouts: likewise for an item's tower (users, items, ...).
        hidden_dim: width of every aggregator's output.
    """

    def __init__(
        self,
        graph: BipartiteGraph,
        user_input: InputEncoder,
        item_input: InputEncoder,
        user_fanouts: list[int],
        item_fanouts: list[int],
        hidden_dim: int,
    ) -> None:
        super().__init__()
        if user_input.out_dim != item_input.out_dim:
            raise ValueError("user and item input encoders must have the same width")
        self.graph = graph
        self.user_input, self.item_input = user_input, item_input
        self.user_fanouts, self.item_fanouts = list(user_fanouts), list(item_fanouts)
        d0 = user_input.out_dim
        self.user_aggs = nn.ModuleList(
            MeanAggregator(d0 if depth == 0 else hidden_dim, d0 if depth == 0 else hidden_dim, hidden_dim)
            for depth in range(len(user_fanouts))
        )
        self.item_aggs = nn.ModuleList(
            MeanAggregator(d0 if depth == 0 else hidden_dim, d0 if depth == 0 else hidden_dim, hidden_dim)
            for depth in range(len(item_fanouts))
        )
        user_out = hidden_dim if user_fanouts else d0
        item_out = hidden_dim if item_fanouts else d0
        if user_out != item_out:
            raise ValueError("with one tower of depth 0, hidden_dim must equal the input width")
        self.out_dim = user_out

    def _sample(
        self, nodes: torch.Tensor, first_is_user: bool, fanouts: list[int], generator: torch.Generator
    ) -> list[torch.Tensor]:
        """Node ids per hop: ``hops[0] = nodes``, ``hops[k]`` (flattened) the samples of hop k-1."""
        g = self.graph
        hops = [nodes]
        is_user = first_is_user
        for f in fanouts:
            indptr, indices = (g.user_indptr, g.user_indices) if is_user else (g.item_indptr, g.item_indices)
            hops.append(sample_neighbors(indptr, indices, hops[-1], f, generator).reshape(-1))
            is_user = not is_user
        return hops

    @staticmethod
    def _encode_unique(enc: InputEncoder, id_lists: list[torch.Tensor]) -> list[torch.Tensor]:
        """Encode several id tensors with one call over their distinct ids (the encoder is a pure
        function of the id, and sampled neighbourhoods repeat ids many times)."""
        if not id_lists:
            return []
        ids = torch.cat(id_lists).clamp(min=0)  # padding rows (-1) are masked by the aggregators
        uniq, inverse = torch.unique(ids, return_inverse=True)
        # index_select, not ``[inverse]``: its backward (index_add) is deterministic on CPU threads,
        # advanced indexing's (index_put with accumulate) is not.
        return list(torch.index_select(enc(uniq), 0, inverse).split([t.numel() for t in id_lists]))

    def _aggregate(
        self, h: list[torch.Tensor], hops: list[torch.Tensor], fanouts: list[int], aggs: nn.ModuleList
    ) -> torch.Tensor:
        """The authors' ``aggregate``: depth ``l`` updates every hop that has a hop below it."""
        # Row r of hop i has neighbours at all, or only padding (see sample_neighbors).
        valid = [None] + [hops[i + 1].view(-1, f)[:, 0] >= 0 for i, f in enumerate(fanouts)]
        for layer, agg in enumerate(aggs):
            h = [
                agg(h[i], h[i + 1].view(h[i].shape[0], fanouts[i], -1), valid[i + 1])
                for i in range(len(fanouts) - layer)
            ]
        return h[0]

    def _towers(
        self, users: torch.Tensor | None, items: torch.Tensor | None, generator: torch.Generator
    ) -> list[torch.Tensor]:
        """Sample both towers, encode all their nodes at once per type, aggregate each tower."""
        towers = []
        if users is not None:
            towers.append(
                (self._sample(users, True, self.user_fanouts, generator), True, self.user_fanouts, self.user_aggs)
            )
        if items is not None:
            towers.append(
                (self._sample(items, False, self.item_fanouts, generator), False, self.item_fanouts, self.item_aggs)
            )
        # (tower, hop) slots per node type; hop k of a tower starting with a user is a user iff k even.
        slots: dict[bool, list[tuple[int, int]]] = {True: [], False: []}
        for t, (hops, first_user, _, _) in enumerate(towers):
            for k in range(len(hops)):
                slots[(k % 2 == 0) == first_user].append((t, k))
        h: list[list[torch.Tensor]] = [[None] * len(tw[0]) for tw in towers]  # type: ignore[list-item]
        for is_user, enc in ((True, self.user_input), (False, self.item_input)):
            encoded = self._encode_unique(enc, [towers[t][0][k] for t, k in slots[is_user]])
            for (t, k), e in zip(slots[is_user], encoded, strict=True):
                h[t][k] = e
        return [self._aggregate(h[t], hops, f, aggs) for t, (hops, _, f, aggs) in enumerate(towers)]

    def encode_users(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B,) user ids -> (B, out_dim), sampling their neighbourhoods with ``generator``."""
        return self._towers(users, None, generator)[0]

    def encode_items(self, items: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B,) item ids -> (B, out_dim), sampling their neighbourhoods with ``generator``."""
        return self._towers(None, items, generator)[0]

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Representations of a batch: (len(users), d) and (len(items), d)."""
        hu, hi = self._towers(users, items, generator)
        return hu, hi

    def ego(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ID embeddings of the batch's root nodes (for an L2 penalty)."""
        return self.user_input.ego(users), self.item_input.ego(items)

    @torch.no_grad()
    def embed_all(self, generator: torch.Generator, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """All users' and items' representations, in batches; neighbourhoods are sampled, as in the
        authors' ``save_embedding`` (so two calls with different generator states differ)."""
        dev = self.graph.device
        u = [self.encode_users(b, generator) for b in torch.arange(self.graph.n_users, device=dev).split(batch_size)]
        i = [self.encode_items(b, generator) for b in torch.arange(self.graph.n_items, device=dev).split(batch_size)]
        return _cat(u, self.out_dim, dev), _cat(i, self.out_dim, dev)


def _cat(parts: list[torch.Tensor], dim: int, device: torch.device) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros((0, dim), device=device)
