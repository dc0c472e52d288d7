"""The baselines beside HashGNN, one class each, sharing its encoder, trainer and objective.

- :class:`Plain` (``plain``, ``mf``): the encoder output ``h`` itself (lightgcn: LightGCN; mf: BPR
  matrix factorisation), ranking loss (+ L2), served ``h``.
- :class:`LSH` (``lsh``): trained as ``plain`` (the continuous stage of hashgnn_sp); served
  ``h R`` with ``R`` a fixed N(0, 1) (d x K) matrix of random hyperplanes, so codes are
  ``sign(h R)``.
- :class:`HashNet` (``hashnet``, Cao et al. 2017): ``tanh(scale * a)``, ``a = W h + b``, with the
  continuation ``scale = (1 + gamma epoch) ** power``.
- :class:`HashGumbel` (``hash_gumbel``): each bit a two-way Gumbel-softmax
  ``tanh((a + L) / (2 tau))`` with L logistic noise, tau annealed; the last ``gumbel_hard_epochs``
  use hard bits ``sign(a + L)`` with the soft gradient (straight-through). Served ``tanh(a)``.

Schedules (scale, tau, hard) are the registry's (:mod:`hashgnn.methods`).
"""

from __future__ import annotations

import torch

from hashgnn.config import ModelConfig, TrainConfig
from hashgnn.graph.bipartite import BipartiteGraph
from hashgnn.graph.sampling import uniform
from hashgnn.model.base import HashModel, objective
from hashgnn.model.hash_layer import HashLayer


class Plain(HashModel):
    """The encoder output, trained and served as is."""

    def loss(
        self,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        beta: float,
        train_cfg: TrainConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        tc = train_cfg or self.train_cfg
        users, items, neg, use_recon, use_rank = self._batch(users, pos, neg, tc, generator)
        b = users.numel()
        hu, hi = self._encode(users, items, generator)
        vu, vp, vn = self.vectors(hu, hi[:b], hi[b:], generator)
        total, parts = objective(vu, vp, vn, use_recon, use_rank, tc)
        return self._finish(total, parts, users, items, tc)

    def vectors(
        self, hu: torch.Tensor, hp: torch.Tensor, hn: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Vectors entering the losses for users, positives and negatives."""
        return hu, hp, hn

    def serve(self, h: torch.Tensor, side: str) -> torch.Tensor:
        return h


class LSH(Plain):
    """Random-hyperplane codes of the trained encoder output."""

    def __init__(
        self, cfg: ModelConfig, graph: BipartiteGraph, encoder: torch.nn.Module, train_cfg: TrainConfig | None = None
    ) -> None:
        super().__init__(cfg, graph, encoder, train_cfg)
        # Saved with the weights, so the served codes can be rebuilt from the checkpoint.
        self.register_buffer("hyperplanes", torch.randn(self.encoder.out_dim, cfg.bits))

    def serve(self, h: torch.Tensor, side: str) -> torch.Tensor:
        return h @ self.get_buffer("hyperplanes")


class _Hashed(Plain):
    """A hash layer per node type on top of the encoder."""

    def __init__(
        self, cfg: ModelConfig, graph: BipartiteGraph, encoder: torch.nn.Module, train_cfg: TrainConfig | None = None
    ) -> None:
        super().__init__(cfg, graph, encoder, train_cfg)
        self.user_hash = HashLayer(self.encoder.out_dim, cfg.bits)
        self.item_hash = HashLayer(self.encoder.out_dim, cfg.bits)

    def _layer(self, side: str) -> HashLayer:
        return self.user_hash if side == "user" else self.item_hash


class HashNet(_Hashed):
    """``tanh(scale * (W h + b))`` with the scale growing by epoch."""

    def vectors(self, hu, hp, hn, generator):  # type: ignore[no-untyped-def]
        s = self.sched.scale
        return self.user_hash(hu, s), self.item_hash(hp, s), self.item_hash(hn, s)

    def serve(self, h: torch.Tensor, side: str) -> torch.Tensor:
        return self._layer(side)(h, self.sched.scale)


class HashGumbel(_Hashed):
    """Two-way Gumbel-softmax bits, annealed, hard (straight-through) in the final epochs."""

    def vectors(self, hu, hp, hn, generator):  # type: ignore[no-untyped-def]
        return (
            self._gumbel(self.user_hash, hu, generator),
            self._gumbel(self.item_hash, hp, generator),
            self._gumbel(self.item_hash, hn, generator),
        )

    def _gumbel(self, layer: HashLayer, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        a = layer.logits(h)
        u = uniform(tuple(a.shape), generator, a.device).clamp_(1e-6, 1 - 1e-6)
        noisy = a + torch.log(u) - torch.log1p(-u)  # logistic noise = difference of two Gumbels
        soft = torch.tanh(noisy / (2.0 * self.sched.tau))
        if not self.sched.hard:
            return soft
        hard = torch.where(noisy >= 0, torch.ones_like(soft), -torch.ones_like(soft))
        return soft + (hard - soft).detach()

    def serve(self, h: torch.Tensor, side: str) -> torch.Tensor:
        return self._layer(side)(h)
