"""Exact top-k of real queries against binary item codes: ``AsymmetricIndex``.

The score of item i for a query q (a real ``bits``-wide vector) is ``<q, b_i>`` with ``b_i`` the
item's code as +-1 (bit 1 -> +1, bit 0 -> -1): the "asymmetric distance" of binary embeddings
(Gordo et al., TPAMI 2014). Items cost what they cost in a :class:`~hashgnn.index.HammingIndex`
(``ceil(bits / 8)`` bytes, ``numpy.packbits`` order); only the query is real, so a real user
vector is scored against the codes without any float item vector. Why it exists:
docs/RESULTS.md ("where the Hamming gap comes from") measures that codes quantised on one side
only rank at 0.90-1.01 of the teacher where symmetric Hamming codes stop at 0.80-0.97.

The search unpacks one block of items at a time to +-1 floats and scores it by a matrix product
(torch, any device), with the project's deterministic top-k: scores descending, exact ties to the
lower id, as :class:`~hashgnn.index.FloatIndex`'s torch backend.
"""

from __future__ import annotations

import numpy as np
import torch

from hashgnn.index._common import (
    Exclude,
    PackedItems,
    check_k,
    check_vectors,
    exclusion_csr,
    no_results,
    pad_columns,
)
from hashgnn.index.float_index import exact_topk_desc

_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)  # numpy.packbits is big-endian within a byte


class AsymmetricIndex(PackedItems):
    """Exact maximum inner product of real queries and +-1 item codes, codes stored packed.

    Args:
        bits: code length K (codes are ``ceil(K/8)`` bytes, pad bits ignored).
        device: torch device that holds the packed codes and scores the blocks.
        threads: CPU threads for a search (None: torch's current setting).

    Example::

        index = AsymmetricIndex(64)
        index.add(item_codes)                          # uint8 (n_items, 8), as HammingIndex.add
        scores, ids = index.search(user_vectors, k=20, exclude=train_csr)   # float32 (n_users, 64)
    """

    def __init__(self, bits: int, *, device: str = "cpu", threads: int | None = None) -> None:
        self._init_items(bits)
        self.device = torch.device(device)
        self.threads = threads

    @property
    def ids(self) -> np.ndarray:
        """The items' ids in position order (ascending)."""
        return self._idmap.ids if self._idmap.ids is not None else np.arange(self.ntotal, dtype=np.int64)

    def _signs(self, i0: int, i1: int) -> torch.Tensor:
        """Items i0..i1 as +-1 float32 (i1 - i0, bits)."""
        if self._derived is None:
            self._derived = torch.from_numpy(self._codes).to(self.device)
        block = self._derived[i0:i1]
        bits = (block.unsqueeze(2) >> _SHIFTS.to(self.device)) & 1
        return bits.reshape(len(block), -1)[:, : self.bits].to(torch.float32) * 2.0 - 1.0

    def search(self, queries: np.ndarray, k: int, exclude: Exclude = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items of every query by ``<q, b_i>``: ``(scores float32, ids int64)`` of shape
        (queries, k), scores descending, exact ties to the lower id, padded with ``-inf`` and id -1
        where fewer than ``k`` items remain. ``exclude`` as in :meth:`HammingIndex.search`."""
        q = check_vectors(queries, self.bits, "AsymmetricIndex.search")
        k = check_k(k)
        ex = exclusion_csr(exclude, len(q), self._idmap)
        n = self.ntotal
        kk = min(k, n)
        if n == 0 or len(q) == 0:
            return no_results(len(q), k, -np.inf, np.float32)
        qt = torch.from_numpy(q).to(self.device)
        s, pos = exact_topk_desc(
            lambda q0, q1, i0, i1: qt[q0:q1] @ self._signs(i0, i1).T, len(q), n, kk, ex, self.device, self.threads
        )
        s, pos = pad_columns(s, pos, k, -np.inf)
        return s, self._idmap.to_ids(pos)


__all__ = ["AsymmetricIndex"]
