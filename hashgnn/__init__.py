"""hashgnn: learning to hash with graph neural networks for recommender systems.

The public API (``import hashgnn as hg``)::

    data = hg.load_dataset("lastfm")                        # Interactions: train / test CSR matrices
    run = hg.Trainer(bits=32, epochs=20).fit(data, out="runs/lastfm")        # -> hg.Run
    run.metrics["test"]["hamming"]["recall@20"]             # test metrics written by training
    run.evaluate("hierarchical", ks=[20, 50])               # re-evaluated from the run folder
    run.recommend([0, 1, 2], k=10, mode="hamming")          # top-k items of some users
    run.index("hamming").search(run.codes.user_codes[:5], 10)

The package reads like the pipeline: ``data`` -> ``graph`` -> ``model`` -> ``train`` -> ``codes`` ->
``index`` -> ``eval``; ``methods`` is the registry of training methods, ``run`` the run folder,
``cli`` a thin layer over them (docs/ARCHITECTURE.md). Importing the package loads nothing heavy and
changes nothing in the process (no environment variables, no thread settings); each name below is
imported on first use. (Training is ``Trainer.fit``: ``hashgnn.train`` is the training stage's
package.) On a machine whose cores are shared, set ``OMP_WAIT_POLICY=PASSIVE`` before torch loads
(the ``hashgnn`` command does): 2-thread PyTorch ran up to 10x slower without it (docs/MODEL.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hashgnn.api import Trainer, load_dataset
    from hashgnn.config import (
        DataConfig,
        DistillConfig,
        EvalConfig,
        ModelConfig,
        RunConfig,
        SpectralConfig,
        TrainConfig,
    )
    from hashgnn.errors import ConfigError, DataError, HashgnnError
    from hashgnn.eval import evaluate
    from hashgnn.index import (
        AsymmetricIndex,
        FloatIndex,
        HammingIndex,
        HierarchicalIndex,
        MultiIndexHashing,
        WeightedHammingIndex,
    )
    from hashgnn.io import ArtifactError
    from hashgnn.methods import METHODS, MODES
    from hashgnn.run import Run

_WHERE = {
    "load_dataset": "hashgnn.api",
    "Trainer": "hashgnn.api",
    "Run": "hashgnn.run",
    "evaluate": "hashgnn.eval",
    "AsymmetricIndex": "hashgnn.index.asymmetric",
    "HammingIndex": "hashgnn.index.hamming",
    "HierarchicalIndex": "hashgnn.index.hierarchical",
    "FloatIndex": "hashgnn.index.float_index",
    "MultiIndexHashing": "hashgnn.index.mih",
    "WeightedHammingIndex": "hashgnn.index.weighted",
    "RunConfig": "hashgnn.config",
    "DataConfig": "hashgnn.config",
    "ModelConfig": "hashgnn.config",
    "TrainConfig": "hashgnn.config",
    "EvalConfig": "hashgnn.config",
    "SpectralConfig": "hashgnn.config",
    "DistillConfig": "hashgnn.config",
    "METHODS": "hashgnn.methods",
    "MODES": "hashgnn.methods",
    "HashgnnError": "hashgnn.errors",
    "DataError": "hashgnn.errors",
    "ConfigError": "hashgnn.errors",
    "ArtifactError": "hashgnn.io",
}

__all__ = [
    "METHODS",
    "MODES",
    "ArtifactError",
    "AsymmetricIndex",
    "ConfigError",
    "DataConfig",
    "DataError",
    "DistillConfig",
    "EvalConfig",
    "FloatIndex",
    "HammingIndex",
    "HashgnnError",
    "HierarchicalIndex",
    "ModelConfig",
    "MultiIndexHashing",
    "Run",
    "RunConfig",
    "SpectralConfig",
    "TrainConfig",
    "Trainer",
    "WeightedHammingIndex",
    "evaluate",
    "load_dataset",
]
assert sorted(__all__) == sorted(_WHERE)  # one list of names, kept in step with _WHERE


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'hashgnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
