"""The Most-Popular baseline: every user gets the items with the most training interactions."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from hashgnn.config import DataConfig
from hashgnn.errors import ConfigError


class PopularScorer:
    """Score every item by its training degree (number of users who interacted with it).

    The same ranking for every user; the evaluator masks each user's own training items and breaks
    equal degrees by the lower item index.
    """

    def __init__(self, train: sp.spmatrix) -> None:
        degree = np.asarray(sp.csr_matrix(train).getnnz(axis=0), dtype=np.float32)
        self.degree = torch.from_numpy(degree)
        self.n_items = int(degree.shape[0])

    def __call__(self, users: np.ndarray) -> torch.Tensor:
        # a fresh (not expanded) block: the evaluator writes the mask into it
        return self.degree.unsqueeze(0).repeat(len(users), 1)


BASELINES = ("popular",)


def evaluate_baseline(
    cfg: DataConfig,
    model: str,
    ks: list[int],
    batch_users: int = 1024,
    legacy_depth: int | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Load the data of ``cfg`` and evaluate the baseline ``model`` on its test split."""
    from hashgnn.data import load_interactions
    from hashgnn.eval.evaluator import check_cutoffs, evaluate

    if model not in BASELINES:
        raise ConfigError(
            f"unknown model {model!r}; baselines: {', '.join(BASELINES)} (evaluate a trained model with --run)"
        )
    data = load_interactions(cfg)
    ks = check_cutoffs(ks, data.n_items)
    return evaluate(
        PopularScorer(data.train),
        data.train,
        data.test,
        ks,
        batch_users=batch_users,
        progress=progress,
        legacy_depth=legacy_depth,
    )
