"""Ready-made scorers: callables ``(users) -> (len(users), n_items)`` score blocks, higher is better.

- :class:`InnerProductScorer`  ``<e_u, e_i>`` of float embeddings (continuous retrieval);
- :class:`HammingScorer`       ``bits - Hamming(h_u, h_i)`` of packed binary codes (Hamming retrieval);
- :class:`HierarchicalScorer`  the C items nearest in Hamming distance, re-ranked by ``<z_u, z_i>``.

All compute in float32 torch on ``device`` (default: the device of the given tensors, else CPU) and
return a fresh torch tensor there. Hamming similarity is computed exactly through a matrix product of
±1 codes: ``<h_u, h_i> = bits - 2 * Hamming``, so ``bits - Hamming = (bits + <h_u, h_i>) / 2``;
every term is an integer of magnitude at most ``bits`` (< 2**24), hence exact in float32.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from hashgnn.codes.packing import unpack_codes
from hashgnn.errors import HashgnnError
from hashgnn.index.topk import mask_, topk_desc


def _device(device: str | torch.device | None, *arrays: object) -> torch.device:
    if device is not None:
        return torch.device(device)
    for a in arrays:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


def _float_tensor(x: np.ndarray | torch.Tensor, device: torch.device, what: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2:
        raise HashgnnError(f"{what} must be a 2-D array (rows x dims), got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.float32)


def _unpacked_codes(packed: np.ndarray | torch.Tensor, bits: int, device: torch.device, what: str) -> torch.Tensor:
    if isinstance(packed, torch.Tensor):
        packed = packed.detach().cpu().numpy()
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 2 or packed.shape[1] != (bits + 7) // 8:
        raise HashgnnError(
            f"{what}: expected packed uint8 codes of shape (n, {(bits + 7) // 8}) for {bits} bits, "
            f"got {packed.dtype} {packed.shape}"
        )
    return torch.from_numpy(unpack_codes(packed, bits)).to(device)


def _users(users: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(users, dtype=np.int64), device=device)


class InnerProductScorer:
    """Score ``<user_emb[u], item_emb[i]>`` of float embeddings (float32 matrix product)."""

    def __init__(
        self,
        user_emb: np.ndarray | torch.Tensor,
        item_emb: np.ndarray | torch.Tensor,
        device: str | torch.device | None = None,
    ) -> None:
        self.device = _device(device, user_emb, item_emb)
        self.user_emb = _float_tensor(user_emb, self.device, "user embeddings")
        self.item_emb = _float_tensor(item_emb, self.device, "item embeddings")
        if self.user_emb.shape[1] != self.item_emb.shape[1]:
            raise HashgnnError(
                f"user and item embeddings differ in width: {self.user_emb.shape[1]} vs {self.item_emb.shape[1]}"
            )
        self.n_items = int(self.item_emb.shape[0])

    @torch.no_grad()
    def __call__(self, users: np.ndarray) -> torch.Tensor:
        return self.user_emb[_users(users, self.device)] @ self.item_emb.T


class HammingScorer:
    """Score ``bits - Hamming(code_u, code_i)`` of packed codes (numpy.packbits, bit 1 = +1)."""

    def __init__(
        self,
        user_codes: np.ndarray | torch.Tensor,
        item_codes: np.ndarray | torch.Tensor,
        bits: int,
        device: str | torch.device | None = None,
    ) -> None:
        self.bits = int(bits)
        self.device = _device(device, user_codes, item_codes)
        self.user_pm = _unpacked_codes(user_codes, self.bits, self.device, "user codes")
        self.item_pm = _unpacked_codes(item_codes, self.bits, self.device, "item codes")
        self.n_items = int(self.item_pm.shape[0])

    @torch.no_grad()
    def __call__(self, users: np.ndarray) -> torch.Tensor:
        dot = self.user_pm[_users(users, self.device)] @ self.item_pm.T
        return dot.add_(self.bits).mul_(0.5)


class HierarchicalScorer:
    """Hierarchical search: the top-C items by Hamming distance, re-ranked by ``<user_z, item_z>``.

    Candidates are the C items of highest Hamming similarity, ties to the lower item index, chosen
    among the items not in ``exclude`` (the evaluator passes the user's training items, so masked
    items never take a candidate slot). Candidates get their inner-product score; every other item
    gets ``-inf`` and is therefore never recommended. Called without ``exclude``, candidates come
    from all items (as in the HashGNN authors' code, which does not mask).
    """

    def __init__(
        self,
        user_codes: np.ndarray | torch.Tensor,
        item_codes: np.ndarray | torch.Tensor,
        bits: int,
        user_z: np.ndarray | torch.Tensor,
        item_z: np.ndarray | torch.Tensor,
        candidates: int = 500,
        device: str | torch.device | None = None,
    ) -> None:
        if candidates < 1:
            raise HashgnnError(f"the number of candidates must be at least 1, got {candidates}")
        self.device = _device(device, user_z, item_z, user_codes, item_codes)
        self.hamming = HammingScorer(user_codes, item_codes, bits, self.device)
        self.inner = InnerProductScorer(user_z, item_z, self.device)
        if self.inner.n_items != self.hamming.n_items:
            raise HashgnnError(f"{self.hamming.n_items} item codes but {self.inner.n_items} item vectors")
        self.candidates = int(candidates)
        self.n_items = self.inner.n_items

    @torch.no_grad()
    def __call__(self, users: np.ndarray, exclude: sp.csr_matrix | None = None) -> torch.Tensor:
        users = np.asarray(users, dtype=np.int64)
        ham = self.hamming(users)
        if exclude is not None:
            mask_(ham, exclude)
        cand = topk_desc(ham, self.candidates)  # (B, C), -1 where fewer unmasked items
        ip = self.inner(users)
        ok = cand >= 0  # fewer than C unmasked items leave -1 slots
        rows = torch.arange(len(users), device=self.device).unsqueeze(1).expand_as(cand)[ok]
        cols = cand[ok]
        out = ham.fill_(float("-inf"))  # reuse the Hamming block's memory
        out[rows, cols] = ip[rows, cols]
        return out
