"""Exact top-k by weighted Hamming distance: ``WeightedHammingIndex``.

Items are binary codes, exactly as in a :class:`~hashgnn.index.HammingIndex` (``ceil(bits / 8)``
bytes, ``numpy.packbits`` order). A query is a code plus one small integer weight per bit, and the
distance ``sum_d w_d [q_d != c_d]`` ranks the items. With the weights of a real query vector (its
magnitudes, quantised: :func:`hashgnn.codes.query_weights.quantise_queries`) this ranks as the inner
product of that vector with the items' +-1 codes, ``<q, b> = sum_d w_d - 2 * distance``, at the cost
of ``planes`` popcounts per word: the asymmetric score of :class:`~hashgnn.index.AsymmetricIndex`,
quantised, at 2-6x its speed and about a third of the Hamming scan's (docs/RESULTS.md, on a CPU
without a vector popcount). Query-adaptive bit weights for binary codes are not new (Zhang et al., "Binary
code ranking with weighted Hamming distance", CVPR 2013); here they come from the query vectors a run
trains against its item codes (``distill.query_weight``, docs/MODEL.md).

Ties go to the lower position (id order, or the run's tie order), as in every index of the project.
"""

from __future__ import annotations

import numpy as np

from hashgnn.codes.query_weights import DEFAULT_PLANES
from hashgnn.errors import HashgnnError
from hashgnn.index._common import (
    Exclude,
    PackedItems,
    check_codes,
    check_k,
    exclusion_csr,
    no_results,
    numba_threads,
    pad_columns,
)

MAX_PLANES = 4  # weights up to 15: beyond 3 planes the accuracy no longer moves (docs/RESULTS.md)


def _words(rows: np.ndarray) -> np.ndarray:
    """Packed uint8 rows (n, nbytes) -> (n, W) uint64, zero-padded to whole words."""
    n, nbytes = rows.shape
    padded = -(-nbytes // 8) * 8
    if padded != nbytes:
        rows = np.concatenate([rows, np.zeros((n, padded - nbytes), np.uint8)], axis=1)
    return np.ascontiguousarray(rows).view(np.uint64)


def weight_planes(weights: np.ndarray, planes: int) -> np.ndarray:
    """Integer weights (n, bits) in ``0 .. 2^planes - 1`` -> bit planes (n, planes, W) ``uint64``:
    plane t holds bit t of every weight, packed as the codes are (pad bits 0)."""
    w = np.asarray(weights)
    out = np.stack([np.packbits((w >> t) & 1, axis=1) for t in range(planes)], axis=1)  # (n, P, nbytes)
    n, p, nbytes = out.shape
    return _words(out.reshape(n * p, nbytes)).reshape(n, p, -1)


class WeightedHammingIndex(PackedItems):
    """Exact top-k of codes by a per-query weighted Hamming distance; codes stored packed.

    Args:
        bits: code length K (codes are ``ceil(K/8)`` bytes, pad bits ignored).
        planes: bits per weight P: weights are integers in ``0 .. 2^P - 1`` (1 to 4; default 3, as
            :func:`~hashgnn.codes.query_weights.quantise_queries`).
        threads: numba threads for a search (None: numba's current setting).

    Example::

        index = WeightedHammingIndex(64)                        # 3 planes: weights 0..7
        index.add(item_codes)                                   # uint8 (n_items, 8), as HammingIndex.add
        wq = quantise_queries(user_vectors)                     # signs + integer weights 0..7 per user
        dist, ids = index.search(wq.codes, wq.weights, k=20, exclude=train_csr)
    """

    def __init__(self, bits: int, planes: int = DEFAULT_PLANES, *, threads: int | None = None) -> None:
        self._init_items(bits)
        if isinstance(planes, bool) or not isinstance(planes, (int, np.integer)) or not 1 <= planes <= MAX_PLANES:
            raise HashgnnError(f"planes must be an integer from 1 to {MAX_PLANES}, got {planes!r}")
        self.planes = int(planes)
        self.threads = threads

    @property
    def max_weight(self) -> int:
        """The largest weight a query may give a bit, ``2^planes - 1``."""
        return (1 << self.planes) - 1

    def _check_weights(self, weights: object, n: int) -> np.ndarray:
        if not isinstance(weights, np.ndarray) or weights.shape != (n, self.bits):
            shape = getattr(weights, "shape", None)
            raise HashgnnError(
                f"WeightedHammingIndex.search: expected integer weights of shape ({n}, {self.bits}) (one per "
                f"query and bit), got {type(weights).__name__} of shape {shape}"
            )
        if not np.issubdtype(weights.dtype, np.integer):
            raise HashgnnError(f"WeightedHammingIndex.search: weights must be integers, got dtype {weights.dtype}")
        if weights.size and (weights.min() < 0 or weights.max() > self.max_weight):
            raise HashgnnError(
                f"WeightedHammingIndex.search: weights must lie in 0..{self.max_weight} for {self.planes} "
                f"plane(s), got {int(weights.min())}..{int(weights.max())}; quantise with planes={self.planes}"
            )
        return weights.astype(np.int64)

    def search(
        self, query_codes: np.ndarray, weights: np.ndarray, k: int, exclude: Exclude = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items of every query by ``sum_d w_d [q_d != c_d]``: ``(distances int32, ids int64)``
        of shape (queries, k), distances ascending, ties to the lower id, padded with -1 where fewer
        than ``k`` items remain. ``exclude`` as in :meth:`HammingIndex.search`."""
        from hashgnn.index._weighted_kernels import weighted_topk

        q = check_codes(query_codes, self.bits, "WeightedHammingIndex.search")
        w = self._check_weights(weights, len(q))
        k = check_k(k)
        ex = exclusion_csr(exclude, len(q), self._idmap)
        n = self.ntotal
        kk = min(k, n)
        if n == 0 or len(q) == 0:
            return no_results(len(q), k, -1, np.int32)
        if self._derived is None:
            self._derived = np.ascontiguousarray(_words(self._codes).T)  # word-major: one stream per word
        empty = np.zeros(0, np.int64)
        indptr, indices = ex if ex is not None else (empty, empty)
        out_d = np.empty((len(q), kk), np.int32)
        out_i = np.empty((len(q), kk), np.int64)
        maxd = self.bits * self.max_weight
        with numba_threads(self.threads):
            import numba

            chunks = min(len(q), 4 * numba.get_num_threads())  # a few per thread: even loads
            planes = weight_planes(w, self.planes)
            weighted_topk(self._derived, _words(q), planes, kk, indptr, indices, maxd, chunks, out_d, out_i)
        d, pos = pad_columns(out_d, out_i, k, -1)
        return d, self._idmap.to_ids(pos)


__all__ = ["WeightedHammingIndex", "weight_planes"]
