"""Top-k recommendations for the users of a finished run, in any of its retrieval modes.

A run folder holds the codes and vectors of every user and item (:mod:`hashgnn.codes.artifacts`) and
its ``config.yaml``; the items a user already interacted with come from the full train split of the
run's data (``hashgnn.data.load_interactions(cfg.data).train``) and are excluded.

Modes and their ``score``:

- ``hamming``: items by Hamming distance of codes; score ``<h_u, h_i> = K - 2 * Hamming``.
- ``hierarchical``: the top-C by Hamming, re-ranked by ``<z_u, z_i>``; score the inner product.
- ``continuous``: exact inner product of the continuous vectors ``<z_u, z_i>``.
- ``weighted`` (runs with query vectors against their item codes, ``distill.query_weight``): items
  by a weighted Hamming distance from the query's signs, weighted by its quantised magnitudes; score
  ``sum_d w_d - 2 * distance``, the quantised query's inner product with the item's +-1 code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from hashgnn.codes.artifacts import RunCodes
from hashgnn.codes.query_weights import DEFAULT_PLANES, DEFAULT_STEP, quantise_queries
from hashgnn.errors import HashgnnError
from hashgnn.io import WriteError
from hashgnn.methods import ALL_MODES, MODES, QUERY_MODES
from hashgnn.run import Run

COLUMNS = ("user", "rank", "item", "score")


@dataclass
class Recommendations:
    """Top-k lists of some users: ``items``/``scores`` of shape (users, k), padded with -1 / -inf.

    ``users`` and ``items`` are indices (0..n-1); ``user_ids``/``item_ids`` map them to the ids of
    the source data where the run recorded them.
    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    mode: str
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None

    def to_frame(self) -> Any:
        """Long table: one row per (user, rank) with columns user, rank, item, score (original ids)."""
        import pandas as pd

        k = self.items.shape[1]
        valid = self.items >= 0
        rows, ranks = np.nonzero(valid)
        users = self.users[rows]
        items = self.items[rows, ranks]
        return pd.DataFrame(
            {
                "user": self.user_ids[users] if self.user_ids is not None else users,
                "rank": (ranks + 1).astype(np.int32) if k else ranks,
                "item": self.item_ids[items] if self.item_ids is not None else items,
                "score": self.scores[rows, ranks].astype(np.float32),
            }
        )


