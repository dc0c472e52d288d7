"""Binary codes: sign, pack to bytes, unpack.

Convention used everywhere in hashgnn: a code is ``h = sign(z)`` with sign(0) = +1; bit 1 stands for
+1 and bit 0 for -1; bits are packed with ``numpy.packbits`` (big-endian within each byte), so a
K-bit code is ``ceil(K / 8)`` bytes. When K is not a multiple of 8 the pad bits are 0 in every code,
so they never change a Hamming distance.
"""

from __future__ import annotations

import numpy as np
import torch


def sign(z: torch.Tensor) -> torch.Tensor:
    """``sign`` with sign(0) = +1 (``torch.sign`` gives 0 there), as float in {-1, +1}."""
    return torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))


def pack_codes(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Pack the signs of ``x`` (n, K), real or ±1, into ``uint8`` of shape (n, ceil(K/8))."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of codes, got shape {x.shape}")
    return np.packbits(x >= 0, axis=1)


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``float32`` ±1 array of shape (n, bits)."""
    b = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=1, count=bits)
    return b.astype(np.float32) * 2.0 - 1.0


def hamming_distance_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All-pairs Hamming distances of packed codes, (len(a), len(b)) int; a slow, obvious reference."""
    x = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return np.unpackbits(x, axis=2).sum(axis=2).astype(np.int64)
