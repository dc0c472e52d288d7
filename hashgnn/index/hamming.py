"""Exact Hamming top-k over packed binary codes: ``HammingIndex``.

Results are exact and deterministic: distance ascending, ties by lower item id. Items are kept sorted
by id (ids are positions unless ``add`` is given explicit ids), so "lower id" and "lower position" are
the same thing for every backend.

Backends:

- ``"own"`` (``"auto"`` picks it): the project's numba kernel (:mod:`hashgnn.index._kernels`), a
  heap-free threshold select over blocked XOR + popcount.
- ``"faiss"``: ``faiss.IndexBinaryFlat``, the well-known baseline; ``faiss_use_heap`` chooses its heap
  or its counting variant (None keeps faiss's default, the heap).
- ``"torch"``: ±1 codes as a matrix product, then ``topk`` on (distance, position) keys; runs on any
  torch device (``device="cuda"`` for a GPU).
- ``"triton"``: fused Triton kernels (:mod:`hashgnn.index.triton_hamming`): XOR + popcount over tiles
  of packed codes with per-query counters instead of a score matrix, exclusions inside the kernel;
  ``device="cuda"`` (needs the ``triton`` package, which CUDA builds of torch bring; ``pip install
  'hashgnn[gpu]'`` otherwise). On CPU it runs only under Triton's interpreter (``TRITON_INTERPRET=1``
  set before the first search), which is slow and meant for tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hashgnn.errors import HashgnnError
from hashgnn.index._common import (
    Exclude,
    IdMap,
    SizedIndex,
    check_bits,
    check_codes,
    check_k,
    code_bytes,
    exclusion_csr,
    faiss_threads,
    no_results,
    numba_threads,
    pad_columns,
    search_over_fetched,
)
from hashgnn.io import read_npy, write_json, write_npy

if TYPE_CHECKING:
    from hashgnn.index.triton_hamming import TritonHammingItems, TritonPlan

BACKENDS = ("auto", "own", "faiss", "torch", "triton")
MAX_KERNEL_BITS = 2048  # own kernel: per-query histograms of K + 2 counts; torch: fp16 exact up to here
FORMAT = "hashgnn.HammingIndex"
FORMAT_VERSION = 1


def word_layout(nbytes: int) -> tuple[type, int, int]:
    """(word dtype, words per code, padded bytes) of the kernel's layout for ``nbytes``-byte codes.

    Codes are zero-padded to a multiple of 4 bytes; a multiple of 8 is read as ``uint64`` words,
    otherwise as ``uint32``. Zero padding in items and queries alike leaves every distance unchanged.
    """
    padded = -(-nbytes // 4) * 4
    if padded % 8 == 0:
        return np.uint64, padded // 8, padded
    return np.uint32, padded // 4, padded


def to_words(rows: np.ndarray) -> np.ndarray:
    """Packed ``uint8`` rows (n, nbytes) -> (n, W) words of the kernel's layout (a view when possible)."""
    n, nbytes = rows.shape
    dtype, _, padded = word_layout(nbytes)
    if padded != nbytes:
        rows = np.concatenate([rows, np.zeros((n, padded - nbytes), np.uint8)], axis=1)
    return np.ascontiguousarray(rows).view(dtype)


SAMPLE_MIN_K = 256  # from this k on, a sampled starting threshold pays for itself


