"""Training losses on inner-product scores.

``s_pos`` (B,) scores the positive (user, item) edges and ``s_neg`` (B, n) the sampled negatives of
each user. Every loss is a mean over its terms, with no scaling of the inner products.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from hashgnn.errors import ConfigError

RANKING_LOSSES = ("bpr", "margin")


def reconstruction_loss(s_pos: torch.Tensor, s_neg: torch.Tensor) -> torch.Tensor:
    """Sigmoid cross-entropy, label 1 on positives and 0 on negatives, mean over all B + B*n terms.

    ``-log sigmoid(s) = softplus(-s)`` and ``-log(1 - sigmoid(s)) = softplus(s)``; the authors' code
    concatenates the positive and negative terms and takes one mean.
    """
    total = F.softplus(-s_pos).sum() + F.softplus(s_neg).sum()
    return total / (s_pos.numel() + s_neg.numel())


def bpr_loss(s_pos: torch.Tensor, s_neg: torch.Tensor) -> torch.Tensor:
    """``mean(softplus(-(s_pos - s_neg)))`` over every (positive, its negative) pair (the code's BPR)."""
    return F.softplus(s_neg - s_pos.unsqueeze(1)).mean()


def margin_loss(s_pos: torch.Tensor, s_neg: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Triplet ranking loss of the paper's text: ``mean(relu(margin - s_pos + s_neg))``."""
    return F.relu(margin - s_pos.unsqueeze(1) + s_neg).mean()


def ranking_loss(s_pos: torch.Tensor, s_neg: torch.Tensor, kind: str = "bpr", margin: float = 1.0) -> torch.Tensor:
    """The ranking loss named ``kind`` (``bpr`` or ``margin``)."""
    if kind == "bpr":
        return bpr_loss(s_pos, s_neg)
    if kind == "margin":
        return margin_loss(s_pos, s_neg, margin)
    raise ConfigError(f"unknown ranking loss {kind!r}; choose one of {', '.join(RANKING_LOSSES)}")


def l2_penalty(*embeddings: torch.Tensor, batch_size: int) -> torch.Tensor:
    """LightGCN's regulariser: ``0.5 * sum of squared norms / batch_size`` of the batch's ego embeddings."""
    total = torch.stack([e.pow(2).sum() for e in embeddings]).sum()
    return 0.5 * total / max(batch_size, 1)
