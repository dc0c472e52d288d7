"""Stage 3: input encoders, GraphSAGE / LightGCN / MF encoders, hash layer + STE, guidance, losses,
and the assembled network per method (:func:`build_model`)."""

from __future__ import annotations

from hashgnn.model.base import HashModel
from hashgnn.model.hash_layer import HashLayer, ste_sign
from hashgnn.model.inputs import InputEncoder, NodeAttributes
from hashgnn.model.lightgcn import LightGCN
from hashgnn.model.mf import MatrixFactorization
from hashgnn.model.network import ENCODERS, METHODS, build_model, train_defaults
from hashgnn.model.sage import BipartiteSAGE, MeanAggregator

__all__ = [
    "ENCODERS",
    "METHODS",
    "BipartiteSAGE",
    "HashLayer",
    "HashModel",
    "InputEncoder",
    "LightGCN",
    "MatrixFactorization",
    "MeanAggregator",
    "NodeAttributes",
    "build_model",
    "ste_sign",
    "train_defaults",
]