def _kernel_plan(nq: int, n: int, k: int, words: int, itemsize: int, threads: int) -> tuple[int, int, int, int]:
    """(query block, item chunk, shards, threshold sample) for the own kernel.

    A chunk of items is ~16 KiB (it stays in L1/L2 while the block's queries pass over it); shards
    split the items only when there are too few query blocks to keep every thread busy. For large k,
    a sample of ~8 n / k items gives each query a starting threshold, which saves most of the
    insertions a cold start makes (about k ln(n / k) of them).
    """
    from hashgnn.index._kernels import GROUP

    chunk = max(GROUP, (16384 // (words * itemsize)) // GROUP * GROUP)
    qblock = int(min(32, max(1, -(-nq // (4 * threads)))))
    nqb = -(-nq // qblock)
    shards = 1
    if nqb < 4 * threads:
        shards = int(max(1, min(-(-4 * threads // nqb), n // (4 * chunk))))
    sample = 0
    if k >= SAMPLE_MIN_K:
        sample = int(min(1 << 16, max(2048, 8 * (n // shards) // k)))
    return qblock, chunk, shards, sample


class HammingIndex(SizedIndex):
    """Exact top-k Hamming search over ``bits``-bit codes packed with ``numpy.packbits``.

    Args:
        bits: code length K (codes are ``ceil(K/8)`` bytes, pad bits zero; up to 2048 bits for the
            own and torch backends, any length for faiss).
        backend: ``"auto"``/``"own"`` (numba kernel), ``"faiss"``, ``"torch"`` or ``"triton"`` (GPU).
        device: torch device for ``backend="torch"`` (``"cpu"``, ``"cuda"``, ...) and ``"triton"``
            (``"cuda"``, ``"cuda:1"``, ...).
        threads: threads for a search (None: the library's default: numba's / faiss's).
        faiss_use_heap: faiss only; True heap, False counting variant, None faiss's default.
        triton_plan: triton only; tile sizes and pass settings (:class:`~hashgnn.index.triton_hamming.TritonPlan`).

    Example::

        index = HammingIndex(64)
        index.add(item_codes)                      # uint8 (n_items, 8)
        dist, ids = index.search(user_codes, k=20, exclude=train_csr)
    """

    def __init__(
        self,
        bits: int,
        backend: str = "auto",
        *,
        device: str = "cpu",
        threads: int | None = None,
        faiss_use_heap: bool | None = None,
        triton_plan: TritonPlan | None = None,
    ) -> None:
        self.bits = check_bits(bits)
        if backend not in BACKENDS:
            raise HashgnnError(f"unknown Hamming backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.backend = "own" if backend == "auto" else backend
        if self.backend == "triton":
            check_triton_device(device)
        if self.backend in ("own", "torch", "triton") and self.bits > MAX_KERNEL_BITS:
            raise HashgnnError(
                f"the {self.backend} backend supports codes of up to {MAX_KERNEL_BITS} bits, got "
                f"{self.bits}; use backend='faiss'"
            )
        self.device = device
        self.threads = threads
        self.faiss_use_heap = faiss_use_heap
        self.triton_plan = triton_plan
        self.code_size = code_bytes(self.bits)
        dtype, self._n_words, _ = word_layout(self.code_size)
        self._words: np.ndarray = np.zeros((self._n_words, 0), dtype)  # word-major (W, n): the kernel's layout
        self._idmap = IdMap()
        self._derived: Any = None  # faiss index or torch tensor, rebuilt lazily after add()

    @property
    def codes(self) -> np.ndarray:
        """The items' packed codes, (ntotal, code_size) ``uint8``, in id order."""
        rows = np.ascontiguousarray(self._words.T).view(np.uint8)
        return np.ascontiguousarray(rows[:, : self.code_size])

    @property
    def ids(self) -> np.ndarray:
        """The items' ids in position order (ascending)."""
        return self._idmap.ids if self._idmap.ids is not None else np.arange(self.ntotal, dtype=np.int64)

    @property
    def bytes_per_item(self) -> int:
        """Bytes of code per item in the search layout (codes padded to a 4-byte multiple)."""
        return int(self._words.dtype.itemsize * self._n_words)

    def add(self, codes: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Append packed codes, (n, ceil(bits/8)) ``uint8``; ``ids`` optional unique non-negative ints."""
        rows = check_codes(codes, self.bits, "HammingIndex.add")
        order = self._idmap.merge(len(rows), ids)
        new = np.ascontiguousarray(to_words(rows).T)
        words = np.concatenate([self._words, new], axis=1)
        if order is not None:
            words = words[:, order]
        self._words = np.ascontiguousarray(words)
        self._derived = None

    # ------------------------------------------------------------------------------------ search
    def search(self, query_codes: np.ndarray, k: int, exclude: Exclude = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items of every query: ``(distances, ids)``, int arrays of shape (queries, k).

        Rows are sorted by distance, ties by lower id, and padded with distance -1 and id -1 where
        fewer than ``k`` items remain. ``exclude`` (a scipy sparse matrix of queries x item ids, or a
        list of id arrays, one per query) removes items from each query's candidates.
        """
        q = check_codes(query_codes, self.bits, "HammingIndex.search")
        k = check_k(k)
        ex = exclusion_csr(exclude, len(q), self._idmap)
        n = self.ntotal
        kk = min(k, n)
        if n == 0 or len(q) == 0:
            return no_results(len(q), k, -1, np.int32)
        if self.backend == "own":
            d, pos = self._search_own(q, kk, ex)
        elif self.backend == "faiss":
            d, pos = self._search_faiss(q, kk, ex)
        elif self.backend == "triton":
            d, pos = self.triton_items().search(q, kk, ex)
        else:
            d, pos = self._search_torch(q, kk, ex)
        d, pos = pad_columns(d, pos, k, -1)
        return d, self._idmap.to_ids(pos)

    def _search_own(
        self, q: np.ndarray, k: int, ex: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        import numba

        from hashgnn.index import _kernels

        qw = np.ascontiguousarray(to_words(q))
        threads = self.threads or numba.get_num_threads()
        qblock, chunk, shards, sample = _kernel_plan(
            len(q), self.ntotal, k, self._n_words, self._words.dtype.itemsize, threads
        )
        out_d = np.empty((len(q), k), np.int32)
        out_i = np.empty((len(q), k), np.int64)
        empty = np.zeros(0, np.int64)
        indptr, indices = ex if ex is not None else (empty, empty)
        maxd = self.bytes_per_item * 8
        with numba_threads(self.threads):
            _kernels.hamming_topk(
                self._words, qw, k, indptr, indices, maxd, shards, qblock, chunk, sample, out_d, out_i
            )
        return out_d, out_i

    def _faiss_index(self) -> Any:
        import faiss

        if self._derived is None:
            index = faiss.IndexBinaryFlat(self.code_size * 8)
            index.add(self.codes)
            self._derived = index
        if self.faiss_use_heap is not None:
            self._derived.use_heap = bool(self.faiss_use_heap)
        return self._derived

    def _search_faiss(
        self, q: np.ndarray, k: int, ex: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        index = self._faiss_index()

        def search(qq: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
            with faiss_threads(self.threads):
                d, pos = index.search(qq, fetch)
            d = d.astype(np.int32)
            d[pos < 0] = -1
            return d, pos

        return search_over_fetched(search, q, k, ex, self.ntotal, -1)

    def _search_torch(
        self, q: np.ndarray, k: int, ex: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        from hashgnn.index.torch_search import TorchHammingItems

        if self._derived is None:
            self._derived = TorchHammingItems(self.codes, self.device)
        return self._derived.search(q, k, ex)

    def triton_items(self) -> TritonHammingItems:
        """The codes resident on ``device`` for the triton backend (built on first use after ``add``)."""
        from hashgnn.index.triton_hamming import TritonHammingItems

        if self._derived is None:
            self._derived = TritonHammingItems(self.codes, self.code_size * 8, self.device, self.triton_plan)
        return self._derived

    # -------------------------------------------------------------------------------- save / load
    def save(self, path: str | Path) -> None:
        """Write the index to folder ``path``: ``index.json``, ``codes.npy`` and (if given) ``ids.npy``."""
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        write_npy(d / "codes.npy", self.codes)
        if self._idmap.ids is not None:
            write_npy(d / "ids.npy", self._idmap.ids)
        elif (d / "ids.npy").exists():
            (d / "ids.npy").unlink()
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "bits": self.bits,
            "ntotal": self.ntotal,
            "code_size": self.code_size,
            "bit_order": "numpy.packbits big-endian",
            "has_ids": self._idmap.ids is not None,
        }
        write_json(d / "index.json", header)

    @classmethod
    def load(cls, path: str | Path, backend: str = "auto", **kwargs: Any) -> HammingIndex:
        """Read an index written by :meth:`save` (never unpickles); options as in the constructor."""
        d = Path(path)
        head = d / "index.json"
        if not head.exists():
            raise HashgnnError(f"{d}: no index.json; not a folder written by HammingIndex.save")
        try:
            header = json.loads(head.read_text())
        except json.JSONDecodeError as e:
            raise HashgnnError(f"{head}: not valid JSON ({e})") from None
        if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
            raise HashgnnError(f"{head}: not a HammingIndex of format version {FORMAT_VERSION}")
        index = cls(int(header["bits"]), backend, **kwargs)
        codes = _load_npy(d / "codes.npy")
        ids = _load_npy(d / "ids.npy") if header.get("has_ids") else None
        if len(codes) != header["ntotal"]:
            raise HashgnnError(f"{head}: ntotal {header['ntotal']} but codes.npy has {len(codes)} rows; corrupt index")
        index.add(codes, ids)
        return index


def check_triton_device(device: str) -> None:
    """HashgnnError unless the triton backend can run on ``device``: triton importable, and CUDA
    available for a CUDA device, or Triton's interpreter (``TRITON_INTERPRET=1``) for the CPU."""
    import importlib.util
    import os

    if importlib.util.find_spec("triton") is None:
        raise HashgnnError(
            "backend='triton' needs the triton package (CUDA builds of torch bring it; otherwise "
            "pip install 'hashgnn[gpu]'); use backend='torch' or 'own' without it"
        )
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise HashgnnError(f"backend='triton': {device!r} is not a torch device; use device='cuda'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HashgnnError(
                "backend='triton' with device='cuda', but torch sees no CUDA GPU (a CPU-only torch build, or "
                "no driver); use backend='own' (the CPU kernel) or 'torch'"
            )
        return
    if dev.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return
    raise HashgnnError(
        f"backend='triton' runs on a CUDA GPU (device='cuda'), got device={device!r}; on CPU it runs only "
        "under Triton's interpreter (TRITON_INTERPRET=1, slow, for tests): use backend='own' for the CPU"
    )


def _load_npy(path: Path) -> np.ndarray:
    return read_npy(path, remedy="the index folder is damaged; save the index again")
