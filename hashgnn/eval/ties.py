"""Tie rules for integer-valued scores (Hamming similarity has only ``bits + 1`` levels).

The evaluator orders equal scores by the lower item index (hashgnn/eval/topk.py). With 64-bit codes
a user's top 20 is usually cut from a large group of items at the same Hamming distance, and item id
order is arbitrary: a data set whose ids follow popularity would flatter the codes. A server can
defend other rules; :class:`TieBreakScorer` applies one without touching the primary order:

- ``popularity``: among tied items, the one with more training interactions first;
- ``continuous``: among tied items, the one with the higher continuous score ``<z_u, z_i>``.

Both are exact: the combined score is the integer ``primary * n_items + rank``, where ``rank`` in
``[0, n_items)`` is the item's position in the secondary order, and the result is exact in float32
while ``(max primary + 1) * n_items < 2**24`` (64-bit codes on 40,981 items: 2.7e6). Ties left in
the secondary order still go to the lower item index.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from hashgnn.errors import HashgnnError

_EXACT = 2**24  # float32 holds every integer below this exactly


def popularity_ranks(train: sp.spmatrix) -> np.ndarray:
    """Each item's rank (0 = least popular) by training degree; equal degrees: lower id ranks higher."""
    deg = np.diff(sp.csc_matrix(train).indptr)
    n = deg.shape[0]
    # ascending by (degree, -id): the last place goes to the most popular, lowest-id item
    order = np.lexsort((-np.arange(n), deg))
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n)
    return ranks


def _row_ranks(block: torch.Tensor) -> torch.Tensor:
    """Per row, each column's rank in ascending score order; equal scores: lower column ranks higher."""
    n = block.shape[1]
    # a stable sort on the columns reversed puts, among equal scores, the higher id first (lower rank)
    rev = torch.flip(block, dims=[1])
    order = torch.argsort(rev, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(n, device=block.device).expand_as(order).contiguous())
    return torch.flip(ranks, dims=[1])  # back to the original column order


class TieBreakScorer:
    """Score = ``primary`` with ties broken by ``secondary`` (see the module docstring).

    ``primary`` is a scorer returning integer-valued blocks (HammingScorer). ``secondary`` is
    either a per-item rank array (``popularity_ranks(train)``) or a scorer (e.g. InnerProductScorer)
    whose block is ranked per user. ``max_primary`` bounds the primary scores (``bits`` for Hamming).
    """

    def __init__(
        self,
        primary: Callable[[np.ndarray], torch.Tensor | np.ndarray],
        secondary: Callable[[np.ndarray], torch.Tensor | np.ndarray] | np.ndarray,
        max_primary: int,
        n_items: int,
    ) -> None:
        if (int(max_primary) + 1) * int(n_items) >= _EXACT:
            raise HashgnnError(
                f"(max score + 1) x items = {(max_primary + 1) * n_items} is not exact in float32 "
                f"(limit 2**24); tie-breaking needs fewer bits or items"
            )
        self.primary = primary
        self.n_items = int(n_items)
        self.secondary: Callable[[np.ndarray], torch.Tensor | np.ndarray] | None
        if callable(secondary):
            self.secondary = secondary
            self.item_ranks = None
        else:
            ranks = np.asarray(secondary, dtype=np.int64)
            if ranks.shape != (self.n_items,):
                raise HashgnnError(f"expected {self.n_items} item ranks, got shape {ranks.shape}")
            self.secondary = None
            self.item_ranks = torch.from_numpy(ranks)

    @torch.no_grad()
    def __call__(self, users: np.ndarray) -> torch.Tensor:
        p = self.primary(users)
        p = p if isinstance(p, torch.Tensor) else torch.from_numpy(np.asarray(p))
        if not torch.equal(p, torch.round(p)):
            raise HashgnnError("tie-breaking needs an integer-valued primary score (Hamming similarity)")
        if self.item_ranks is not None:
            ranks = self.item_ranks.to(p.device).unsqueeze(0)
        else:
            assert self.secondary is not None  # one of the two is set in __init__
            s = self.secondary(users)
            s = s if isinstance(s, torch.Tensor) else torch.from_numpy(np.asarray(s))
            ranks = _row_ranks(s.to(p.device, torch.float32))
        return (p.to(torch.float64) * self.n_items + ranks).to(torch.float32)


def tie_order(train: sp.spmatrix, rule: str) -> np.ndarray | None:
    """The item order that a served ranking breaks ties in: ``popularity`` or ``id`` (None, the identity).

    ``popularity``: items by training degree, most popular first, equal degrees by the lower id. A
    retriever that indexes the items in this order and maps positions back to items gives every
    tied group to the more popular items (hashgnn/index/recommend.py, ``RunCodes.item_order``).
    """
    if rule == "id":
        return None
    if rule != "popularity":
        raise HashgnnError(f"unknown tie rule {rule!r}; use popularity or id")
    deg = np.diff(sp.csc_matrix(train).indptr)
    return np.lexsort((np.arange(deg.shape[0]), -deg)).astype(np.int64)
