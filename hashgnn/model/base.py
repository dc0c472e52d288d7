"""What every method's network shares: the schedule, the objective and the served vectors' API.

A method's network (``hashgnn.model.hashgnn.HashGNN``, the baselines of ``hashgnn.model.baselines``)
subclasses :class:`HashModel` and writes its own :meth:`HashModel.loss` and
:meth:`HashModel.serve`; the training loop calls ``on_epoch_start(epoch)`` once per epoch, then
``loss(...)`` per batch, and ``embed(generator)`` gives the vectors a run serves.

The objective of a batch of users ``u`` with positives ``p`` and negatives ``n_j`` (vectors ``v``)::

    s+ = <v_u, v_p>,  s-_j = <v_u, v_nj>
    L  = recon_weight * reconstruction(s+, s-) + ranking(s+, s-)        (hashgnn.model.losses)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, cast

import torch
from torch import nn

from hashgnn.config import ModelConfig, TrainConfig
from hashgnn.errors import ConfigError
from hashgnn.graph.bipartite import BipartiteGraph
from hashgnn.methods import Method, Schedule, get_method
from hashgnn.model.losses import l2_penalty, ranking_loss, reconstruction_loss


def objective(
    vu: torch.Tensor, vp: torch.Tensor, vn: torch.Tensor, use_recon: bool, use_rank: bool, tc: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """``recon_weight * reconstruction + ranking`` of user vectors ``vu`` against ``vp``/``vn``."""
    b = vu.shape[0]
    s_pos = (vu * vp).sum(dim=1)
    s_neg = torch.bmm(vn.reshape(b, -1, vu.shape[1]), vu.unsqueeze(2)).squeeze(2)
    total = s_pos.new_zeros(())
    parts: dict[str, float] = {}
    if use_recon:
        rec = reconstruction_loss(s_pos, s_neg)
        total = total + tc.recon_weight * rec
        parts["recon"] = float(rec.detach())
    if use_rank:
        rnk = ranking_loss(s_pos, s_neg, tc.ranking_loss, tc.margin)
        total = total + rnk
        parts["rank"] = float(rnk.detach())
    return total, parts


class Encoder(Protocol):
    """What a model needs of its encoder (GraphSAGE, LightGCN, MF embeddings)."""

    out_dim: int

    def __call__(
        self, users: torch.Tensor, items: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def ego(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def embed_all(self, generator: torch.Generator, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


class HashModel(nn.Module):
    """Encoder + the method's layers, with the method's schedule (base class of every method).

    Args:
        cfg: the model configuration (method, encoder, bits, guidance, schedule).
        graph: the training graph.
        encoder: a module with ``forward(users, items, generator) -> (h_users, h_items)``,
            ``ego(users, items)``, ``embed_all(generator, batch_size)`` and ``out_dim``.
        train_cfg: defaults for ``on_epoch_start`` (pretrain_epochs, epochs) and ``loss``.

    The schedule state :attr:`sched` is a :class:`~hashgnn.methods.Schedule`, a function of the
    epoch alone set by :meth:`on_epoch_start`, so a resumed run that calls it again is identical.
    """

    def __init__(
        self, cfg: ModelConfig, graph: BipartiteGraph, encoder: nn.Module, train_cfg: TrainConfig | None = None
    ) -> None:
        super().__init__()
        self.cfg, self.method, self.bits = cfg, cfg.method, cfg.bits
        self.spec: Method = get_method(cfg.method)
        self.graph = graph
        self.train_cfg = train_cfg or TrainConfig()
        self.encoder: Encoder = cast(Encoder, encoder)
        self.sched: Schedule = self.spec.schedule(0, cfg, self.train_cfg)

    # ----------------------------------------------------------------------------- schedule
    @property
    def encoder_frozen(self) -> bool:
        """True in hashgnn_sp's second stage, where only the hash layers train."""
        return self.sched.encoder_frozen

    def on_epoch_start(self, epoch: int, train_cfg: TrainConfig | None = None) -> float:
        """Set the schedule for ``epoch`` (0-based) and return beta, the probability of using codes.

        ``train_cfg`` defaults to the one given to :func:`build_model` (``pretrain_epochs`` for
        hashgnn_sp, ``epochs`` for hash_gumbel's final hard epochs). hashgnn_sp freezes its encoder
        (``requires_grad=False``) from epoch ``pretrain_epochs`` on; build the optimiser over all
        parameters before the first call (frozen parameters get no gradient, so Adam skips them).
        """
        self.sched = self.spec.schedule(epoch, self.cfg, train_cfg or self.train_cfg)
        for p in self.encoder.parameters():
            p.requires_grad_(not self.sched.encoder_frozen)
        return float(self.sched.beta)

    def schedule_state(self) -> dict[str, float]:
        """The numbers the schedule set for this epoch (beta, and scale / tau where they apply)."""
        out = {"beta": float(self.sched.beta)}
        out.update({name: float(getattr(self.sched, name)) for name in self.spec.logged})
        return out

    # ----------------------------------------------------------------------------- shared steps
    def _batch(
        self,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        tc: TrainConfig,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool, bool]:
        """Move a batch to the graph's device; (users, items = pos + negatives, neg, use_recon, use_rank)."""
        if generator is None:
            raise ConfigError("HashModel.loss needs a torch.Generator (all randomness flows through it)")
        dev = self.graph.device
        users, pos = users.to(dev), pos.to(dev)
        neg = neg.to(dev).reshape(users.numel(), -1)
        items = torch.cat([pos, neg.reshape(-1)])
        return users, items, neg, *self._losses(tc)

    def _losses(self, tc: TrainConfig) -> tuple[bool, bool]:
        use_recon = tc.use_reconstruction and self.spec.reconstruction
        use_rank = tc.use_ranking and self.spec.ranking
        if not (use_recon or use_rank):
            raise ConfigError(
                f"method {self.method!r} with use_reconstruction={tc.use_reconstruction} and "
                f"use_ranking={tc.use_ranking} leaves no loss to train; enable one of them"
            )
        return use_recon, use_rank

    def _encode(
        self, users: torch.Tensor, items: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder_frozen:
            with torch.no_grad():
                return self.encoder(users, items, generator)
        return self.encoder(users, items, generator)

    def _finish(
        self, total: torch.Tensor, parts: dict[str, float], users: torch.Tensor, items: torch.Tensor, tc: TrainConfig
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Add the L2 term of the batch's ego embeddings (when weight_decay > 0) and the logged numbers."""
        if tc.weight_decay > 0 and not self.encoder_frozen:
            eu, ei = self.encoder.ego(users, items)
            reg = l2_penalty(eu, ei, batch_size=users.numel())
            total = total + tc.weight_decay * reg
            parts["reg"] = float(reg.detach())
        parts["loss"] = float(total.detach())
        parts.update(self.schedule_state())
        return total, parts

    # ----------------------------------------------------------------------------- API
    def loss(
        self,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        beta: float,
        train_cfg: TrainConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of a batch of positive edges ``(users[b], pos[b])`` with negatives ``neg[b, :]``.

        Args:
            users, pos: (B,) int64; neg: (B, n_neg) int64 items the users did not interact with.
            beta: the value :meth:`on_epoch_start` returned (probability of using the code).
            train_cfg: loss weights and flags (defaults to build_model's).
            generator: randomness for neighbour sampling, guidance draws and Gumbel noise.

        Returns:
            The scalar loss and its parts as floats (``loss``, ``recon``, ``rank``, ``reg`` where
            used, plus :meth:`schedule_state`).
        """
        raise NotImplementedError

    def serve(self, h: torch.Tensor, side: str) -> torch.Tensor:
        """The served vector of encoder outputs ``h`` of ``side`` (``user`` or ``item``)."""
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, generator: torch.Generator, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """Served continuous vectors ``(user_z, item_z)`` of all users and items (eval mode, no grad).

        Codes are ``sign`` of these (sign(0) = +1). With the sage encoder, neighbourhoods are
        sampled with ``generator`` as the authors' code does when it saves embeddings, so the result
        depends on the generator's state; lightgcn and mf are deterministic. ``plain``/``mf`` return
        the encoder output itself, whose width is the embedding width rather than ``bits``.
        """
        was_training = self.training
        self.eval()
        hu, hi = self.encoder.embed_all(generator, batch_size)
        out = self.serve(hu, "user"), self.serve(hi, "item")
        self.train(was_training)
        return out
