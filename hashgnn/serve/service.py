"""A run loaded for serving: id maps, the three retrievers, the training items, the fold-in encoder.

:class:`ServedRun` is the synchronous core the HTTP app calls (from its micro-batcher and worker
threads); it can be used from a notebook as it is. Ids in and out are the data set's own ids (the
``user_ids.npy`` / ``item_ids.npy`` of the run; their indices 0..n-1 where the run records none).
Every search goes through :class:`hashgnn.index.recommend.Retriever` (score descending, ties to the
lower item index), so the service returns what ``hashgnn recommend`` returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hashgnn.arrays import unique_ints
from hashgnn.errors import HashgnnError
from hashgnn.methods import QUERY_MODES


class NotFound(HashgnnError):
    """An id the run does not know (HTTP 404)."""


class BadField(HashgnnError):
    """A request field with a value the run cannot serve (HTTP 422); ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class TooLarge(HashgnnError):
    """A list longer than the service accepts (HTTP 413)."""


@dataclass(frozen=True)
class ServeSettings:
    """Limits and tuning of the service (the options of ``hashgnn serve``)."""

    candidates: int | None = None  # C of hierarchical search (None: the run's eval.candidates)
    # Threads per index search. One: a service's parallelism is its batches and workers; a parallel
    # kernel per call pays a thread barrier on every search, and on shared cores waits for descheduled
    # threads (a 41k-item Hamming search took 66 ms with 2 threads against 0.2 ms with 1, measured here
    # under load). None: the libraries' default (all cores).
    threads: int | None = 1
    max_k: int = 1000
    max_list: int = 10_000  # items in an allow / deny / history list
    max_body_bytes: int = 1 << 20
    max_batch: int = 256  # requests per micro-batch
    batch_wait_ms: float = 1.0  # how long the first request of a batch waits for company
    fold_in: bool = True  # build the fold-in encoder at load (needs model.safetensors and the data)
    admin: bool = True  # POST /admin/swap
    mirror: str | None = None
    cache_dir: str | None = None


class _Ids:
    """Original ids <-> indices, vectorised (a sorted copy and searchsorted, no per-id dict)."""

    def __init__(self, ids: np.ndarray | None, n: int, kind: str) -> None:
        self.ids, self.n, self.kind = ids, n, kind
        if ids is not None:
            self.order = np.argsort(ids, kind="stable")
            self.sorted = ids[self.order]
            if ids.dtype.kind in "iu":
                self.bounds = (int(np.iinfo(ids.dtype).min), int(np.iinfo(ids.dtype).max))

    def index(self, values: list[str] | list[Any]) -> np.ndarray:
        """Indices of ``values`` (strings from a request); NotFound names the first unknown ones."""
        vals = [str(v) for v in values]
        if self.ids is None or self.ids.dtype.kind in "iu":
            parsed = np.full(len(vals), -1, np.int64)
            ok = np.zeros(len(vals), bool)
            for j, v in enumerate(vals):  # ids come as text from a URL or JSON; bounded by max_list
                with contextlib.suppress(ValueError, OverflowError):  # not a number, or past int64
                    parsed[j], ok[j] = int(v), True
            if self.ids is None:
                ok &= (parsed >= 0) & (parsed < self.n)
                idx = parsed
            else:
                # past the ids' own width a number is unknown (cast, it would wrap onto a known id)
                ok &= (parsed >= self.bounds[0]) & (parsed <= self.bounds[1])
                want = parsed.astype(self.ids.dtype, copy=False) if ok.all() else np.where(ok, parsed, 0)
                at = np.minimum(np.searchsorted(self.sorted, want), self.n - 1)
                ok &= self.sorted[at] == want
                idx = self.order[at]
        else:
            # the request's own width: casting to the ids' width would cut a longer id into a known one
            want_s = np.asarray(vals, dtype=str) if vals else np.zeros(0, self.ids.dtype)
            at = np.minimum(np.searchsorted(self.sorted, want_s), self.n - 1)
            ok = self.sorted[at] == want_s
            idx = self.order[at]
        if not ok.all():
            bad = [vals[j] for j in np.flatnonzero(~ok)[:5]]
            more = f" and {int((~ok).sum()) - len(bad)} more" if (~ok).sum() > len(bad) else ""
            raise NotFound(f"unknown {self.kind} id(s) {', '.join(repr(b) for b in bad)}{more}")
        return np.asarray(idx, np.int64)

    def index_one(self, value: str) -> int:
        """The index of one id (the hot request's path parameter): :meth:`index` without its arrays."""
        if self.ids is None or self.ids.dtype.kind in "iu":
            try:
                v = int(value)
            except ValueError:
                v = -1
            if self.ids is None:
                if 0 <= v < self.n:
                    return v
            elif self.bounds[0] <= v <= self.bounds[1]:
                at = min(int(np.searchsorted(self.sorted, v)), self.n - 1)
                if self.sorted[at] == v:
                    return int(self.order[at])
            return int(self.index([value])[0])  # raises NotFound with index()'s message
        return int(self.index([value])[0])

    def original(self, idx: np.ndarray) -> list[Any]:
        """The data set's ids of indices ``idx`` as JSON values (int or str)."""
        idx = np.asarray(idx, np.int64)
        if self.ids is None:
            return idx.tolist()
        return self.ids[idx].tolist()

    def examples(self, n: int = 10) -> list[Any]:
        return self.original(np.arange(min(n, self.n)))


