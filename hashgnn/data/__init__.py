"""Stage 1, data: named public data sets, user tables, splits and the :class:`Interactions` they give.

``load_interactions(cfg)`` is the entry point every later stage uses; ``carve_validation`` holds out
a validation split from train; ``fetch_dataset`` / ``list_datasets`` manage the named data sets.
See docs/DATA.md.
"""

from __future__ import annotations

from hashgnn.data.dataset import Interactions
from hashgnn.data.fetch import fetch_dataset
from hashgnn.data.load import absolute_dataset, load_interactions
from hashgnn.data.registry import REGISTRY, DatasetSpec, get_spec, list_datasets
from hashgnn.data.split import carve_validation, split_per_user

__all__ = [
    "REGISTRY",
    "DatasetSpec",
    "Interactions",
    "absolute_dataset",
    "carve_validation",
    "fetch_dataset",
    "get_spec",
    "list_datasets",
    "load_interactions",
    "split_per_user",
]
