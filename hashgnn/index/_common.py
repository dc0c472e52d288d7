"""Input checks, exclusion lists and thread settings shared by the indexes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Union

import numpy as np
import scipy.sparse as sp

from hashgnn.arrays import repeat_rows, unique_ints
from hashgnn.errors import HashgnnError

Exclude = Union[sp.spmatrix, sp.sparray, Sequence[np.ndarray], None]


def code_bytes(bits: int) -> int:
    """Bytes of one packed code of ``bits`` bits."""
    return (int(bits) + 7) // 8


def check_bits(bits: int) -> int:
    """``bits`` as a positive int, or a HashgnnError."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) <= 0:
        raise HashgnnError(f"bits must be a positive integer (the code length K), got {bits!r}")
    return int(bits)


def check_codes(codes: object, bits: int, what: str) -> np.ndarray:
    """Validate packed codes: a 2-D ``uint8`` array of ``ceil(bits/8)`` columns; C-contiguous copy."""
    nbytes = code_bytes(bits)
    if not isinstance(codes, np.ndarray):
        raise HashgnnError(
            f"{what}: expected a numpy uint8 array of packed codes, got {type(codes).__name__}; "
            "pack ±1 or real vectors with hashgnn.codes.packing.pack_codes"
        )
    if codes.dtype != np.uint8:
        raise HashgnnError(
            f"{what}: expected packed codes of dtype uint8 ({nbytes} bytes per {bits}-bit code), got "
            f"dtype {codes.dtype}; pack ±1 or real vectors with hashgnn.codes.packing.pack_codes"
        )
    if codes.ndim != 2 or codes.shape[1] != nbytes:
        raise HashgnnError(
            f"{what}: expected shape (n, {nbytes}) for {bits}-bit codes ({nbytes} bytes each), got shape "
            f"{codes.shape}; was the index built with a different number of bits?"
        )
    return np.ascontiguousarray(codes)


def check_vectors(vectors: object, dim: int, what: str) -> np.ndarray:
    """Validate real vectors: 2-D, ``dim`` columns, converted to C-contiguous float32."""
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.shape[1] != dim:
        shape = getattr(vectors, "shape", None)
        raise HashgnnError(
            f"{what}: expected a 2-D float array of shape (n, {dim}), got {type(vectors).__name__} of shape {shape}"
        )
    if not np.issubdtype(vectors.dtype, np.floating):
        raise HashgnnError(f"{what}: expected floating-point vectors, got dtype {vectors.dtype}")
    return np.ascontiguousarray(vectors, dtype=np.float32)


def check_k(k: object) -> int:
    """``k`` as a positive int, or a HashgnnError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) <= 0:
        raise HashgnnError(f"k must be a positive integer (the number of results per query), got {k!r}")
    return int(k)


class IdMap:
    """External ids of an index. Items are kept sorted by id, so position order is id order.

    Without explicit ids the id of an item is its position (insertion order).
    """

    def __init__(self) -> None:
        self.ids: np.ndarray | None = None  # sorted int64, or None for ids == positions
        self.n = 0

    def merge(self, n_new: int, ids: object) -> np.ndarray | None:
        """Record ``n_new`` added items; return the permutation to apply to (old + new) rows, if any."""
        if ids is None:
            if self.ids is not None:
                raise HashgnnError("this index was given explicit ids; pass ids= for every add()")
            self.n += n_new
            return None
        ids = np.asarray(ids)
        if ids.ndim != 1 or len(ids) != n_new or not np.issubdtype(ids.dtype, np.integer):
            raise HashgnnError(
                f"ids must be a 1-D integer array with one id per added code ({n_new}), got "
                f"dtype {ids.dtype} shape {ids.shape}"
            )
        if self.ids is None and self.n > 0:
            raise HashgnnError("this index already holds items without ids; ids= must be given from the first add()")
        ids = ids.astype(np.int64)
        if len(ids) and ids.min() < 0:
            raise HashgnnError("ids must be non-negative (-1 marks a missing result)")
        old = self.ids if self.ids is not None else np.zeros(0, np.int64)
        allids = np.concatenate([old, ids])
        order = np.argsort(allids, kind="stable")
        sorted_ids = allids[order]
        dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
        if len(dup):
            raise HashgnnError(f"duplicate item id {int(sorted_ids[dup[0]])}; ids must be unique")
        self.ids = sorted_ids
        self.n = len(sorted_ids)
        return order

    def to_ids(self, pos: np.ndarray) -> np.ndarray:
        """Map positions (-1 = none) to external ids (-1 stays -1)."""
        if self.ids is None:
            return pos
        out = np.full(pos.shape, -1, np.int64)
        ok = pos >= 0
        out[ok] = self.ids[pos[ok]]
        return out

    def to_positions(self, ids: np.ndarray) -> np.ndarray:
        """Map external ids to positions; ids not in the index become -1."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.ids is None:
            return np.where((ids >= 0) & (ids < self.n), ids, -1)
        if self.n == 0:
            return np.full(ids.shape, -1, np.int64)
        p = np.searchsorted(self.ids, ids)
        p = np.minimum(p, self.n - 1)
        return np.where(self.ids[p] == ids, p, -1)


