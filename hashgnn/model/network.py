"""The assembled network per method: encoder, hash layer, guidance, losses.

``build_model(cfg, train, device)`` returns a :class:`HashModel`; the training loop calls
``on_epoch_start(epoch)`` once per epoch, then ``loss(...)`` per batch, and ``embed(generator)``
gives the vectors a run serves (codes are ``sign`` of them, see :mod:`hashgnn.codes.packing`).

Methods (``ModelConfig.method``), all sharing the encoder (``sage`` or ``lightgcn``) and trainer:

==============  ==========================================================================  ==============
method          vectors in the losses                                                       served z
==============  ==========================================================================  ==============
hashgnn         guided mix of ``z = tanh(hash(h))`` and ``sign(z)`` (STE), beta by schedule  z
hash_ste        ``sign(z)`` with STE throughout (beta = 1)                                   z
hashgnn_nr      as hashgnn, without the ranking loss                                         z
hashgnn_sp      epochs < pretrain_epochs: encoder output h ("GraphSAGE" stage); then the     z
                encoder is frozen and the hash layer trained as hashgnn (schedule restarts)
continuous      ``z`` only (beta = 0): the continuous counterpart of hashgnn                 z
plain           encoder output h, no hash layer (lightgcn: LightGCN itself); ranking + L2    h
mf              BPR matrix factorisation embeddings; ranking + L2                            h
lsh             encoder output h (trained as hashgnn_sp's first stage); served ``h R`` with  h R
                R a fixed N(0, 1) (d x K) matrix of random hyperplanes
hashnet         ``tanh(scale * a)``, ``a = W h + b``, scale = (1 + gamma epoch) ** power      tanh(scale a)
hash_gumbel     each bit a two-way Gumbel-softmax ``tanh((a + L) / (2 tau))``, L logistic    tanh(a)
                noise, tau annealed geometrically; the last gumbel_hard_epochs use hard bits
                ``sign(a + L)`` with the soft gradient (straight-through)
==============  ==========================================================================  ==============

Losses: ``recon_weight * reconstruction + ranking`` (+ ``weight_decay * L2`` of the batch's ego
embeddings when TrainConfig.weight_decay > 0, as LightGCN's code), with TrainConfig's flags to drop
either part; ``hashgnn_nr`` never uses the ranking loss, ``plain`` and ``mf`` never use the
reconstruction loss (their own objective is BPR). ``TrainConfig.continuous_weight > 0`` adds the same
objective computed on ``z`` (weighted) to the hashing methods' loss in every epoch, so ``z`` stays a
ranker in its own right after beta reaches 1 (an option of ours; the authors' code has no such term).
"""

from __future__ import annotations

from typing import Any

import scipy.sparse as sp
import torch
from torch import nn

from hashgnn.config import ModelConfig, TrainConfig
from hashgnn.errors import ConfigError
from hashgnn.graph.bipartite import BipartiteGraph
from hashgnn.graph.sampling import uniform
from hashgnn.model.guidance import GRANULARITIES, SCHEDULES, beta_at, code_mask, mix
from hashgnn.model.hash_layer import HashLayer, ste_sign
from hashgnn.model.inputs import InputEncoder, NodeAttributes
from hashgnn.model.lightgcn import LightGCN
from hashgnn.model.losses import RANKING_LOSSES, l2_penalty, ranking_loss, reconstruction_loss
from hashgnn.model.mf import MatrixFactorization
from hashgnn.model.sage import BipartiteSAGE

HASH_LAYER_METHODS = ("hashgnn", "hash_ste", "hashgnn_nr", "hashgnn_sp", "continuous", "hashnet", "hash_gumbel")
METHODS = HASH_LAYER_METHODS + ("plain", "mf", "lsh")
ENCODERS = ("sage", "lightgcn")


