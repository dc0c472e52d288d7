"""One training epoch: shuffle the positive edges, batch them, draw negatives, step Adam.

Randomness: the edge permutation, the negatives and everything the model draws (neighbour samples,
guidance masks, Gumbel noise) come from the one ``generator`` passed in, never from the global RNG,
so the same seed gives the same losses and a run resumed from a checkpoint that saved the
generator's state continues identically. Draws are made on the generator's device (a CPU generator
therefore gives the same samples on CPU and GPU; a CUDA generator avoids host-device copies).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import scipy.sparse as sp
import torch

from hashgnn.config import TrainConfig
from hashgnn.errors import HashgnnError
from hashgnn.graph.bipartite import BipartiteGraph
from hashgnn.graph.sampling import sample_negatives
from hashgnn.progress import progress_bar
from hashgnn.train.distributed import DistContext, all_mean, local_batch, shard_permutation

if TYPE_CHECKING:
    from hashgnn.model.network import HashModel


def build_optimizer(model: torch.nn.Module, train_cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam over all parameters with ``train_cfg.lr`` (no weight decay: the L2 term is in the loss).

    Uses the fused kernel where PyTorch has one for the device (CPU and CUDA in torch 2.x), which
    updates the large embedding tables several times faster than the per-tensor loop.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=train_cfg.lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=train_cfg.lr)


def _graph_for(model: torch.nn.Module, train: Any) -> BipartiteGraph:
    """The model's cached graph when it matches ``train``, else one built from ``train``."""
    g = getattr(model, "graph", None)
    if isinstance(train, BipartiteGraph):
        return train
    if isinstance(g, BipartiteGraph) and (
        train is None
        or (sp.issparse(train) and tuple(train.shape) == (g.n_users, g.n_items) and train.nnz == g.n_edges)
    ):
        return g
    device = g.device if isinstance(g, BipartiteGraph) else next(model.parameters()).device
    return BipartiteGraph.from_csr(train, device)


def train_epoch(
    model: HashModel,
    optimizer: torch.optim.Optimizer,
    train: sp.spmatrix | BipartiteGraph | None,
    train_cfg: TrainConfig,
    epoch: int,
    generator: torch.Generator,
    beta: float | None = None,
    progress: bool = True,
    max_batches: int | None = None,
    dist: DistContext | None = None,
    loss_fn: Callable[..., tuple[torch.Tensor, dict[str, float]]] | None = None,
) -> dict[str, float]:
    """Train ``model`` for one epoch over the positive edges of ``train``.

    Args:
        model: a :class:`~hashgnn.model.network.HashModel` (anything with ``loss`` and ``graph``).
        optimizer: e.g. :func:`build_optimizer`.
        train: the training interactions (scipy CSR; the model's cached graph is used when it has
            the same shape and edge count), a BipartiteGraph, or None for the model's graph.
        train_cfg: batch_size (positive edges per batch), negatives per positive, loss settings.
        epoch: 0-based epoch (for messages).
        generator: the one source of randomness (see the module docstring).
        beta: the value ``model.on_epoch_start(epoch)`` returned; None reads the model's schedule.
        progress: show progress on stderr with loss, beta and edges per second (a bar on a terminal,
            timed lines in a log: :func:`hashgnn.progress.progress_bar`).
        max_batches: stop after this many batches (benchmarks time a fraction of an epoch).
        dist: the data-parallel context (:mod:`hashgnn.train.distributed`); with several ranks each
            takes its shard of the epoch's edges (shuffled by ``train_cfg.seed`` and ``epoch``, the
            same on every rank) in steps of ``batch_size / world`` edges.
        loss_fn: what computes a step's loss, called like ``model.loss`` (the DistributedDataParallel
            wrapper of a data-parallel run); default ``model.loss``.

    Returns:
        Means over the epoch's edges of ``loss`` and its parts (over all ranks' edges in a
        data-parallel run), plus ``beta``, ``seconds``, ``edges_per_s`` (this rank's) and ``batches``.

    Raises:
        HashgnnError: the loss became NaN or infinite; raised before the optimiser step, so the
            parameters still hold the last good values.
    """
    graph = _graph_for(model, train)
    if beta is None:
        beta = float(model.schedule_state()["beta"]) if hasattr(model, "schedule_state") else 0.0
    model.train()
    dev = graph.device
    n_edges = graph.n_edges
    bs = int(train_cfg.batch_size)
    if bs < 1 or train_cfg.negatives < 1:
        raise HashgnnError(f"batch_size and negatives must be at least 1, got {bs} and {train_cfg.negatives}")
    step_loss = loss_fn if loss_fn is not None else model.loss
    if dist is not None and dist.active:
        bs = local_batch(bs, dist.world)
        perm = shard_permutation(n_edges, epoch, train_cfg.seed, dist.rank, dist.world).to(dev)
    else:
        perm = torch.randperm(n_edges, generator=generator, device=generator.device).to(dev)
    n_batches = math.ceil(perm.numel() / bs)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)

    sums: dict[str, float] = {}
    seen = 0
    start = time.perf_counter()
    bar = progress_bar(n_batches, f"epoch {epoch}", "batch", enabled=progress)
    try:
        for b in range(n_batches):
            idx = perm[b * bs : (b + 1) * bs]
            # The graph holds int32 indices (half the memory of a big graph); a batch works in int64.
            users = graph.edge_users[idx].long()
            pos = graph.user_indices[idx].long()
            neg = sample_negatives(graph, users, train_cfg.negatives, generator)
            loss, parts = step_loss(users, pos, neg, beta, train_cfg, generator)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise HashgnnError(
                    f"loss became {'nan' if math.isnan(value) else 'inf'} at epoch {epoch} batch {b}; "
                    "training stopped before the optimiser step, so the last checkpoint holds the last good "
                    "weights. Try a lower learning rate (--lr), fewer bits, or the default beta schedule."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            k = idx.numel()
            seen += k
            for name, v in parts.items():
                sums[name] = sums.get(name, 0.0) + float(v) * k
            if progress:
                el = time.perf_counter() - start
                bar.set_postfix(
                    loss=f"{value:.4f}", beta=f"{beta:.2f}", edges_s=f"{seen / max(el, 1e-9):,.0f}", refresh=False
                )
                bar.update(1)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    out = {name: s / max(seen, 1) for name, s in sums.items()}
    if dist is not None and dist.active:
        out = all_mean(out, float(seen), dist, dev)
    out.update(beta=float(beta), seconds=seconds, edges_per_s=seen / max(seconds, 1e-9), batches=float(n_batches))
    return out