def exclusion_csr(exclude: Exclude, n_queries: int, idmap: IdMap) -> tuple[np.ndarray, np.ndarray] | None:
    """Normalise ``exclude`` to (indptr, indices) of item positions, sorted and unique per query.

    ``exclude`` is a scipy sparse matrix (queries x item ids; the stored entries are excluded) or a
    sequence with one array of item ids per query. Ids not in the index are ignored. None -> None.
    """
    if exclude is None:
        return None
    if sp.issparse(exclude):
        m = sp.csr_matrix(exclude)
        if m.shape[0] != n_queries:
            raise HashgnnError(
                f"exclude has {m.shape[0]} rows but there are {n_queries} queries; "
                "it must be a (queries x items) matrix"
            )
        m.sum_duplicates()
        lengths = np.diff(m.indptr)
        cols = m.indices.astype(np.int64)
    else:
        try:
            seq = list(exclude)
        except TypeError:
            raise HashgnnError(
                f"exclude must be a scipy sparse matrix or a list of id arrays, got {type(exclude).__name__}"
            ) from None
        if len(seq) != n_queries:
            raise HashgnnError(
                f"exclude has {len(seq)} entries but there are {n_queries} queries; "
                "give one array of item ids per query"
            )
        arrs = [np.asarray(a).reshape(-1) for a in seq]
        lengths = np.fromiter(map(len, arrs), dtype=np.int64, count=len(arrs))
        cols = np.concatenate(arrs).astype(np.int64) if lengths.sum() else np.zeros(0, np.int64)
    rows = repeat_rows(lengths)
    pos = idmap.to_positions(cols)
    keep = pos >= 0
    rows, pos = rows[keep], pos[keep]
    n = max(idmap.n, 1)
    keys = unique_ints(rows * n + pos)  # sorted by (query, position), duplicates gone
    rows = keys // n
    indptr = np.zeros(n_queries + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n_queries), out=indptr[1:])
    return indptr, keys % n


def filter_excluded(
    scores: np.ndarray, pos: np.ndarray, ex: tuple[np.ndarray, np.ndarray], n_items: int, k: int, fill: float | int
) -> tuple[np.ndarray, np.ndarray]:
    """Drop excluded positions from over-fetched results (rows keep their order); first ``k`` columns.

    Vectorised: membership by binary search of (query, position) keys in the sorted exclusion keys,
    then a stable per-row partition of kept entries before dropped ones.
    """
    indptr, indices = ex
    nq = pos.shape[0]
    n = max(n_items, 1)
    ex_rows = repeat_rows(np.diff(indptr))
    ex_keys = ex_rows * n + indices
    keys = np.arange(nq, dtype=np.int64)[:, None] * n + pos
    hit = np.zeros(pos.shape, bool)
    if len(ex_keys):
        at = np.minimum(np.searchsorted(ex_keys, keys), len(ex_keys) - 1)
        hit = ex_keys[at] == keys
    drop = hit | (pos < 0)
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]
    out_s = np.take_along_axis(scores, order, 1)
    out_p = np.take_along_axis(pos, order, 1)
    gone = np.take_along_axis(drop, order, 1)
    out_s = np.where(gone, fill, out_s)
    out_p = np.where(gone, -1, out_p)
    return pad_columns(out_s, out_p, k, fill)  # fewer columns than k were fetched