class HashModel(nn.Module):
    """Encoder + (per method) hash layer, with the method's schedule and losses.

    Args:
        cfg: the model configuration (method, encoder, bits, guidance, schedule).
        graph: the training graph.
        encoder: a module with ``forward(users, items, generator) -> (h_users, h_items)``,
            ``ego(users, items)``, ``embed_all(generator, batch_size)`` and ``out_dim``.
        train_cfg: defaults for ``on_epoch_start`` (pretrain_epochs, epochs) and ``loss``.

    Schedule state (beta, stage, hashnet's scale, hash_gumbel's temperature) is a function of the
    epoch alone, set by :meth:`on_epoch_start`, so a resumed run that calls it again is identical.
    """

    # Declared for the type checker, which otherwise types module attributes as Tensor | Module. The
    # encoder is duck-typed: any module with the methods listed under Args.
    encoder: Any
    hyperplanes: torch.Tensor  # lsh only: a buffer

    def __init__(self, cfg: ModelConfig, graph: BipartiteGraph, encoder: nn.Module,
                 train_cfg: TrainConfig | None = None) -> None:
        super().__init__()
        self.cfg, self.method, self.bits = cfg, cfg.method, cfg.bits
        self.graph = graph
        self.train_cfg = train_cfg or TrainConfig()
        self.encoder = encoder
        d = int(self.encoder.out_dim)
        self.user_hash: HashLayer | None = None
        self.item_hash: HashLayer | None = None
        if self.method in HASH_LAYER_METHODS:
            self.user_hash = HashLayer(d, cfg.bits)
            self.item_hash = HashLayer(d, cfg.bits)
        if self.method == "lsh":
            # Saved with the weights, so the served codes can be rebuilt from the checkpoint.
            self.register_buffer("hyperplanes", torch.randn(d, cfg.bits))
        self._sched: dict[str, Any] = {}
        self._apply_state(self._state_for(0, self.train_cfg), freeze=False)

    # ----------------------------------------------------------------------------- schedule
    def _state_for(self, epoch: int, tc: TrainConfig) -> dict[str, Any]:
        c, m = self.cfg, self.method
        st: dict[str, Any] = {"epoch": epoch, "beta": 0.0, "stage": "hash", "scale": 1.0, "tau": 0.0,
                              "hard": False}

        def sched(e: int) -> float:
            return beta_at(e, c.beta_schedule, c.beta_step, c.beta_hold, c.beta_epochs, c.beta_value)

        if m in ("hashgnn", "hashgnn_nr"):
            st["beta"] = sched(epoch)
        elif m == "hash_ste":
            st["beta"] = 1.0
        elif m == "hashgnn_sp":
            if epoch < tc.pretrain_epochs:
                st["stage"] = "continuous"
            else:
                st["beta"] = sched(epoch - tc.pretrain_epochs)
        elif m in ("plain", "mf", "lsh"):
            st["stage"] = "continuous"
        elif m == "hashnet":
            st["scale"] = float((1.0 + c.hashnet_gamma * epoch) ** c.hashnet_power)
        elif m == "hash_gumbel":
            soft_epochs = max(tc.epochs - c.gumbel_hard_epochs, 1)
            if c.gumbel_hard_epochs > 0 and epoch >= tc.epochs - c.gumbel_hard_epochs:
                st.update(hard=True, tau=c.gumbel_tau_min, beta=1.0)
            else:
                frac = min(epoch / max(soft_epochs - 1, 1), 1.0)
                st["tau"] = float(c.gumbel_tau0 * (c.gumbel_tau_min / c.gumbel_tau0) ** frac)
        return st

    def _apply_state(self, st: dict[str, Any], freeze: bool = True) -> None:
        self._sched = st
        if freeze:
            frozen = self.method == "hashgnn_sp" and st["stage"] == "hash"
            for p in self.encoder.parameters():
                p.requires_grad_(not frozen)

    @property
    def encoder_frozen(self) -> bool:
        """True in hashgnn_sp's second stage, where only the hash layers train."""
        return self.method == "hashgnn_sp" and self._sched["stage"] == "hash"

    def on_epoch_start(self, epoch: int, train_cfg: TrainConfig | None = None) -> float:
        """Set the schedule for ``epoch`` (0-based) and return beta, the probability of using codes.

        ``train_cfg`` defaults to the one given to :func:`build_model` (``pretrain_epochs`` for
        hashgnn_sp, ``epochs`` for hash_gumbel's final hard epochs). hashgnn_sp freezes its encoder
        (``requires_grad=False``) from epoch ``pretrain_epochs`` on; build the optimiser over all
        parameters before the first call (frozen parameters get no gradient, so Adam skips them).
        """
        st = self._state_for(epoch, train_cfg or self.train_cfg)
        self._apply_state(st)
        return float(st["beta"])

    def schedule_state(self) -> dict[str, float]:
        """The numbers the schedule set for this epoch (beta, and scale / tau where they apply)."""
        out = {"beta": float(self._sched["beta"])}
        if self.method == "hashnet":
            out["scale"] = float(self._sched["scale"])
        if self.method == "hash_gumbel":
            out["tau"] = float(self._sched["tau"])
        return out

    # ----------------------------------------------------------------------------- vectors
    def _encode(
        self, users: torch.Tensor, items: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder_frozen:
            with torch.no_grad():
                return self.encoder(users, items, generator)
        return self.encoder(users, items, generator)

    def _train_vectors(self, hu: torch.Tensor, hp: torch.Tensor, hn: torch.Tensor, beta: float,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m, st = self.method, self._sched
        if m in ("plain", "mf", "lsh") or st["stage"] == "continuous":
            return hu, hp, hn
        assert self.user_hash is not None and self.item_hash is not None
        if m == "hashnet":
            s = st["scale"]
            return self.user_hash(hu, s), self.item_hash(hp, s), self.item_hash(hn, s)
        if m == "hash_gumbel":
            return tuple(self._gumbel(lay, h, generator)  # type: ignore[return-value]
                         for lay, h in ((self.user_hash, hu), (self.item_hash, hp), (self.item_hash, hn)))
        zu, zp, zn = self.user_hash(hu), self.item_hash(hp), self.item_hash(hn)
        if beta <= 0.0:
            return zu, zp, zn
        clip = self.cfg.ste_clip
        # One draw per (user, positive) pair shared by both, separate draws per negative (the code).
        m_up = code_mask((zu.shape[0],), self.bits, beta, self.cfg.guidance, generator, zu.device)
        m_n = code_mask((zn.shape[0],), self.bits, beta, self.cfg.guidance, generator, zu.device)
        return (mix(zu, ste_sign(zu, clip), m_up), mix(zp, ste_sign(zp, clip), m_up),
                mix(zn, ste_sign(zn, clip), m_n))

    def _gumbel(self, layer: HashLayer, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        a = layer.logits(h)
        u = uniform(tuple(a.shape), generator, a.device).clamp_(1e-6, 1 - 1e-6)
        noisy = a + torch.log(u) - torch.log1p(-u)  # logistic noise = difference of two Gumbels
        soft = torch.tanh(noisy / (2.0 * self._sched["tau"]))
        if not self._sched["hard"]:
            return soft
        hard = torch.where(noisy >= 0, torch.ones_like(soft), -torch.ones_like(soft))
        return soft + (hard - soft).detach()

    def _serve(self, h: torch.Tensor, layer: HashLayer | None) -> torch.Tensor:
        m = self.method
        if m in ("plain", "mf"):
            return h
        if m == "lsh":
            return h @ self.hyperplanes
        assert layer is not None
        if m == "hashnet":
            return layer(h, self._sched["scale"])
        return layer(h)

    # ----------------------------------------------------------------------------- API
    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, beta: float,
             train_cfg: TrainConfig | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
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
        tc = train_cfg or self.train_cfg
        if generator is None:
            raise ConfigError("HashModel.loss needs a torch.Generator (all randomness flows through it)")
        dev = self.graph.device
        users, pos = users.to(dev), pos.to(dev)
        b = users.numel()
        neg = neg.to(dev).reshape(b, -1)
        items = torch.cat([pos, neg.reshape(-1)])
        hu, hi = self._encode(users, items, generator)
        vu, vp, vn = self._train_vectors(hu, hi[:b], hi[b:], beta, generator)

        use_recon = tc.use_reconstruction and self.method not in ("plain", "mf")
        use_rank = tc.use_ranking and self.method != "hashgnn_nr"
        if not (use_recon or use_rank):
            raise ConfigError(f"method {self.method!r} with use_reconstruction={tc.use_reconstruction} and "
                              f"use_ranking={tc.use_ranking} leaves no loss to train; enable one of them")
        total, parts = self._objective(vu, vp, vn, use_recon, use_rank, tc)
        if tc.continuous_weight > 0 and self._keeps_continuous_term():
            # Keeps z itself a good ranker after beta reaches 1, for hierarchical re-ranking.
            zu, zi = self.user_hash(hu), self.item_hash(hi)  # type: ignore[misc]
            cont, _ = self._objective(zu, zi[:b], zi[b:], use_recon, use_rank, tc)
            total = total + tc.continuous_weight * cont
            parts["continuous"] = float(cont.detach())
        if tc.weight_decay > 0 and not self.encoder_frozen:
            eu, ei = self.encoder.ego(users, items)
            reg = l2_penalty(eu, ei, batch_size=b)
            total = total + tc.weight_decay * reg
            parts["reg"] = float(reg.detach())
        parts["loss"] = float(total.detach())
        parts.update(self.schedule_state())
        return total, parts

    def _keeps_continuous_term(self) -> bool:
        return (self.method in ("hashgnn", "hash_ste", "hashgnn_nr", "hashgnn_sp")
                and self._sched["stage"] == "hash")

    @staticmethod
    def _objective(vu: torch.Tensor, vp: torch.Tensor, vn: torch.Tensor, use_recon: bool, use_rank: bool,
                   tc: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
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
        out = self._serve(hu, self.user_hash), self._serve(hi, self.item_hash)
        self.train(was_training)
        return out


def build_model(cfg: ModelConfig, train: sp.spmatrix, device: torch.device | str = "cpu",
                user_attrs: NodeAttributes | None = None, item_attrs: NodeAttributes | None = None,
                train_cfg: TrainConfig | None = None, seed: int | None = None) -> HashModel:
    """Build the network ``cfg`` describes over the training interactions ``train`` (n_users x n_items).

    Args:
        cfg: model configuration.
        train: scipy sparse training interactions.
        device: where parameters and graph tensors live.
        user_attrs, item_attrs: optional attribute tables (sage encoder only).
        train_cfg: stored as the default for :meth:`HashModel.on_epoch_start` and ``loss``.
        seed: when given, parameters are initialised from this seed (without touching the global
            RNG's state); otherwise from the global torch RNG, as ``nn.Module`` does.
    """
    _validate(cfg, user_attrs, item_attrs)
    device = torch.device(device)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(cfg, train, device, user_attrs, item_attrs, train_cfg, None)
    graph = BipartiteGraph.from_csr(train, device)
    encoder: nn.Module
    if cfg.method == "mf":
        encoder = MatrixFactorization(graph.n_users, graph.n_items, cfg.mf_dim)
    elif cfg.encoder == "lightgcn":
        encoder = LightGCN(graph, cfg.lightgcn_dim, cfg.lightgcn_layers)
    else:
        ua = _attrs_to(user_attrs, device)
        ia = _attrs_to(item_attrs, device)
        encoder = BipartiteSAGE(
            graph,
            InputEncoder(graph.n_users, cfg.id_dim, cfg.input_dim, ua),
            InputEncoder(graph.n_items, cfg.id_dim, cfg.input_dim, ia),
            cfg.user_fanouts, cfg.item_fanouts, cfg.hidden_dim,
        )
    return HashModel(cfg, graph, encoder, train_cfg).to(device)


def _attrs_to(a: NodeAttributes | None, device: torch.device) -> NodeAttributes | None:
    if a is None:
        return None
    return NodeAttributes(
        categorical=None if a.categorical is None else torch.as_tensor(a.categorical).to(device),
        numeric=None if a.numeric is None else torch.as_tensor(a.numeric).to(device),
        cardinalities=a.cardinalities,
    )


def _validate(cfg: ModelConfig, user_attrs: NodeAttributes | None, item_attrs: NodeAttributes | None) -> None:
    if cfg.method not in METHODS:
        raise ConfigError(f"unknown method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    if cfg.encoder not in ENCODERS:
        raise ConfigError(f"unknown encoder {cfg.encoder!r}; choose one of {', '.join(ENCODERS)}")
    if not 8 <= cfg.bits <= 256:
        raise ConfigError(f"bits must be between 8 and 256, got {cfg.bits}")
    if cfg.guidance not in GRANULARITIES:
        raise ConfigError(f"unknown guidance {cfg.guidance!r}; choose node or bit")
    if cfg.beta_schedule not in SCHEDULES:
        raise ConfigError(f"unknown beta schedule {cfg.beta_schedule!r}; choose one of {', '.join(SCHEDULES)}")
    beta_at(0, cfg.beta_schedule, cfg.beta_step, cfg.beta_hold, cfg.beta_epochs, cfg.beta_value)
    if any(int(f) < 1 for f in [*cfg.user_fanouts, *cfg.item_fanouts]):
        raise ConfigError(f"fan-outs must be positive, got user {cfg.user_fanouts} item {cfg.item_fanouts}")
    if (user_attrs is not None or item_attrs is not None) and (cfg.encoder != "sage" or cfg.method == "mf"):
        raise ConfigError("node attributes need the sage encoder (lightgcn and mf use ID embeddings only)")
    if cfg.method == "hash_gumbel" and not 0 < cfg.gumbel_tau_min <= cfg.gumbel_tau0:
        raise ConfigError("hash_gumbel needs 0 < gumbel_tau_min <= gumbel_tau0")


def train_defaults(cfg: ModelConfig) -> dict[str, Any]:
    """TrainConfig values that reproduce a method's reference setting (apply where not set).

    ``plain`` with lightgcn and ``mf`` follow LightGCN-PyTorch (batch 2048, one negative, lr 1e-3,
    L2 1e-4); the HashGNN methods follow the authors' code (batch 256, 10 negatives, lr 1e-3), except
    that with the lightgcn encoder, whose every batch propagates over the whole graph, batches are
    LightGCN's 2048 edges (8x fewer propagations per epoch).
    """
    if cfg.method == "mf" or (cfg.method == "plain" and cfg.encoder == "lightgcn"):
        return {"batch_size": 2048, "negatives": 1, "lr": 1e-3, "weight_decay": 1e-4, "ranking_loss": "bpr",
                "use_reconstruction": False}
    batch = 2048 if cfg.encoder == "lightgcn" else 256
    return {"batch_size": batch, "negatives": 10, "lr": 1e-3, "weight_decay": 0.0, "ranking_loss": "bpr"}


__all__ = ["HashModel", "build_model", "train_defaults", "METHODS", "ENCODERS", "RANKING_LOSSES"]
