"""MilvusIndex and `hashgnn export milvus` against the own kernel, on an embedded Milvus 2.3.5 server.

The server is started once for this module (it takes ~20 s and a few hundred MB) in a temporary
folder on loopback, and stopped at the end. `make test` distributes with ``--dist loadfile``, so
the whole module runs on one xdist worker and one server runs per test run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hashgnn.cli import main
from hashgnn.codes.artifacts import RunCodes, save_codes
from hashgnn.codes.packing import pack_codes
from hashgnn.config import RunConfig
from hashgnn.errors import HashgnnError
from hashgnn.index import HammingIndex


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    from hashgnn.index.milvus import start_local_server

    with start_local_server(tmp_path_factory.mktemp("milvus")) as uri:
        yield uri


def assert_same_neighbours(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    """Distances equal everywhere; ids equal wherever the distance is below the row's last one (ties aside)."""
    np.testing.assert_array_equal(got[0], want[0])
    for gd, gi, wi in zip(got[0], got[1], want[1], strict=True):
        last = gd[-1]
        below = (gd >= 0) & (gd < last) if last >= 0 else gd >= 0
        np.testing.assert_array_equal(gi[below], wi[below])
        found = gi[gi >= 0]
        assert len(np.unique(found)) == len(found)  # no item twice


def tie_ids(items: np.ndarray, ids: np.ndarray, query: np.ndarray, distance: int) -> set[int]:
    """Ids of every item at ``distance`` from ``query``."""
    d = np.unpackbits(items ^ query[None, :], axis=1).sum(1)
    return set(ids[d == distance].tolist())


@pytest.mark.parametrize("index_type", ["BIN_FLAT", "BIN_IVF_FLAT"])
def test_search_matches_own_kernel(milvus_uri, index_type):
    from hashgnn.index.milvus import MilvusIndex

    rng = np.random.default_rng(1)
    bits = 60  # not a multiple of 8: stored as 64-bit vectors with zero padding
    signs = rng.random((2500, bits)) < rng.uniform(0.2, 0.8, bits)
    items = pack_codes(np.where(signs, 1.0, -1.0))
    queries = pack_codes(np.where(rng.random((40, bits)) < 0.5, 1.0, -1.0))
    ids = rng.choice(10**6, size=len(items), replace=False).astype(np.int64)
    # nprobe = nlist: the inverted lists are all searched, so BIN_IVF_FLAT is exact too.
    index = MilvusIndex(
        bits, milvus_uri, f"t_{index_type.lower()}", index_type=index_type, nlist=8, nprobe=8, batch=700
    )
    index.add(items, ids)
    assert index.ntotal == len(items)
    own = HammingIndex(bits)
    own.add(items, ids)
    exclude = [rng.choice(ids, size=rng.integers(0, 30), replace=False) for _ in range(len(queries))]
    for k, ex in ((1, None), (25, None), (25, exclude)):
        got = index.search(queries, k, exclude=ex)
        want = own.search(queries, k, exclude=ex)
        assert got[0].shape == got[1].shape == (len(queries), k)
        assert_same_neighbours(got, want)
        for qi in range(len(queries)):
            last = int(got[0][qi, -1])
            at_last = set(got[1][qi][got[0][qi] == last].tolist())
            allowed = tie_ids(items, ids, queries[qi], last) - set(ex[qi].tolist() if ex else [])
            assert at_last <= allowed  # ties: Milvus may pick other items, but at that very distance
            if ex:
                assert not set(got[1][qi].tolist()) & set(ex[qi].tolist())


def test_each_query_fetches_for_its_own_exclusions(milvus_uri, monkeypatch):
    from hashgnn.index.milvus import MilvusIndex

    rng = np.random.default_rng(2)
    items = pack_codes(np.where(rng.random((600, 16)) < 0.5, 1.0, -1.0))
    queries = pack_codes(np.where(rng.random((6, 16)) < 0.5, 1.0, -1.0))
    index = MilvusIndex(16, milvus_uri, "t_fetch")
    index.add(items)
    own = HammingIndex(16)
    own.add(items)
    # one heavy query (300 exclusions) among light ones (0-3)
    exclude = [rng.choice(600, size=n, replace=False) for n in (0, 3, 300, 1, 2, 0)]
    limits: list[tuple[int, int]] = []
    search = index._col.search

    def spy(*args, **kwargs):
        limits.append((len(kwargs["data"]), kwargs["limit"]))
        return search(*args, **kwargs)

    monkeypatch.setattr(index._col, "search", spy)
    got = index.search(queries, 10, exclude=exclude)
    assert_same_neighbours(got, own.search(queries, 10, exclude=exclude))
    for qi, ex in enumerate(exclude):
        assert not set(got[1][qi].tolist()) & set(ex.tolist())
    # 10 + 300 -> 512 for the heavy query alone; the five others share 16 (10 + up to 3, next power of two)
    assert sorted(limits) == [(1, 512), (5, 16)]


@pytest.mark.parametrize("consistency", ["Session", "Strong"])
def test_more_results_than_items_are_padded(milvus_uri, consistency):
    from hashgnn.index.milvus import MilvusIndex

    items = np.arange(10, dtype=np.uint8)[:, None]
    index = MilvusIndex(8, milvus_uri, f"t_small_{consistency.lower()}", consistency=consistency)
    index.add(items)
    d, i = index.search(items[:2], 15)
    assert (d[:, 10:] == -1).all() and (i[:, 10:] == -1).all()
    assert sorted(i[0, :10].tolist()) == list(range(10))
    assert d[0, 0] == 0 and i[0, 0] == 0


def test_export_cli_writes_the_runs_items_with_their_ids(milvus_uri, tmp_path, capsys):
    from hashgnn.index.milvus import MilvusIndex

    rng = np.random.default_rng(0)
    bits, n_users, n_items = 32, 30, 400
    uz = rng.standard_normal((n_users, bits)).astype(np.float32)
    iz = rng.standard_normal((n_items, bits)).astype(np.float32)
    item_ids = np.arange(n_items, dtype=np.int64) * 7 + 1
    codes = RunCodes(bits, pack_codes(uz), pack_codes(iz), uz, iz, item_ids=item_ids)
    save_codes(tmp_path, codes)
    cfg = RunConfig()
    cfg.data.dataset = "music_toy"
    cfg.model.bits = bits
    cfg.save(tmp_path / "config.yaml")
    args = ["export", "milvus", "--run", str(tmp_path), "--uri", milvus_uri, "--collection", "t_run", "--json"]
    args += ["--shards", "2", "--batch", "150"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code in (0, None)
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == n_items and summary["bits"] == bits
    index = MilvusIndex(bits, milvus_uri, "t_run")
    own = HammingIndex(bits)
    own.add(codes.item_codes, item_ids)
    assert_same_neighbours(index.search(codes.user_codes, 10), own.search(codes.user_codes, 10))
    # A second export into the same collection is refused without --overwrite, with a clear message.
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([*args, "--overwrite", "--quiet"])
    assert e.value.code in (0, None)
    assert MilvusIndex(bits, milvus_uri, "t_run").ntotal == n_items


def test_errors(milvus_uri):
    from hashgnn.index.milvus import MilvusIndex

    with pytest.raises(HashgnnError, match="not valid in Milvus"):
        MilvusIndex(64, milvus_uri, "bad-name")
    with pytest.raises(HashgnnError, match="index type"):
        MilvusIndex(64, milvus_uri, "t_x", index_type="HNSW")
    with pytest.raises(HashgnnError, match="consistency level 'strong'"):
        MilvusIndex(64, milvus_uri, "t_x", consistency="strong")
    MilvusIndex(8, milvus_uri, "t_dims").add(np.arange(4, dtype=np.uint8)[:, None])
    with pytest.raises(HashgnnError, match="holds 8-bit vectors"):
        MilvusIndex(16, milvus_uri, "t_dims")
    with pytest.raises(HashgnnError, match="cannot connect"):
        MilvusIndex(8, "http://127.0.0.1:1", "t_dims", timeout=3)