class Recommender:
    """A run's artifacts loaded once, with the index of one mode built; answers batches of users.

    Args:
        run_dir: the run folder (or a :class:`hashgnn.run.Run`).
        mode: ``hamming`` | ``hierarchical`` | ``continuous`` | ``weighted`` (runs with query vectors).
        candidates: C of hierarchical search (default: the run's ``eval.candidates``).
        exclude_seen: drop each user's training items (needs the run's data set).
        threads: search threads (None: the libraries' default).
        mirror, cache_dir: where the run's data set is read (None: the environment's), for
            ``exclude_seen``; never taken from the run folder.
    """

    def __init__(
        self,
        run_dir: str | Path | Run,
        mode: str = "hamming",
        candidates: int | None = None,
        exclude_seen: bool = True,
        threads: int | None = None,
        *,
        mirror: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        if mode not in ALL_MODES:
            raise HashgnnError(f"unknown mode {mode!r}; choose one of {', '.join(ALL_MODES)}")
        if isinstance(run_dir, Run):
            run = run_dir
        elif (Path(run_dir) / Run.CONFIG).exists():  # validated; the data comes from this machine's mirror
            run = Run.load(run_dir, mirror=mirror, cache_dir=cache_dir)
        else:  # a folder without its config can still serve with exclude_seen=False
            run = Run(run_dir)
        self.run, self.run_dir, self.mode = run, run.path, mode
        self.codes: RunCodes = run.codes
        has_cfg = run.file(Run.CONFIG).exists()
        self.candidates = int(
            candidates if candidates is not None else (run.config.eval.candidates if has_cfg else 500)
        )
        if mode == "hierarchical" and not 1 <= self.candidates <= self.codes.n_items:
            raise HashgnnError(
                f"candidates must be between 1 and the number of items ({self.codes.n_items}), got {self.candidates}"
            )
        self.seen: sp.csr_matrix | None = None
        if exclude_seen:
            if not has_cfg:
                raise HashgnnError(
                    f"{run.file(Run.CONFIG)}: missing, so the users' training items are unknown; "
                    "pass exclude_seen=False (--include-seen) to recommend without excluding them"
                )
            train = run.data().train
            self.seen = sp.csr_matrix(train)
        self.index = self._build(threads)

    def _build(self, threads: int | None) -> Any:
        self.retriever = Retriever(self.codes, self.mode, self.candidates, threads)
        return self.retriever.index

    def user_indices(self, users: Sequence[Any] | np.ndarray, by_original_id: bool = False) -> np.ndarray:
        """Validate users given as indices (or as the source data's ids) and return indices."""
        n = self.codes.n_users
        if by_original_id:
            ids = self.codes.user_ids
            if ids is None:
                raise HashgnnError(
                    f"{self.run_dir}: the run records no original user ids; give user indices 0..{n - 1}"
                )
            want = np.asarray(users).astype(ids.dtype)
            order = np.argsort(ids, kind="stable")
            at = np.minimum(np.searchsorted(ids[order], want), len(ids) - 1)
            found = ids[order][at] == want
            if not found.all():
                raise HashgnnError(f"unknown original user id(s) {want[~found][:5].tolist()} in run {self.run_dir}")
            return order[at].astype(np.int64)
        try:
            u = np.asarray(users, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise HashgnnError(f"users must be integer indices 0..{n - 1}, got {users!r}") from None
        bad = (u < 0) | (u >= n)
        if bad.any():
            raise HashgnnError(f"user index {int(u[bad][0])} is out of range: the run has {n} users (0..{n - 1})")
        return u

    def topk(self, users: np.ndarray, k: int) -> Recommendations:
        """Top-``k`` items of user indices ``users``."""
        c = self.codes
        if not 1 <= k <= c.n_items:
            raise HashgnnError(f"k must be between 1 and the number of items ({c.n_items}), got {k}")
        ex = self.seen[users] if self.seen is not None else None
        scores, items = self.retriever.search(users, k, ex)
        return Recommendations(users, items, scores, self.mode, c.user_ids, c.item_ids)

    def batches(self, k: int, batch_users: int = 4096, progress: bool = True) -> Iterator[Recommendations]:
        """Top-``k`` of every user, ``batch_users`` at a time (bounded memory), with a progress bar."""
        from hashgnn.progress import progress_bar

        n = self.codes.n_users
        with progress_bar(n, f"recommend ({self.mode})", "user", enabled=progress) as bar:
            for u0 in range(0, n, batch_users):
                users = np.arange(u0, min(u0 + batch_users, n), dtype=np.int64)
                yield self.topk(users, k)
                bar.update(len(users))


def modes_of(codes: RunCodes) -> tuple[str, ...]:
    """The retrieval modes ``codes`` can serve: :data:`~hashgnn.methods.MODES`, and the query modes
    (weighted) when the run trained query vectors against its item codes."""
    return ALL_MODES if item_vectors_are_the_codes(codes) else MODES


def build_index(
    codes: RunCodes,
    mode: str,
    candidates: int = 500,
    threads: int | None = None,
    planes: int = DEFAULT_PLANES,
) -> Any:
    """The index of the items of ``codes`` in ``mode``: HammingIndex, HierarchicalIndex, FloatIndex,
    AsymmetricIndex for continuous mode when the item vectors are the codes themselves, or
    WeightedHammingIndex (``planes`` bits per weight) for weighted mode."""
    from hashgnn.index.float_index import FloatIndex
    from hashgnn.index.hamming import HammingIndex
    from hashgnn.index.hierarchical import HierarchicalIndex

    if mode not in ALL_MODES:
        raise HashgnnError(f"unknown mode {mode!r}; choose one of {', '.join(ALL_MODES)}")
    c = codes
    index: Any
    if mode in QUERY_MODES:
        if not item_vectors_are_the_codes(c):
            raise HashgnnError(
                f"{mode} mode needs a run whose continuous vectors are query vectors against its item codes "
                f"(trained with distill.query_weight > 0); this run serves {', '.join(MODES)}"
            )
        from hashgnn.index.weighted import WeightedHammingIndex

        index = WeightedHammingIndex(c.bits, planes, threads=threads)
        index.add(c.item_codes)
    elif mode == "hamming":
        index = HammingIndex(c.bits, threads=threads)
        index.add(c.item_codes)
    elif mode == "hierarchical":
        index = HierarchicalIndex(c.bits, c.item_z.shape[1], candidates, threads=threads)
        index.add(c.item_codes, c.item_z)
    elif item_vectors_are_the_codes(c):
        # query vectors against the item codes (distill.query_weight): the same scores from 8 bytes
        # an item instead of 4 per dimension, and the same tie order (by position)
        from hashgnn.index.asymmetric import AsymmetricIndex

        index = AsymmetricIndex(c.bits, threads=threads)
        index.add(c.item_codes)
    else:
        # the torch backend's top-k orders exact ties by id, as the other two modes do
        index = FloatIndex(c.item_z.shape[1], "torch", threads=threads)
        index.add(c.item_z)
    return index


def item_vectors_are_the_codes(codes: RunCodes) -> bool:
    """True when the items' continuous vectors are their codes as +-1 (a run that trained query
    vectors against its item codes, ``distill.query_weight``), so the codes alone serve the
    continuous mode (:class:`~hashgnn.index.AsymmetricIndex`)."""
    from hashgnn.codes.packing import pack_codes

    z = codes.item_z
    if z.ndim != 2 or z.shape[1] != codes.bits or not bool(np.all(np.abs(z) == 1.0)):
        return False
    return bool(np.array_equal(pack_codes(z), codes.item_codes))


class Retriever:
    """The one retrieval path of a run's codes: the index of ``mode`` over the items, queried with the
    users' codes / vectors. Recommendations and every evaluation metric come from :meth:`search`.

    Scores: ``<h_u, h_i> = K - 2 * Hamming`` (hamming), the inner product of the vectors
    (hierarchical, continuous), the inner product of the quantised query with the item's +-1 code,
    ``sum_d w_d - 2 * weighted Hamming`` (weighted; ``planes`` and ``step`` of
    :func:`hashgnn.codes.query_weights.quantise_queries`). Order: score descending, ties in the
    run's tie order (``codes.item_order``: the more popular item first in runs trained since it
    exists) or, without one, to the lower item index.
    """

    def __init__(
        self,
        codes: RunCodes,
        mode: str = "hamming",
        candidates: int = 500,
        threads: int | None = None,
        *,
        planes: int = DEFAULT_PLANES,
        step: float = DEFAULT_STEP,
    ) -> None:
        self.codes, self.mode, self.candidates = codes, mode, int(candidates)
        self.planes, self.step = planes, step
        self.order = codes.item_order
        if self.order is None:
            self.index = build_index(codes, mode, self.candidates, threads, planes)
        else:
            # Index position p holds item order[p], so the indexes' "ties to the lower position" is
            # the run's tie rule; positions are mapped back to items on the way out.
            self.position = np.empty_like(self.order)
            self.position[self.order] = np.arange(len(self.order))
            placed = dataclasses.replace(
                codes, item_codes=codes.item_codes[self.order], item_z=codes.item_z[self.order]
            )
            self.index = build_index(placed, mode, self.candidates, threads, planes)

    def search(self, users: np.ndarray, k: int, exclude: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores float32, items int64)`` of shape (len(users), k) for user indices ``users``;
        ``exclude`` (CSR rows aligned with ``users``, or None) lists items never to return."""
        c = self.codes
        return self.query(c.user_codes[users], c.user_z[users], k, exclude)

    def query(
        self, codes: np.ndarray, vectors: np.ndarray, k: int, exclude: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for query codes (packed, (q, ceil(K/8))) and vectors ((q, D)) given directly:
        users folded in at serving time, or an item's own code for its similar items. ``exclude``
        as in :meth:`search` (CSR rows or one id array per query)."""
        c = self.codes
        if self.order is not None and exclude is not None:
            if sp.issparse(exclude):
                ex = sp.csr_matrix(exclude)
                exclude = sp.csr_matrix((ex.data, self.position[ex.indices], ex.indptr), shape=ex.shape)
            else:  # one array of item indices per query (hashgnn.serve)
                exclude = [self.position[np.asarray(e, dtype=np.int64)] for e in exclude]
        if self.mode == "hamming":
            d, items = self.index.search(codes, k, exclude=exclude)
            scores = np.where(items >= 0, c.bits - 2 * d.astype(np.float32), -np.inf).astype(np.float32)
        elif self.mode == "hierarchical":
            scores, items = self.index.search(codes, vectors, k, exclude=exclude)
        elif self.mode == "weighted":
            wq = quantise_queries(vectors, self.planes, self.step)
            d, items = self.index.search(wq.codes, wq.weights, k, exclude=exclude)
            total = wq.weights.sum(axis=1, dtype=np.float32)[:, None]
            scores = np.where(items >= 0, total - 2 * d.astype(np.float32), -np.inf).astype(np.float32)
        else:
            scores, items = self.index.search(vectors, k, exclude=exclude)
        if self.order is not None:
            items = np.where(items >= 0, self.order[np.maximum(items, 0)], -1)
        return scores, items

    def topk(self, users: np.ndarray, k: int, exclude: Any = None) -> np.ndarray:
        """The items of :meth:`search` alone (the ranking function of :func:`hashgnn.eval.evaluate_ranking`)."""
        return self.search(users, k, exclude)[1]


def recommend(
    run_dir: str | Path | Run,
    users: Sequence[Any] | np.ndarray,
    k: int = 20,
    mode: str = "hamming",
    candidates: int | None = None,
    exclude_seen: bool = True,
    by_original_id: bool = False,
    threads: int | None = None,
    *,
    mirror: str | None = None,
    cache_dir: str | None = None,
) -> Recommendations:
    """Top-``k`` items for ``users`` (indices, or original ids with ``by_original_id``) of a run."""
    rec = Recommender(run_dir, mode, candidates, exclude_seen, threads, mirror=mirror, cache_dir=cache_dir)
    return rec.topk(rec.user_indices(users, by_original_id), k)


def recommend_all(
    run_dir: str | Path | Run,
    out: str | Path,
    k: int = 20,
    mode: str = "hamming",
    candidates: int | None = None,
    exclude_seen: bool = True,
    batch_users: int = 4096,
    threads: int | None = None,
    progress: bool = True,
    *,
    mirror: str | None = None,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Write the top-``k`` of every user to ``out`` (``.parquet`` or ``.csv``), streaming user batches.

    Columns: user, rank (1..k), item, score; original ids where the run has them. Memory stays bounded
    by one batch of results. Returns a summary (rows written, users, seconds, users per second).
    """
    import time

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise HashgnnError(f"{out}: the output must end in .parquet or .csv")
    rec = Recommender(run_dir, mode, candidates, exclude_seen, threads, mirror=mirror, cache_dir=cache_dir)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(out, e) from None
    # A name of its own per process: two `recommend --all` into one folder must not share a temp file.
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    rows = 0
    t0 = time.perf_counter()
    writer = None
    try:
        for i, batch in enumerate(rec.batches(k, batch_users, progress)):
            frame = batch.to_frame()
            rows += len(frame)
            if suffix == ".csv":
                frame.to_csv(tmp, mode="w" if i == 0 else "a", header=i == 0, index=False)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pandas(frame, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
        if writer is not None:
            writer.close()
            writer = None
        if rows == 0 and not tmp.exists():
            import pandas as pd

            frame = pd.DataFrame({c: [] for c in COLUMNS})
            frame.to_csv(tmp, index=False) if suffix == ".csv" else frame.to_parquet(tmp, index=False)
        tmp.replace(out)
    except OSError as e:
        # Full disk, file-size limit, read-only folder: a clear error; a previous `out` is untouched.
        raise WriteError(out, e) from None
    finally:
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.close()
        if tmp.exists():
            tmp.unlink()
    seconds = time.perf_counter() - t0
    n = rec.codes.n_users
    return {
        "out": str(out),
        "rows": rows,
        "users": n,
        "k": k,
        "mode": mode,
        "seconds": round(seconds, 3),
        "users_per_second": round(n / seconds, 1) if seconds > 0 else None,
    }
