"""Build the network of a run's method: ``build_model(cfg, train, device) -> HashModel``.

The method's registry entry (:mod:`hashgnn.methods`) names its class: HashGNN and its variants in
:mod:`hashgnn.model.hashgnn`, the baselines in :mod:`hashgnn.model.baselines`, all subclasses of
:class:`hashgnn.model.base.HashModel`. This module picks the encoder, checks the config and
initialises the parameters.
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
from torch import nn

from hashgnn.config import ModelConfig, TrainConfig
from hashgnn.errors import ConfigError
from hashgnn.graph.bipartite import BipartiteGraph
from hashgnn.methods import ENCODERS, METHOD_NAMES, get_method, train_defaults
from hashgnn.model.base import HashModel
from hashgnn.model.guidance import GRANULARITIES, SCHEDULES, beta_at
from hashgnn.model.inputs import InputEncoder, NodeAttributes
from hashgnn.model.lightgcn import LightGCN
from hashgnn.model.losses import RANKING_LOSSES
from hashgnn.model.mf import MatrixFactorization
from hashgnn.model.sage import BipartiteSAGE

METHODS = METHOD_NAMES


def build_model(
    cfg: ModelConfig,
    train: sp.spmatrix,
    device: torch.device | str = "cpu",
    user_attrs: NodeAttributes | None = None,
    item_attrs: NodeAttributes | None = None,
    train_cfg: TrainConfig | None = None,
    seed: int | None = None,
) -> HashModel:
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
    spec = get_method(cfg.method)
    graph = BipartiteGraph.from_csr(train, device)
    encoder: nn.Module
    if spec.encoder == "mf":
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
            cfg.user_fanouts,
            cfg.item_fanouts,
            cfg.hidden_dim,
        )
    return spec.model_class()(cfg, graph, encoder, train_cfg).to(device)


def _attrs_to(a: NodeAttributes | None, device: torch.device) -> NodeAttributes | None:
    if a is None:
        return None
    return NodeAttributes(
        categorical=None if a.categorical is None else torch.as_tensor(a.categorical).to(device),
        numeric=None if a.numeric is None else torch.as_tensor(a.numeric).to(device),
        cardinalities=a.cardinalities,
    )


def _validate(cfg: ModelConfig, user_attrs: NodeAttributes | None, item_attrs: NodeAttributes | None) -> None:
    spec = get_method(cfg.method)
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
    if (user_attrs is not None or item_attrs is not None) and (cfg.encoder != "sage" or spec.encoder == "mf"):
        raise ConfigError("node attributes need the sage encoder (lightgcn and mf use ID embeddings only)")
    if "gumbel_tau_min" in spec.knobs and not 0 < cfg.gumbel_tau_min <= cfg.gumbel_tau0:
        raise ConfigError("hash_gumbel needs 0 < gumbel_tau_min <= gumbel_tau0")


__all__ = ["ENCODERS", "METHODS", "RANKING_LOSSES", "HashModel", "build_model", "train_defaults"]
