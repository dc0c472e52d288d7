"""The small music_toy run configurations the tests train (seconds per run), written once.

``tiny("lightgcn")`` and ``tiny("sage")`` return fresh dicts for ``RunConfig.from_dict``; keyword
arguments update the named section, so a test states only what it changes.
"""

from __future__ import annotations

import copy
from typing import Any

_BASE: dict[str, dict[str, Any]] = {
    # LightGCN: 2 epochs, full-graph propagation of 16-dim embeddings, two layers.
    "lightgcn": {
        "data": {"dataset": "music_toy", "valid_fraction": 0.1},
        "model": {
            "method": "hashgnn",
            "encoder": "lightgcn",
            "bits": 16,
            "lightgcn_dim": 16,
            "lightgcn_layers": 2,
            "beta_schedule": "linear",
            "beta_epochs": 1,
        },
        "train": {"epochs": 2, "batch_size": 2048, "negatives": 2, "seed": 3, "device": "cpu", "threads": 1},
        "eval": {"ks": [10, 20], "candidates": 50},
    },
    # GraphSAGE: 3 epochs, the authors' two-tower encoder at width 16 with small fan-outs.
    "sage": {
        "data": {"dataset": "music_toy", "valid_fraction": 0.1},
        "model": {
            "method": "hashgnn",
            "encoder": "sage",
            "bits": 16,
            "id_dim": 16,
            "input_dim": 16,
            "hidden_dim": 16,
            "user_fanouts": [4, 2],
            "item_fanouts": [4],
            "beta_schedule": "linear",
            "beta_epochs": 2,
        },
        "train": {"epochs": 3, "batch_size": 1024, "negatives": 2, "seed": 7, "device": "cpu", "threads": 1},
        "eval": {"ks": [20, 50], "candidates": 100},
    },
}


def tiny(encoder: str = "lightgcn", **sections: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy of the tiny config of ``encoder``, each section updated by the keyword of its name."""
    cfg = copy.deepcopy(_BASE[encoder])
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg
