"""Hamming top-k against a Milvus collection: ``MilvusIndex`` and :func:`export_run`.

Milvus (https://milvus.io) serves binary vectors with the HAMMING metric (indexes ``BIN_FLAT``, exact,
and ``BIN_IVF_FLAT``, inverted lists) and shards a collection across the nodes of a cluster. This
module needs the optional extra ``pip install 'hashgnn[milvus]'`` (pymilvus 2.3) and is imported only
when used. For tests and a local default, the ``milvus`` package (2.3.5) starts an embedded
standalone server on loopback: :func:`start_local_server`.

A collection holds one entity per item: ``id`` (INT64 primary key: the data set's own item id when
it is an integer, else the item's index) and ``code`` (BINARY_VECTOR of ``ceil(K/8) * 8`` bits: the
packed code, zero-padded, which leaves every distance unchanged), plus ``item_id`` (VARCHAR) when
the data set's ids are strings.

``MilvusIndex.search`` has :meth:`HammingIndex.search`'s signature and result layout: (distances,
ids), rows sorted by distance, then by id, -1 padded, ``exclude`` by item id. The distances are
exact with ``BIN_FLAT``; which of several items at the k-th distance Milvus returns is its choice,
so ids can differ from the own kernel's only among items at a row's last distance.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from hashgnn.arrays import unique_ints
from hashgnn.errors import HashgnnError
from hashgnn.index._common import Exclude, IdMap, check_bits, check_codes, check_k, code_bytes, exclusion_csr

INDEX_TYPES = ("BIN_FLAT", "BIN_IVF_FLAT")
ID_FIELD, CODE_FIELD, NAME_FIELD = "id", "code", "item_id"
MAX_TOPK = 16384  # Milvus's limit on k (plus over-fetch for exclusions) per search
MAX_NQ = 1024  # queries per search request
CONSISTENCY_LEVELS = ("Session", "Strong", "Bounded", "Eventually")


def _pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError:
        raise HashgnnError(
            "the Milvus backend needs pymilvus: pip install 'hashgnn[milvus]' (pymilvus 2.3, and milvus 2.3.5 "
            "for a local embedded server)"
        ) from None
    return pymilvus


class MilvusIndex:
    """Hamming top-k over a Milvus collection of binary codes, with ``HammingIndex``'s ``search``.

    Args:
        bits: code length K of the codes (the collection stores ``ceil(K/8) * 8`` bits).
        uri: the server, e.g. ``http://127.0.0.1:19530`` (a cluster's proxy; ``https://`` with a token
            for a managed service).
        collection: collection name; created by :meth:`add` if it does not exist.
        token: ``user:password`` or an API key, if the server requires one.
        index_type: ``BIN_FLAT`` (exact) or ``BIN_IVF_FLAT`` (``nlist`` lists, ``nprobe`` probed).
        nlist, nprobe: BIN_IVF_FLAT's lists and lists probed per query.
        batch: rows per insert request.
        shards: shards of a new collection (Milvus spreads them over the cluster's data nodes).
        replicas: in-memory replicas loaded for search (spread over query nodes; needs that many).
        timeout: seconds to wait for the connection.
        consistency: what a search waits for. ``Session`` (default): this client's own inserts are
            seen, and a search of a collection flushed before (every :meth:`add` flushes) starts at
            once. ``Strong`` waits for the server's next time tick, about 200 ms per search request
            on the embedded server (2026-12-06: one query 190-200 ms against 2-3 ms with ``Session``);
            choose it when other clients write to the collection while this one searches.

    Example::

        index = MilvusIndex(64, "http://127.0.0.1:19530", "lastfm_items")
        index.add(item_codes, ids=item_ids)        # batched inserts, then the index is built
        dist, ids = index.search(user_codes, k=20, exclude=seen_by_id)
    """

    def __init__(
        self,
        bits: int,
        uri: str,
        collection: str,
        *,
        token: str | None = None,
        index_type: str = "BIN_FLAT",
        nlist: int = 1024,
        nprobe: int = 16,
        batch: int = 50_000,
        shards: int = 1,
        replicas: int = 1,
        timeout: float = 30.0,
        consistency: str = "Session",
    ) -> None:
        self.bits = check_bits(bits)
        if consistency not in CONSISTENCY_LEVELS:
            raise HashgnnError(
                f"unknown Milvus consistency level {consistency!r}; choose one of {', '.join(CONSISTENCY_LEVELS)}"
            )
        self.consistency = consistency
        if index_type not in INDEX_TYPES:
            raise HashgnnError(f"unknown Milvus index type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
        if not collection or not collection.replace("_", "a").isalnum() or collection[0].isdigit():
            raise HashgnnError(
                f"collection name {collection!r} is not valid in Milvus: use letters, digits and '_', "
                "not starting with a digit"
            )
        self.uri = uri
        self.collection_name = collection
        self.index_type = index_type
        self.nlist = int(nlist)
        self.nprobe = int(nprobe)
        self.batch = int(batch)
        self.shards = int(shards)
        self.replicas = int(replicas)
        self.code_size = code_bytes(self.bits)
        self._alias = f"hashgnn-{uuid.uuid4().hex[:12]}"
        pm = _pymilvus()
        try:
            pm.connections.connect(alias=self._alias, uri=uri, token=token or "", timeout=timeout)
        except Exception as e:  # pymilvus raises its own exception types, all user-facing here
            raise HashgnnError(
                f"cannot connect to Milvus at {uri}: {e}; is the server running (see docs/SCALING.md)?"
            ) from None
        self._col: Any = None
        if pm.utility.has_collection(collection, using=self._alias):
            self._col = pm.Collection(collection, using=self._alias)
            self._check_schema()

    # --------------------------------------------------------------------------------- collection
    def _check_schema(self) -> None:
        fields = {f.name: f for f in self._col.schema.fields}
        code = fields.get(CODE_FIELD)
        if ID_FIELD not in fields or code is None:
            raise HashgnnError(
                f"Milvus collection {self.collection_name!r} has no '{ID_FIELD}' and '{CODE_FIELD}' fields; "
                "it was not written by hashgnn (choose another --collection)"
            )
        dim = int(code.params.get("dim", 0))
        if dim != self.code_size * 8:
            raise HashgnnError(
                f"Milvus collection {self.collection_name!r} holds {dim}-bit vectors, but the codes have "
                f"{self.bits} bits ({self.code_size * 8} stored); use another --collection or --overwrite"
            )

    @property
    def ntotal(self) -> int:
        """Number of entities in the collection (0 if it does not exist yet)."""
        return 0 if self._col is None else int(self._col.num_entities)

    def __len__(self) -> int:
        return self.ntotal

    def drop(self) -> None:
        """Delete the collection and everything in it."""
        pm = _pymilvus()
        if pm.utility.has_collection(self.collection_name, using=self._alias):
            pm.utility.drop_collection(self.collection_name, using=self._alias)
        self._col = None

    def _create(self, with_names: bool) -> None:
        pm = _pymilvus()
        fields = [
            pm.FieldSchema(ID_FIELD, pm.DataType.INT64, is_primary=True, auto_id=False),
            pm.FieldSchema(CODE_FIELD, pm.DataType.BINARY_VECTOR, dim=self.code_size * 8),
        ]
        if with_names:
            fields.append(pm.FieldSchema(NAME_FIELD, pm.DataType.VARCHAR, max_length=512))
        schema = pm.CollectionSchema(fields, description=f"hashgnn {self.bits}-bit item codes")
        self._col = pm.Collection(
            self.collection_name, schema, using=self._alias, consistency_level="Strong", shards_num=self.shards
        )

    def add(
        self,
        codes: np.ndarray,
        ids: np.ndarray | None = None,
        *,
        names: np.ndarray | None = None,
        progress: bool = False,
    ) -> None:
        """Insert packed codes with their ids (default 0..n-1) in batches, then (re)build the index.

        ``names``: the data set's string ids, stored in ``item_id`` beside integer ``ids``.
        """
        rows = check_codes(codes, self.bits, "MilvusIndex.add")
        n = len(rows)
        ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids)
        if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
            raise HashgnnError(
                f"ids must be a 1-D integer array with one id per code ({n}), got {ids.dtype} {ids.shape}"
            )
        if len(unique_ints(ids)) != n:
            raise HashgnnError("ids must be unique (Milvus would keep both entities under one primary key)")
        if self._col is None:
            self._create(names is not None)
        from hashgnn.progress import progress_bar

        with progress_bar(n, "milvus insert", "item", progress) as bar:
            for a in range(0, n, self.batch):
                b = min(n, a + self.batch)
                data: list[Any] = [ids[a:b].astype(np.int64).tolist(), [r.tobytes() for r in rows[a:b]]]
                if names is not None:
                    data.append([str(s) for s in names[a:b]])
                self._col.insert(data)
                bar.update(b - a)
        self._col.flush()
        self.build_index()

    def build_index(self) -> None:
        """(Re)create the collection's index (``index_type``, HAMMING metric) and load it for search."""
        self._col.release()
        if self._col.has_index():
            self._col.drop_index()
        params: dict[str, Any] = {"nlist": self.nlist} if self.index_type == "BIN_IVF_FLAT" else {}
        self._col.create_index(CODE_FIELD, {"index_type": self.index_type, "metric_type": "HAMMING", "params": params})
        self._col.load(replica_number=self.replicas)

    # ------------------------------------------------------------------------------------ search
    def search(self, query_codes: np.ndarray, k: int, exclude: Exclude = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items of every query: ``(distances, ids)``, int arrays of shape (queries, k).

        As :meth:`HammingIndex.search`: rows by distance, then id; -1 padded; ``exclude`` (a scipy
        sparse matrix of queries x item ids, or a list of id arrays, one per query) removes items.
        """
        q = check_codes(query_codes, self.bits, "MilvusIndex.search")
        k = check_k(k)
        nq = len(q)
        out_d = np.full((nq, k), -1, np.int32)
        out_i = np.full((nq, k), -1, np.int64)
        if self._col is None or nq == 0:
            return out_d, out_i
        ex = _exclusions_by_id(exclude, nq)
        # Milvus cannot skip excluded items, so each query asks for k plus its own exclusions, rounded
        # up to a power of two so that queries share a few requests: one heavy user no longer makes
        # every query of the batch fetch hundreds (as in hashgnn.index._common.search_over_fetched).
        need = k + (np.diff(ex[0]) if ex is not None else np.zeros(nq, np.int64))
        if int(need.max()) > MAX_TOPK:
            worst = int(np.argmax(need))
            raise HashgnnError(
                f"k plus query {worst}'s exclusion list ({k} + {int(need[worst]) - k}) passes Milvus's limit of "
                f"{MAX_TOPK} results per query; search fewer results or exclude fewer items per query"
            )
        fetch = need if ex is None else np.left_shift(1, np.ceil(np.log2(need)).astype(np.int64))
        fetch = np.minimum(fetch, MAX_TOPK)
        param: dict[str, Any] = {"metric_type": "HAMMING", "params": {}}
        if self.index_type == "BIN_IVF_FLAT":
            param["params"] = {"nprobe": self.nprobe}
        for limit in np.unique(fetch):
            rows = np.flatnonzero(fetch == limit)
            for a in range(0, len(rows), MAX_NQ):
                chunk = rows[a : a + MAX_NQ]
                res = self._col.search(
                    data=[q[i].tobytes() for i in chunk],
                    anns_field=CODE_FIELD,
                    param=param,
                    limit=int(limit),
                    consistency_level=self.consistency,
                )
                # pymilvus hands back one result object per query; there is no array form to vectorise.
                for qi, hits in zip(chunk, res, strict=True):
                    hid = np.asarray(hits.ids, np.int64)
                    hd = np.rint(np.asarray(hits.distances, np.float64)).astype(np.int32)
                    if ex is not None:
                        lo, hi = ex[0][qi], ex[0][qi + 1]
                        if hi > lo:
                            keep = ~np.isin(hid, ex[1][lo:hi])
                            hid, hd = hid[keep], hd[keep]
                    order = np.lexsort((hid, hd))[:k]
                    out_d[qi, : len(order)] = hd[order]
                    out_i[qi, : len(order)] = hid[order]
        return out_d, out_i


def _exclusions_by_id(exclude: Exclude, nq: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``exclude`` as (indptr, sorted item ids per query), ids taken as they are."""
    if exclude is None:
        return None
    import scipy.sparse as sp

    if sp.issparse(exclude):
        width = int(exclude.shape[1])  # type: ignore[union-attr]
    else:
        arrs = [np.asarray(a).reshape(-1) for a in exclude]
        width = int(max((int(a.max()) for a in arrs if len(a)), default=-1)) + 1
    ids = IdMap()
    ids.n = max(width, 1)  # ids are positions of a corpus of that width: kept as they are
    return exclusion_csr(exclude, nq, ids)


def export_run(
    run: str | Path,
    uri: str,
    collection: str,
    *,
    token: str | None = None,
    index_type: str = "BIN_FLAT",
    nlist: int = 1024,
    batch: int = 50_000,
    shards: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> MilvusIndex:
    """Write a finished run's item codes into a Milvus collection, with the data set's own item ids.

    Integer item ids are the primary keys; string ids are stored in ``item_id`` beside the item's
    index as key. An existing collection is an error unless ``overwrite`` (then it is dropped first).
    """
    from hashgnn.run import Run

    r = Run.load(run)
    codes = r.codes
    index = MilvusIndex(
        codes.bits, uri, collection, token=token, index_type=index_type, nlist=nlist, batch=batch, shards=shards
    )
    if index._col is not None:
        if not overwrite:
            raise HashgnnError(
                f"Milvus collection {collection!r} already exists at {uri} ({index.ntotal} entities); "
                "pass --overwrite to replace it or choose another --collection"
            )
        index.drop()
    item_ids = codes.item_ids
    names = None
    if item_ids is None:
        ids = np.arange(codes.n_items, dtype=np.int64)
    elif np.issubdtype(item_ids.dtype, np.integer):
        ids = item_ids.astype(np.int64)
    else:
        ids, names = np.arange(codes.n_items, dtype=np.int64), item_ids
    index.add(codes.item_codes, ids, names=names, progress=progress)
    return index


@contextmanager
def start_local_server(data_dir: str | Path) -> Iterator[str]:
    """Start the embedded Milvus 2.3.5 standalone server (``pip install milvus==2.3.5``) on loopback.

    Yields its URI; stops the server on exit. Its data, configuration and logs live in ``data_dir``.
    The first start unpacks the server binary into ``data_dir`` and takes ~20 s.
    """
    try:
        from milvus import MilvusServer
    except ImportError:
        raise HashgnnError(
            "the embedded Milvus server needs the milvus package: pip install 'hashgnn[milvus]'"
        ) from None
    server = MilvusServer()
    server.set_base_dir(str(data_dir))
    # The package waits 180 s for the server's health check; a first start on a loaded 2-core machine
    # can come close to that, so allow 5 minutes.
    wait = server.wait_started
    server.wait_started = lambda timeout=300_000: wait(timeout=max(timeout, 300_000))
    try:
        server.start()
    except Exception as e:
        server.stop()
        log = Path(data_dir) / "logs" / "milvus-stderr.log"
        raise HashgnnError(f"the embedded Milvus server did not start: {e}; see {log}") from None
    try:
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()
