"""HashGNN (Tan et al., WWW 2020), top to bottom: encoder -> hash layer -> guidance -> losses.

For a batch of users ``u`` with a positive item ``p`` and negatives ``n_1..n_J`` each::

    h   = encoder(node)                          GraphSAGE (hashgnn.model.sage) or LightGCN
    z   = tanh(W h + b)                          hash layer, one per node type (hashgnn.model.hash_layer)
    b   = sign(z)                                binary code, straight-through gradient
    v   = b where m else z,   m ~ Bernoulli(beta) per (user, positive) pair and per negative
                                                 (guidance, hashgnn.model.guidance)
    L   = recon_weight * reconstruction(<v_u, v_p>, <v_u, v_n>) + ranking(...)
          [+ continuous_weight * the same on z]  [+ weight_decay * L2 of the ego embeddings]

served: ``z`` of every node (codes are ``sign(z)``). beta follows the schedule of the method's
registry entry (:mod:`hashgnn.methods`); the variants in this class differ only there and in the
losses they keep:

- ``hashgnn``     beta by ``beta_schedule`` (staircase, linear, constant);
- ``hash_ste``    beta = 1 throughout (plain STE);
- ``hashgnn_nr``  as hashgnn without the ranking loss;
- ``hashgnn_sp``  ``pretrain_epochs`` on the encoder output h, then the encoder frozen and the hash
                  layers trained as hashgnn with the schedule restarted;
- ``continuous``  beta = 0 throughout: the continuous counterpart.

``TrainConfig.continuous_weight > 0`` adds the objective computed on ``z`` to the hashing variants'
loss in every epoch of the hash stage, so ``z`` stays a ranker in its own right after beta reaches 1
(an option of ours; the authors' code has no such term).
"""

from __future__ import annotations

import torch

from hashgnn.config import ModelConfig, TrainConfig
from hashgnn.graph.bipartite import BipartiteGraph
from hashgnn.model.base import HashModel, objective
from hashgnn.model.guidance import code_mask, mix
from hashgnn.model.hash_layer import HashLayer, ste_sign


class HashGNN(HashModel):
    """The encoder with a hash layer per node type, trained with guided STE (and its variants)."""

    def __init__(
        self, cfg: ModelConfig, graph: BipartiteGraph, encoder: torch.nn.Module, train_cfg: TrainConfig | None = None
    ) -> None:
        super().__init__(cfg, graph, encoder, train_cfg)
        self.user_hash = HashLayer(self.encoder.out_dim, cfg.bits)
        self.item_hash = HashLayer(self.encoder.out_dim, cfg.bits)

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
        # 1. encoder (frozen in hashgnn_sp's second stage)
        hu, hi = self._encode(users, items, generator)
        hp, hn = hi[:b], hi[b:]
        if self.sched.stage == "continuous":
            # hashgnn_sp's first stage trains the encoder output itself
            total, parts = objective(hu, hp, hn, use_recon, use_rank, tc)
            return self._finish(total, parts, users, items, tc)
        # 2.-3. hash layer and guidance
        vu, vp, vn = self.guided(hu, hp, hn, beta, generator)
        # 4. losses on the guided vectors ...
        total, parts = objective(vu, vp, vn, use_recon, use_rank, tc)
        # ... and, optionally, on z itself, which keeps z a good re-ranker once beta reaches 1
        if tc.continuous_weight > 0 and self.spec.continuous_term:
            zu, zi = self.user_hash(hu), self.item_hash(hi)
            cont, _ = objective(zu, zi[:b], zi[b:], use_recon, use_rank, tc)
            total = total + tc.continuous_weight * cont
            parts["continuous"] = float(cont.detach())
        return self._finish(total, parts, users, items, tc)

    def guided(
        self, hu: torch.Tensor, hp: torch.Tensor, hn: torch.Tensor, beta: float, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The vectors entering the losses for encoder outputs of users, positives and negatives."""
        # 2. hash layer: z = tanh(W h + b)
        zu, zp, zn = self.user_hash(hu), self.item_hash(hp), self.item_hash(hn)
        if beta <= 0.0:
            return zu, zp, zn
        # 3. guidance: sign(z) with probability beta, one draw per (user, positive) pair shared by
        #    both, separate draws per negative (the authors' code)
        if generator is None:  # every draw of training goes through one generator (resumable runs)
            raise ValueError("guidance with 0 < beta < 1 draws from the training generator; pass one")
        clip, g = self.cfg.ste_clip, self.cfg.guidance
        m_up = code_mask((zu.shape[0],), self.bits, beta, g, generator, zu.device)
        m_n = code_mask((zn.shape[0],), self.bits, beta, g, generator, zu.device)
        return (mix(zu, ste_sign(zu, clip), m_up), mix(zp, ste_sign(zp, clip), m_up), mix(zn, ste_sign(zn, clip), m_n))

    def serve(self, h: torch.Tensor, side: str) -> torch.Tensor:
        return (self.user_hash if side == "user" else self.item_hash)(h)
