"""Real query vectors as a code plus small integer weights per bit, for weighted Hamming search.

A run with query vectors (``distill.query_weight``) scores items by ``<q_u, b_i>``, a real vector
against +-1 item codes. Since ``<q, b> = sum_d |q_d| s_d b_d`` with ``s = sign(q)``, quantising the
magnitudes ``|q_d|`` to integers ``w_d`` turns the score into ``sum_d w_d - 2 * sum_d w_d [s_d != b_d]``:
a weighted Hamming distance between the query's code ``s`` and the item's code
(:class:`~hashgnn.index.WeightedHammingIndex`). The step of the quantiser is relative to each query's
own mean magnitude, so every user's weights use the whole range whatever the length of their vector
(the length does not change a user's ranking).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hashgnn.errors import ConfigError

# weights 0..7 in steps of 0.4 mean |q_d|: picked on the validation carve-outs of Last.fm, ml-1m and
# gowalla, where they rank at 0.99-1.00 of the unquantised query (2 planes: 0.98-0.99; docs/RESULTS.md)
DEFAULT_PLANES = 3
DEFAULT_STEP = 0.4


@dataclass(frozen=True)
class WeightedQueries:
    """Queries for :class:`~hashgnn.index.WeightedHammingIndex`: packed codes ``(n, ceil(K/8))``
    ``uint8`` (the signs of the vectors) and integer weights ``(n, K)`` ``uint8`` in ``0 .. 2^planes - 1``."""

    codes: np.ndarray
    weights: np.ndarray
    planes: int


def quantise_queries(vectors: np.ndarray, planes: int = DEFAULT_PLANES, step: float = DEFAULT_STEP) -> WeightedQueries:
    """Signs and quantised magnitudes of real query vectors (n, K).

    ``w_d = clip(round(|q_d| / (step * mean_d |q_d|)), 0, 2^planes - 1)``, per row; a row of zeros gets
    weight 0 everywhere (it ranks nothing, as its inner products are all 0).
    """
    if isinstance(planes, bool) or not isinstance(planes, (int, np.integer)) or not 1 <= planes <= 4:
        raise ConfigError(f"planes must be an integer from 1 to 4, got {planes!r}")
    if not step > 0:
        raise ConfigError(f"step must be > 0 (a fraction of each query's mean magnitude), got {step!r}")
    q = np.asarray(vectors, np.float32)
    if q.ndim != 2:
        raise ConfigError(f"expected query vectors of shape (n, K), got shape {q.shape}")
    mag = np.abs(q)
    unit = mag.mean(axis=1, keepdims=True) * np.float32(step)
    scaled = np.divide(mag, unit, out=np.zeros_like(mag), where=unit > 0)
    weights = np.clip(np.rint(scaled), 0, (1 << planes) - 1).astype(np.uint8)
    codes = np.packbits(q >= 0, axis=1)  # pack_codes' convention, without importing torch here
    return WeightedQueries(codes, weights, int(planes))


def dequantised(wq: WeightedQueries, bits: int) -> np.ndarray:
    """The real vectors a ``WeightedQueries`` stands for, ``s_d * w_d`` (n, K) ``float32``: their inner
    products with +-1 item codes rank as the weighted Hamming distances do (a reference for tests)."""
    from hashgnn.codes.packing import unpack_codes

    return unpack_codes(wq.codes, bits) * wq.weights.astype(np.float32)


__all__ = ["DEFAULT_PLANES", "DEFAULT_STEP", "WeightedQueries", "dequantised", "quantise_queries"]
