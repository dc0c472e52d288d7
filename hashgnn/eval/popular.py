"""The Most-Popular baseline: every user gets the items with the most training interactions."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


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
