"""Synthetic power-law graphs (hashgnn data synth) and the pyarrow fast path of CSV tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hashgnn.config import DataConfig
from hashgnn.data import load_interactions
from hashgnn.data import table as table_mod
from hashgnn.data.synth import synth_graph, write_synth
from hashgnn.data.table import read_table
from hashgnn.errors import ConfigError


def _pairs(u: np.ndarray, i: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(u.tolist(), i.tolist(), strict=True))


def test_exact_count_of_distinct_pairs_int32_and_seeded() -> None:
    u, i = synth_graph(500, 300, 20_000, seed=3)
    assert u.dtype == np.int32 and i.dtype == np.int32 and len(u) == 20_000
    assert len(_pairs(u, i)) == 20_000
    assert u.min() >= 0 and u.max() < 500 and i.min() >= 0 and i.max() < 300
    keys = u.astype(np.int64) * 300 + i
    assert np.all(np.diff(keys) > 0)  # sorted by user, then item
    u2, i2 = synth_graph(500, 300, 20_000, seed=3)
    assert np.array_equal(u, u2) and np.array_equal(i, i2)
    u3, _ = synth_graph(500, 300, 20_000, seed=4)
    assert not np.array_equal(u, u3)


def test_degrees_are_skewed_by_the_exponent() -> None:
    _, i_flat = synth_graph(2000, 1000, 20_000, seed=0, user_exponent=0.0, item_exponent=0.0)
    _, i_skew = synth_graph(2000, 1000, 20_000, seed=0, user_exponent=0.0, item_exponent=1.0)
    flat, skew = np.bincount(i_flat, minlength=1000), np.bincount(i_skew, minlength=1000)
    mean = 20_000 / 1000
    assert flat.max() < 3 * mean  # uniform: Poisson-like around the mean
    assert skew.max() > 20 * mean  # Zipf 1: the head item takes a large share
    top10 = np.sort(skew)[-100:].sum() / skew.sum()
    assert top10 > 0.4  # the top 10% of items hold a large share of the edges


def test_nearly_complete_graph_and_bad_sizes() -> None:
    u, i = synth_graph(5, 4, 20, seed=1, user_exponent=2.0, item_exponent=2.0)
    assert _pairs(u, i) == {(a, b) for a in range(5) for b in range(4)}
    with pytest.raises(ConfigError, match="possible"):
        synth_graph(5, 4, 21)
    with pytest.raises(ConfigError, match="at least 1"):
        synth_graph(0, 4, 1)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_tables_load_back_every_pair(tmp_path: Path, suffix: str) -> None:
    u, i = synth_graph(300, 200, 5000, seed=2)
    (path,) = write_synth(tmp_path / f"g{suffix}", u, i)
    rows = read_table(path)
    assert _pairs(rows.users, rows.items) == _pairs(u, i)
    data = load_interactions(DataConfig(dataset=str(path)), progress=False)
    assert data.train.nnz + data.test.nnz == 5000
    assert data.meta["n_duplicates"] == 0


def test_txt_folder_is_split_per_user_and_loads(tmp_path: Path) -> None:
    u, i = synth_graph(300, 200, 5000, seed=2)
    files = write_synth(tmp_path / "g", u, i, test_fraction=0.2, seed=5)
    assert [f.name for f in files] == ["train.txt", "test.txt"]
    data = load_interactions(DataConfig(dataset=str(tmp_path / "g")), progress=False)
    tr, te = data.train.tocoo(), data.test.tocoo()
    # Every pair lands in train or test (test pairs of items unseen in train are dropped on load).
    got = _pairs(tr.row, tr.col) | _pairs(te.row, te.col)
    assert got <= _pairs(u, i) and len(got) >= 5000 - data.meta["n_test_unseen_dropped"]
    assert 0.15 < data.test.nnz / 5000 < 0.25


def test_fast_csv_reader_matches_the_pandas_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.csv"
    path.write_text("user,item,rating,ts\n7,3,4.5,100\n007,2,1,101\n-2,99,3,102\n5,3,2,103\n")
    fast = read_table(path, rating_col="rating", min_rating=2, time_col="ts")
    monkeypatch.setattr(table_mod, "_read_text_fast", lambda *a, **k: None)
    slow = read_table(path, rating_col="rating", min_rating=2, time_col="ts")
    for name in ("users", "items", "time", "rows"):
        a, b = getattr(fast, name), getattr(slow, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert fast.n_below_min_rating == slow.n_below_min_rating == 1


def test_fast_reader_falls_back_for_string_ids_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("user,item\nalice,x\nbob,y\n")
    assert table_mod._read_text_fast(path, ",", None, ["user", "item"], "user", "item", None) is None
    assert list(read_table(path).users) == ["alice", "bob"]
    bad = tmp_path / "b.csv"
    bad.write_text("user,item\n1,2\n3,\n")
    assert table_mod._read_text_fast(bad, ",", None, ["user", "item"], "user", "item", None) is None


def test_cli_synth(tmp_path: Path) -> None:
    out = tmp_path / "g.csv"
    res = subprocess.run(
        [sys.executable, "-m", "hashgnn", "data", "synth", "--users", "100", "--items", "50", "--edges", "1000"]
        + ["--seed", "1", "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["edges"] == 1000 and info["files"] == [str(out)]
    assert len(read_table(out).users) == 1000
    bad = subprocess.run(
        [sys.executable, "-m", "hashgnn", "data", "synth", "--users", "2", "--items", "2", "--edges", "5"]
        + ["--out", str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert bad.returncode == 2 and "possible" in bad.stderr and "Traceback" not in bad.stderr


def test_split_order_is_lexsorts() -> None:
    """The per-user random split's faster sort gives lexsort's order exactly, with and without ties in r."""
    from hashgnn.data.split import _lexsort_user_then

    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 5000):
        users = rng.integers(0, 50, n)
        for r in (rng.integers(0, 20, n) / 20.0, rng.random(n)):  # ties (position breaks them), none
            want = np.lexsort((r, users)) if n else np.empty(0, np.int64)
            assert np.array_equal(_lexsort_user_then(r, users), want)
