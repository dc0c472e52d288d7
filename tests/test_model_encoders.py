"""Encoders against dense references: GraphSAGE's towers as the authors' code computes them,
LightGCN's fast rows-only propagation (values and gradients) against plain autograd."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch.nn import functional as F

from hashgnn.graph import BipartiteGraph
from hashgnn.model import BipartiteSAGE, InputEncoder, LightGCN, MeanAggregator


def test_mean_aggregator_by_hand() -> None:
    torch.manual_seed(0)
    agg = MeanAggregator(3, 2, 4)
    h_self = torch.randn(2, 3)
    h_neigh = torch.randn(2, 5, 2)
    valid = torch.tensor([True, False])
    out = agg(h_self, h_neigh, valid)
    ref0 = F.leaky_relu(torch.cat([h_self[0], h_neigh[0].mean(0)]) @ agg.weight, 0.2)
    ref1 = F.leaky_relu(torch.cat([h_self[1], torch.zeros(2)]) @ agg.weight, 0.2)
    assert torch.allclose(out[0], ref0, atol=1e-6) and torch.allclose(out[1], ref1, atol=1e-6)
    bound = (6 / (5 + 4)) ** 0.5
    assert agg.weight.shape == (5, 4) and float(agg.weight.detach().abs().max()) <= bound


def test_sage_towers_follow_the_authors_aggregation() -> None:
    # Complete bipartite graph (3 users x 4 items) plus a user and an item without edges: with
    # fan-outs equal to the degrees the sampler returns every neighbour, so the towers are
    # deterministic and can be compared with the code's computation written out densely.
    dense = np.zeros((4, 5), np.float32)
    dense[:3, :4] = 1
    g = BipartiteGraph.from_csr(sp.csr_matrix(dense))
    torch.manual_seed(0)
    d0, hid = 6, 5
    enc_u, enc_i = InputEncoder(4, 7, d0), InputEncoder(5, 7, d0)
    sage = BipartiteSAGE(g, enc_u, enc_i, user_fanouts=[4, 3], item_fanouts=[3], hidden_dim=hid)
    gen = torch.Generator().manual_seed(0)
    users, items = torch.tensor([0, 2, 3]), torch.tensor([1, 4])
    hu, hi = sage(users, items, gen)

    with torch.no_grad():
        xu, xi = enc_u(torch.arange(4)), enc_i(torch.arange(5))
        u0, u1 = sage.user_aggs
        (i0,) = sage.item_aggs

        def agg(a: MeanAggregator, self_h: torch.Tensor, neigh: torch.Tensor | None) -> torch.Tensor:
            m = neigh.mean(0) if neigh is not None else torch.zeros(self_h.shape[-1])
            return F.leaky_relu(torch.cat([self_h, m]) @ a.weight, 0.2)

        items_of = {0: [0, 1, 2, 3], 1: [0, 1, 2, 3], 2: [0, 1, 2, 3], 3: []}
        users_of = {0: [0, 1, 2], 1: [0, 1, 2], 2: [0, 1, 2], 3: [0, 1, 2], 4: []}

        def user_ref(u: int) -> torch.Tensor:
            # depth 0 (u_agg_0) updates the user from its items and each hop-1 item from its users,
            # with the same weights; depth 1 (u_agg_1) updates the user from the updated items.
            its = items_of[u]
            h_user = agg(u0, xu[u], xi[its] if its else None)
            h_items = [agg(u0, xi[i], xu[users_of[i]]) for i in its]
            return agg(u1, h_user, torch.stack(h_items) if its else None)

        def item_ref(i: int) -> torch.Tensor:
            us = users_of[i]
            return agg(i0, xi[i], xu[us] if us else None)

        ref_u = torch.stack([user_ref(int(u)) for u in users])
        ref_i = torch.stack([item_ref(int(i)) for i in items])
    assert torch.allclose(hu, ref_u, atol=1e-5)
    assert torch.allclose(hi, ref_i, atol=1e-5)
    # embed_all covers every node with the same values
    au, ai = sage.embed_all(gen, batch_size=2)
    assert torch.allclose(au[users], ref_u, atol=1e-5) and torch.allclose(ai[items], ref_i, atol=1e-5)


def _small_graph(seed: int = 0) -> BipartiteGraph:
    rng = np.random.default_rng(seed)
    dense = (rng.random((8, 11)) < 0.3).astype(np.float32)
    dense[3] = 0  # isolated user
    return BipartiteGraph.from_csr(sp.csr_matrix(dense))


def test_lightgcn_rows_match_dense_propagation_and_its_gradient() -> None:
    g = _small_graph()
    torch.manual_seed(1)
    model = LightGCN(g, dim=4, layers=3)
    a = g.norm_adj().to_dense()
    users = torch.tensor([0, 3, 0, 7])  # repeats and an isolated user
    items = torch.tensor([10, 2, 5])
    hu, hi = model(users, items)
    w = torch.randn(hu.shape), torch.randn(hi.shape)
    ((hu * w[0]).sum() + (hi * w[1]).sum()).backward()
    fast_grad = model.embedding.weight.grad.clone()

    x0 = model.embedding.weight.detach().clone().requires_grad_(True)
    xs, x = [x0], x0
    for _ in range(3):
        x = a @ x
        xs.append(x)
    out = torch.stack(xs).mean(0)
    ref_u, ref_i = out[users], out[items + g.n_users]
    ((ref_u * w[0]).sum() + (ref_i * w[1]).sum()).backward()
    assert torch.allclose(hu, ref_u, atol=1e-6) and torch.allclose(hi, ref_i, atol=1e-6)
    assert torch.allclose(fast_grad, x0.grad, atol=1e-6)
    pu, pi = model.propagate()
    assert torch.allclose(pu, out[: g.n_users], atol=1e-6) and torch.allclose(pi, out[g.n_users :], atol=1e-6)


def test_lightgcn_with_zero_layers_is_the_embedding() -> None:
    g = _small_graph(1)
    model = LightGCN(g, dim=3, layers=0)
    hu, hi = model(torch.tensor([1, 2]), torch.tensor([0]))
    assert torch.equal(hu, model.embedding.weight[[1, 2]]) and torch.equal(hi, model.embedding.weight[[g.n_users]])
