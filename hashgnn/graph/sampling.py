"""Vectorised samplers over CSR arrays: uniform neighbours and uniform negatives.

Randomness: every draw comes from the ``generator`` passed in and is made on the generator's device,
then moved to the data's device. A CPU generator therefore gives the same samples whatever device
the graph is on (and is the one state to checkpoint); a generator on the graph's device avoids the
transfer. Nothing here touches the global RNG.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hashgnn.errors import HashgnnError

if TYPE_CHECKING:
    from hashgnn.graph.bipartite import BipartiteGraph


def uniform(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """U[0, 1) draws of ``shape`` from ``generator`` (on its device), moved to ``device``."""
    r = torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)
    return r.to(device, non_blocking=True)


def sample_neighbors(
    indptr: torch.Tensor,
    indices: torch.Tensor,
    nodes: torch.Tensor,
    fanout: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Sample ``fanout`` neighbours of each node uniformly, as the authors' sampler does.

    Args:
        indptr, indices: CSR adjacency (int64 pointers; int32 or int64 indices) of the node type of ``nodes`` towards the other type.
        nodes: (N,) int64 node ids; ``-1`` marks a padding node (no node).
        fanout: neighbours per node.
        generator: the source of randomness (see the module docstring).

    Returns:
        (N, fanout) int64 neighbour ids. A node with at least ``fanout`` neighbours gets ``fanout``
        distinct ones, a uniformly random subset (without replacement; with exactly ``fanout``
        neighbours that is all of them, as the authors' ``sample`` returns them unchanged); a node
        with fewer gets ``fanout`` independent uniform draws (with replacement). A node with no
        neighbours, and a padding node ``-1``, gets a row of ``-1``: rows are either all valid or all
        ``-1``, so a consumer can mask per row.

    Without replacement uses Floyd's algorithm, vectorised over nodes: step ``k`` draws
    ``t ~ U{0..deg-fanout+k}`` per node and takes ``deg-fanout+k`` instead when ``t`` was already
    taken, which yields every ``fanout``-subset with equal probability. It costs ``fanout`` small
    tensor steps per call, independent of the degrees.
    """
    device = indices.device
    nodes = nodes.to(device)
    n = nodes.numel()
    if fanout <= 0:
        return torch.empty((n, 0), dtype=torch.long, device=device)
    valid = nodes >= 0
    safe = torch.where(valid, nodes, torch.zeros_like(nodes))
    start = indptr[safe]
    deg = torch.where(valid, indptr[safe + 1] - start, torch.zeros_like(start))
    # float64 so that floor(r * m) < m holds for any realistic degree m.
    r = uniform((n, fanout), generator, device, dtype=torch.float64)

    # With replacement (0 < deg < fanout): independent uniform offsets.
    off = (r * deg.unsqueeze(1)).long()

    # Without replacement (deg >= fanout): Floyd's algorithm, one column per step.
    big = deg >= fanout
    if bool(big.any()):
        rows = big.nonzero().squeeze(1)
        d = deg[rows]
        rr = r[rows]
        chosen = torch.empty((rows.numel(), fanout), dtype=torch.long, device=device)
        for k in range(fanout):
            j = d - fanout + k  # the largest offset allowed at this step
            t = (rr[:, k] * (j + 1)).long()
            if k > 0:
                taken = (chosen[:, :k] == t.unsqueeze(1)).any(dim=1)
                t = torch.where(taken, j, t)
            chosen[:, k] = t
        off[rows] = chosen

    if indices.numel() == 0:
        return torch.full((n, fanout), -1, dtype=torch.long, device=device)
    off = torch.minimum(off, (deg - 1).clamp(min=0).unsqueeze(1))  # guards float rounding only
    # Rows of degree 0 may point one past the end; they are replaced by -1 below.
    out = indices[(start.unsqueeze(1) + off).clamp(max=indices.numel() - 1)].long()
    return torch.where((deg > 0).unsqueeze(1), out, torch.full_like(out, -1))


def sample_negatives(
    graph: BipartiteGraph | torch.Tensor,
    users: torch.Tensor,
    n_neg: int,
    generator: torch.Generator,
    max_rounds: int = 1000,
) -> torch.Tensor:
    """Draw ``n_neg`` items per user, uniformly among the items the user has not interacted with.

    Args:
        graph: a :class:`~hashgnn.graph.bipartite.BipartiteGraph` (its sorted edge keys are cached),
            or a torch sparse CSR (n_users x n_items) tensor of the training interactions.
        users: (B,) int64 user ids.
        n_neg: negatives per user (drawn independently, so with replacement, as LightGCN and the
            authors' code with ``replace=True``).
        generator: the source of randomness (see the module docstring).
        max_rounds: safety bound on rejection rounds.

    Returns:
        (B, n_neg) int64 item ids, each uniform over ``{0..n_items-1}`` minus the user's training
        items. Rejection sampling: draw uniform items, test membership with ``searchsorted`` over the
        sorted keys ``user * n_items + item`` of all training edges, redraw only the rejected
        entries, round after round (a loop over rounds, never over users).

    Raises:
        HashgnnError: a user has interacted with every item (no negative exists).
    """
    keys, n_items, indptr = _negative_index(graph)
    device = keys.device
    users = users.to(device)
    b = users.numel()
    deg = indptr[users + 1] - indptr[users]
    if b and bool((deg >= n_items).any()):
        bad = int(users[deg >= n_items][0])
        raise HashgnnError(
            f"user {bad} has interacted with all {n_items} items, so no negative item exists; "
            "remove such users from the training data"
        )
    out = (uniform((b, n_neg), generator, device, torch.float64) * n_items).long().clamp_(max=n_items - 1)
    pending = torch.arange(b * n_neg, device=device)
    flat = out.view(-1)
    base = users.repeat_interleave(n_neg) * n_items
    for _ in range(max_rounds):
        cand = flat[pending]
        k = base[pending] + cand
        pos = torch.searchsorted(keys, k).clamp_(max=max(keys.numel() - 1, 0))
        hit = keys[pos] == k if keys.numel() else torch.zeros_like(k, dtype=torch.bool)
        pending = pending[hit]
        if pending.numel() == 0:
            return out
        redraw = uniform((pending.numel(),), generator, device, torch.float64)
        flat[pending] = (redraw * n_items).long().clamp_(max=n_items - 1)
    raise HashgnnError(
        f"negative sampling did not finish in {max_rounds} rounds; some users interact with nearly every item"
    )


def _negative_index(graph: BipartiteGraph | torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor]:
    """(sorted edge keys, n_items, user indptr) from a BipartiteGraph or a sparse CSR tensor."""
    from hashgnn.graph.bipartite import BipartiteGraph

    if isinstance(graph, BipartiteGraph):
        return graph.edge_keys(), graph.n_items, graph.user_indptr
    if isinstance(graph, torch.Tensor) and graph.layout == torch.sparse_csr:
        indptr = graph.crow_indices().long()
        indices = graph.col_indices().long()
        n_users, n_items = graph.shape
        rows = torch.repeat_interleave(torch.arange(n_users, device=indptr.device), indptr[1:] - indptr[:-1])
        keys, _ = torch.sort(rows * n_items + indices)
        return keys, int(n_items), indptr
    raise HashgnnError(f"sample_negatives needs a BipartiteGraph or a sparse CSR tensor, got {type(graph).__name__}")
