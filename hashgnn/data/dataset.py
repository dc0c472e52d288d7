"""The in-memory interaction data set every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp


@dataclass
class Interactions:
    """Implicit-feedback interactions split into train, test and (optionally) validation.

    All three matrices are ``scipy.sparse.csr_matrix`` of shape ``(n_users, n_items)``, dtype
    ``float32``, with explicit ones at observed (user, item) pairs, sorted indices and no duplicates.
    Users and items are contiguous indices ``0..n-1``; ``user_ids`` / ``item_ids`` (when not None)
    map each index back to the id in the source file (integers or strings).
    """

    name: str
    train: sp.csr_matrix
    test: sp.csr_matrix
    valid: sp.csr_matrix | None = None
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Node attributes (hashgnn.data.features.NodeFeatures), one row per index, when the source has them.
    user_features: Any = None
    item_features: Any = None

    @property
    def n_users(self) -> int:
        return int(self.train.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.train.shape[1])

    def stats(self) -> dict[str, Any]:
        """Counts and density, as printed by ``hashgnn data info``."""
        n_train, n_test = int(self.train.nnz), int(self.test.nnz)
        n_valid = int(self.valid.nnz) if self.valid is not None else 0
        cells = max(self.n_users * self.n_items, 1)
        return {
            "name": self.name,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_train": n_train,
            "n_test": n_test,
            "n_valid": n_valid,
            "density": (n_train + n_test + n_valid) / cells,
            "n_test_users": int(np.count_nonzero(np.diff(self.test.indptr))),
            **{k: v for k, v in self.meta.items() if isinstance(v, (int, float, str, bool))},
            **{
                f"{side}_attributes": f.describe()
                for side, f in (("user", self.user_features), ("item", self.item_features))
                if f is not None
            },
        }


def interactions_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Build a binary CSR matrix from (user, item) index arrays; duplicates collapse to one."""
    m = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (np.asarray(users, np.int64), np.asarray(items, np.int64))),
        shape=(n_users, n_items),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    m.sort_indices()
    return m
