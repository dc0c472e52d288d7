"""BPR matrix factorisation (Rendle et al., UAI 2009): one free embedding per user and item."""

from __future__ import annotations

import torch
from torch import nn


class MatrixFactorization(nn.Module):
    """User and item embedding tables scored by inner product (the ``mf`` baseline).

    Args:
        n_users, n_items: table sizes.
        dim: embedding width. Initialised N(0, 0.1^2), as LightGCN-PyTorch's MF.
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 64) -> None:
        super().__init__()
        self.out_dim = dim
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The embeddings of a batch (``generator`` is unused)."""
        return self.user_emb(users), self.item_emb(items)

    def ego(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`forward`: the embeddings an L2 penalty acts on."""
        return self.user_emb(users), self.item_emb(items)

    @torch.no_grad()
    def embed_all(
        self, generator: torch.Generator | None = None, batch_size: int = 4096
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All user and item embeddings (copies)."""
        return self.user_emb.weight.detach().clone(), self.item_emb.weight.detach().clone()