def search_over_fetched(
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    q: np.ndarray,
    k: int,
    ex: tuple[np.ndarray, np.ndarray] | None,
    n_items: int,
    fill: float | int,
    grouped: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` from a backend that cannot skip excluded items (faiss): fetch more, then filter.

    ``search(queries, fetch)`` returns ``(scores, positions)`` of shape (queries, fetch), ``fill`` / -1
    where it found nothing. ``grouped``: each query fetches ``k`` plus its own number of exclusions,
    rounded up to a power of two so that queries share a few searches, and one heavy user (hundreds
    of training items) no longer makes every query of the batch fetch hundreds (faiss's binary flat
    index, gowalla's exclusions, k = 20: 2.6x the queries/s). Otherwise one search fetches ``k`` plus
    the most exclusions of any query (better where the search is a matrix product, whose cost does
    not grow with the fetch but does with the number of passes over the items).
    """
    if ex is None:
        return search(q, min(k, n_items))
    indptr, indices = ex
    need = np.minimum(n_items, k + np.diff(indptr))
    if grouped:
        fetch = np.minimum(n_items, np.left_shift(1, np.ceil(np.log2(np.maximum(need, 1))).astype(np.int64)))
    else:
        fetch = np.full(len(need), need.max() if len(need) else k)
    out_s: np.ndarray | None = None
    out_p = np.full((len(q), k), -1, np.int64)
    for f in np.unique(fetch):
        rows = np.flatnonzero(fetch == f)
        starts, lengths = indptr[rows], np.diff(indptr)[rows]
        sub_indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=sub_indptr[1:])
        take = repeat_rows(lengths)
        sub_indices = indices[starts[take] + np.arange(len(take)) - sub_indptr[take]]
        s, pos = search(q[rows], int(f))
        s, pos = filter_excluded(s, pos, (sub_indptr, sub_indices), n_items, k, fill)
        if out_s is None:
            out_s = np.full((len(q), k), fill, s.dtype)
        out_s[rows], out_p[rows] = s[:, :k], pos[:, :k]
    assert out_s is not None  # fetch has one entry per query, and there is at least one
    return out_s, out_p


def pad_columns(scores: np.ndarray, pos: np.ndarray, k: int, fill: float | int) -> tuple[np.ndarray, np.ndarray]:
    """Results widened to ``k`` columns: scores padded with ``fill``, positions / ids with -1.

    The one padding rule of every index's ``search`` (an index with fewer than ``k`` items, or
    none, still answers ``k`` columns per query).
    """
    pad = k - pos.shape[1]
    if pad <= 0:
        return scores, pos
    nq = pos.shape[0]
    return (
        np.concatenate([scores, np.full((nq, pad), fill, scores.dtype)], axis=1),
        np.concatenate([pos, np.full((nq, pad), -1, pos.dtype)], axis=1),
    )


def no_results(nq: int, k: int, fill: float | int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """The answer of an empty index (or to no queries): ``(fill, -1)`` in every one of ``k`` columns."""
    return pad_columns(np.zeros((nq, 0), dtype), np.zeros((nq, 0), np.int64), k, fill)


@contextlib.contextmanager
def numba_threads(threads: int | None) -> Iterator[None]:
    """Run numba parallel regions with ``threads`` threads (None: numba's default), then restore."""
    import numba

    from hashgnn.threads import start_numba_threads

    start_numba_threads()  # before any kernel: starting the pool would reset torch's thread count
    if threads is None:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


@contextlib.contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """Run faiss with ``threads`` OpenMP threads (None: unchanged), then restore."""
    import faiss

    if threads is None:
        yield
        return
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


class SizedIndex:
    """What every index shares: its size, counted by its id map (``self._idmap``)."""

    _idmap: IdMap

    @property
    def ntotal(self) -> int:
        """Number of items."""
        return self._idmap.n

    def __len__(self) -> int:
        return self.ntotal


class PackedItems(SizedIndex):
    """Packed item codes in id order with their id map: the storage of an index that searches binary
    item codes with queries of its own kind (:class:`~hashgnn.index.AsymmetricIndex`,
    :class:`~hashgnn.index.WeightedHammingIndex`). ``_derived`` caches what a search builds from the
    codes; :meth:`add` drops it."""

    def _init_items(self, bits: int) -> None:
        self.bits = check_bits(bits)
        self.code_size = code_bytes(self.bits)
        self._codes = np.zeros((0, self.code_size), np.uint8)
        self._idmap = IdMap()
        self._derived: Any = None

    @property
    def codes(self) -> np.ndarray:
        """The items' packed codes, (ntotal, code_size) ``uint8``, in id order."""
        return self._codes

    @property
    def bytes_per_item(self) -> int:
        """Bytes of code per item (as a HammingIndex's codes before padding)."""
        return self.code_size

    def add(self, codes: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Append packed codes, (n, ceil(bits/8)) ``uint8``; ``ids`` optional unique non-negative ints."""
        rows = check_codes(codes, self.bits, f"{type(self).__name__}.add")
        order = self._idmap.merge(len(rows), ids)
        allc = np.concatenate([self._codes, rows])
        self._codes = np.ascontiguousarray(allc[order] if order is not None else allc)
        self._derived = None