class ServedRun:
    """A run folder ready to answer queries in every mode.

    Args:
        path: the run folder (``hashgnn train --out``). A folder without ``config.yaml`` (codes only,
            e.g. the synthetic index of ``hashgnn bench serve``) serves without training items and
            without fold-in.
        settings: limits and tuning (:class:`ServeSettings`).
    """

    def __init__(self, path: str | Path, settings: ServeSettings | None = None) -> None:
        from hashgnn.index.recommend import Retriever, modes_of
        from hashgnn.run import Run

        t0 = time.perf_counter()
        self.settings = s = settings or ServeSettings()
        self.path = Path(path).resolve()
        has_cfg = (self.path / Run.CONFIG).exists()
        if has_cfg:
            run = Run.load(self.path, mirror=s.mirror, cache_dir=s.cache_dir)
        elif (self.path / Run.CODES_HEADER).exists():
            run = Run(self.path)
        else:
            raise HashgnnError(f"{self.path}: not a hashgnn run folder (no {Run.CONFIG}, no {Run.CODES_HEADER})")
        self.run = run
        self.codes = c = run.codes
        self.method = run.method if has_cfg else "unknown"
        self.users = _Ids(c.user_ids, c.n_users, "user")
        self.items = _Ids(c.item_ids, c.n_items, "item")
        self.seen = run.data().train.tocsr() if has_cfg else None
        if self.seen is not None:
            self.seen.sum_duplicates()  # canonical: each row's items sorted and unique (history())
        candidates = s.candidates or (run.config.eval.candidates if has_cfg else 500)
        self.candidates = int(min(candidates, c.n_items))
        self.threads = s.threads
        self.modes = modes_of(c)  # weighted too where the run has query vectors against its item codes
        self.retrievers = {m: Retriever(c, m, self.candidates, self.threads) for m in self.modes}
        self.fold_in_error: str | None = None
        self.folder: Any = None
        if not has_cfg:
            self.fold_in_error = "the run folder has no config.yaml or trained weights, so it cannot encode new users"
        elif s.fold_in:
            from hashgnn.serve.foldin import fold_in_for

            try:
                self.folder = fold_in_for(run)
            except Exception as e:  # the run still serves its trained users; new users get 501 and this reason
                self.fold_in_error = str(e) if isinstance(e, HashgnnError) else f"{type(e).__name__}: {e}"
        else:
            self.fold_in_error = "fold-in is switched off (--no-fold-in)"
        self.run_id = _run_id(self.path)
        self._warm()
        self.load_seconds = time.perf_counter() - t0

    def _warm(self) -> None:
        # the first search compiles (or loads) the numba kernels: pay it before the run is served
        c = self.codes
        for m in self.modes:
            self.search(m, c.item_codes[:1], c.item_z[:1], 1, [np.zeros(0, np.int64)])

    # --------------------------------------------------------------------------- info
    def info(self) -> dict[str, Any]:
        """What the service serves (``GET /v1/info``)."""
        c = self.codes
        return {
            "run_id": self.run_id,
            "path": str(self.path),
            "method": self.method,
            "bits": int(c.bits),
            "n_users": c.n_users,
            "n_items": c.n_items,
            "modes": list(self.modes),
            "candidates": self.candidates,
            "fold_in": self.folder is not None,
            "fold_in_unavailable": self.fold_in_error,
            "has_training_items": self.seen is not None,
            "example_users": self.users.examples(),
            "example_items": self.items.examples(),
            "max_k": self.settings.max_k,
            "max_list": self.settings.max_list,
            "load_seconds": round(self.load_seconds, 3),
        }

    # --------------------------------------------------------------------------- request parts
    def check_mode(self, mode: str) -> str:
        """``mode`` if this run serves it (a query mode needs query vectors), else a 422 naming the field."""
        if mode not in self.modes:
            why = " (weighted needs a run trained with distill.query_weight > 0)" if mode in QUERY_MODES else ""
            raise BadField("mode", f"this run serves the modes {', '.join(self.modes)}, not {mode!r}{why}")
        return mode

    def check_k(self, k: int) -> int:
        if not 1 <= k <= min(self.settings.max_k, self.codes.n_items):
            raise BadField(
                "k",
                f"k must be between 1 and {min(self.settings.max_k, self.codes.n_items)} (the run has {self.codes.n_items} items), got {k}",
            )
        return int(k)

    def item_list(self, values: list[Any] | None, field: str) -> np.ndarray | None:
        """Indices of a request's item list (None stays None); 413 when too long, 404 when unknown."""
        if values is None:
            return None
        if len(values) > self.settings.max_list:
            raise TooLarge(f"{field} has {len(values)} items; at most {self.settings.max_list} are accepted")
        return self.items.index(values)

    def history(self, user: int) -> np.ndarray:
        """The training items of user index ``user``, sorted and unique (empty without the run's data)."""
        if self.seen is None:
            return np.zeros(0, np.int64)
        s = self.seen
        return s.indices[s.indptr[user] : s.indptr[user + 1]].astype(np.int64)

    def user_query(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """The code and vector of a trained user."""
        return self.codes.user_codes[user], self.codes.user_z[user]

    def item_query(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """An item's own code and vector (for its similar items)."""
        return self.codes.item_codes[item], self.codes.item_z[item]

    def fold_in(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Code and vector of a new user from item indices (FoldInUnsupported when unavailable)."""
        from hashgnn.serve.foldin import FoldInUnsupported

        if self.folder is None:
            raise FoldInUnsupported(f"this run cannot fold in new users: {self.fold_in_error}")
        code, z = self.folder.fold_in(items)
        return code, z

    # --------------------------------------------------------------------------- search
    def search(
        self, mode: str, codes: np.ndarray, vectors: np.ndarray, k: int, exclude: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """One index search of a batch of queries (rows of ``codes`` / ``vectors``) in ``mode``."""
        return self.retrievers[mode].query(codes, vectors, k, exclude)

    def search_allowed(
        self, mode: str, code: np.ndarray, vector: np.ndarray, k: int, allowed: np.ndarray, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of one query among the ``allowed`` items only: the same retrieval path over an index
        of those items (built per request; ``allowed`` is bounded by ``max_list``)."""
        from hashgnn.codes.artifacts import RunCodes
        from hashgnn.index.recommend import Retriever

        c = self.codes
        allowed = unique_ints(allowed)
        allowed = allowed[~np.isin(allowed, exclude)]
        r0 = self.retrievers[mode]
        if r0.order is not None:  # the sub-index in the run's tie order, so ties follow the run's rule
            allowed = allowed[np.argsort(r0.position[allowed], kind="stable")]
        out_s = np.full((1, k), -np.inf, np.float32)
        out_i = np.full((1, k), -1, np.int64)
        if len(allowed) == 0:
            return out_s, out_i
        sub = RunCodes(c.bits, c.user_codes[:0], c.item_codes[allowed], c.user_z[:0], c.item_z[allowed])
        r = Retriever(sub, mode, min(self.candidates, len(allowed)), 1)
        kk = min(k, len(allowed))
        s, pos = r.query(code[None, :], vector[None, :], kk, None)
        out_s[:, :kk], out_i[:, :kk] = s, np.where(pos >= 0, allowed[np.maximum(pos, 0)], -1)
        return out_s, out_i


def _run_id(path: Path) -> str:
    """Folder name + a short digest of its config and code header: changes when the run is replaced."""
    h = hashlib.sha256()
    for name in ("config.yaml", "codes.json", "model.safetensors"):
        p = path / name
        if p.exists():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
            if p.suffix != ".safetensors":
                h.update(p.read_bytes())
    return f"{path.name}-{h.hexdigest()[:10]}"
