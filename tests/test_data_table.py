"""Interaction tables (CSV / TSV / Parquet): id mapping, ratings, time, and every kind of bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hashgnn.cli import main
from hashgnn.config import DataConfig
from hashgnn.data import load_interactions
from hashgnn.errors import ConfigError, DataError, DataWarning


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the ``hashgnn`` entry point in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def pairs(data, m) -> set[tuple[object, object]]:
    """The (original user id, original item id) pairs of matrix ``m``."""
    r, c = m.nonzero()
    return {(data.user_ids[u].item(), data.item_ids[i].item()) for u, i in zip(r, c, strict=True)}


def test_string_ids_are_mapped_and_the_mapping_kept(tmp_path: Path) -> None:
    p = tmp_path / "log.csv"
    p.write_text("user,item\nbob,x\nalice,y\nbob,y\nalice,z\ncarol,x\nalice,x\nbob,z\n")
    data = load_interactions(DataConfig(dataset=str(p), split="random", test_fraction=0.4, seed=1))
    assert data.name == "log"
    assert data.user_ids.tolist() == ["alice", "bob", "carol"]
    assert data.item_ids.tolist() == ["x", "y", "z"]
    assert data.user_ids.dtype.kind == "U"  # saveable with numpy, no pickle
    everything = pairs(data, data.train) | pairs(data, data.test)
    assert everything == {
        ("bob", "x"),
        ("alice", "y"),
        ("bob", "y"),
        ("alice", "z"),
        ("carol", "x"),
        ("alice", "x"),
        ("bob", "z"),
    }
    assert not pairs(data, data.train) & pairs(data, data.test)
    # round(3 * 0.4) = 1 test item for alice and bob; carol keeps her single item in train
    assert np.diff(data.test.indptr).tolist() == [1, 1, 0]


def test_integer_ids_keep_numeric_order_and_loo_uses_row_order(tmp_path: Path) -> None:
    p = tmp_path / "log.tsv"
    p.write_text("item\tuser\n10\t2\n9\t10\n10\t10\n")
    data = load_interactions(DataConfig(dataset=str(p), split="loo"))
    assert data.user_ids.tolist() == [2, 10] and data.item_ids.tolist() == [9, 10]
    assert data.user_ids.dtype == np.int64
    assert pairs(data, data.test) == {(10, 10)}  # user 10's last row; user 2 has one row: train
    assert pairs(data, data.train) == {(2, 10), (10, 9)}
    assert data.meta["loo_order"] == "row"


def test_rating_threshold_and_temporal_split(tmp_path: Path) -> None:
    p = tmp_path / "ratings.csv"
    p.write_text(
        "uid,iid,stars,when\n"
        "1,a,5,2021-01-03\n1,b,2,2021-01-01\n1,c,4,2021-01-02\n1,d,5,2021-01-04\n"
        "1,e,4.5,2021-01-05\n2,a,4,2021-02-01\n2,c,3,2021-01-01\n3,d,5,2020-01-01\n"
        "4,e,5,2020-01-01\n"
    )
    cfg = DataConfig(
        dataset=str(p),
        user_col="uid",
        item_col="iid",
        rating_col="stars",
        min_rating=4,
        time_col="when",
        split="temporal",
        test_fraction=0.5,
    )
    data = load_interactions(cfg)
    assert data.meta["n_below_min_rating"] == 2
    # user 1 keeps a(01-03), c(01-02), d(01-04), e(01-05): the last round(4 * .5) = 2 by time go to test;
    # users 2, 3, 4 have one positive each, which stays in train
    assert pairs(data, data.test) == {(1, "d"), (1, "e")}
    assert pairs(data, data.train) == {(1, "a"), (1, "c"), (2, "a"), (3, "d"), (4, "e")}


def test_duplicates_keep_the_earliest_and_are_counted(tmp_path: Path) -> None:
    p = tmp_path / "log.csv"
    p.write_text("user,item,t\nu,a,5\nu,b,1\nu,a,2\nu,c,3\nv,a,1\nv,a,1\nw,c,0\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_interactions(DataConfig(dataset=str(p), time_col="t", split="loo"))
    msgs = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any("log.csv: dropped 2 duplicate interaction(s)" in m for m in msgs)
    assert data.meta["n_duplicates"] == 2
    # u's (u, a) counts at its earliest time 2, so the last by time is c (3); v and w have one item
    assert pairs(data, data.test) == {("u", "c")}
    assert pairs(data, data.train) == {("u", "a"), ("u", "b"), ("v", "a"), ("w", "c")}


def test_parquet_with_mixed_columns(tmp_path: Path) -> None:
    p = tmp_path / "log.parquet"
    frame = pd.DataFrame({"user": [5, 5, 7, 7, 7], "item": ["a", "b", "a", "b", "c"], "other": range(5)})
    frame.to_parquet(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # a test item may be unseen; counted in meta
        data = load_interactions(DataConfig(dataset=str(p), split="random", test_fraction=0.34, seed=3))
    assert data.user_ids.tolist() == [5, 7] and data.item_ids.tolist() == ["a", "b", "c"]
    assert data.train.nnz + data.test.nnz + data.meta["n_test_unseen_dropped"] == 5


def test_bom_and_windows_line_endings_in_a_table(tmp_path: Path) -> None:
    p = tmp_path / "log.csv"
    p.write_bytes("\ufeffuser,item\r\nu,a\r\n\r\nu,b\r\nv,a\r\n".encode("utf-8"))
    with pytest.warns(DataWarning, match=r"dropped 1 test interaction"):
        data = load_interactions(DataConfig(dataset=str(p), split="loo"))
    assert data.user_ids.tolist() == ["u", "v"] and data.item_ids.tolist() == ["a", "b"]
    # u's last row (u, b) goes to test, where item b is unseen in train and dropped
    assert pairs(data, data.train) == {("u", "a"), ("v", "a")} and data.test.nnz == 0


@pytest.mark.parametrize(
    "name, content, args, line, fragments",
    [
        (
            "cols.csv",
            "usr,itm\n1,2\n",
            [],
            1,
            ["has no column 'user', 'item'", "columns found: ['usr', 'itm']", "--user-col"],
        ),
        ("sep.csv", "user;item\nu;a\n", [], 1, ["separator mismatch", "separator ','", "one column", "--sep ';'"]),
        ("tab.csv", "user\titem\nu\ta\n", [], 1, ["separator mismatch", "--sep '\\t'"]),
        ("emptyid.csv", "user,item\nu,a\n\nv, \n", [], 4, ["empty cell in id column 'item'"]),
        ("emptyuser.tsv", "user\titem\nu\ta\n\tb\n", [], 3, ["empty cell in id column 'user'"]),
        (
            "rating.csv",
            "user,item,r\nu,a,5\nu,b,five\n",
            ["--rating-col", "r"],
            3,
            ["rating 'five' is not a number", "column 'r'"],
        ),
        ("norating.csv", "user,item,r\nu,a,5\nu,b,\n", ["--rating-col", "r"], 3, ["empty rating"]),
        (
            "time.csv",
            "user,item,t\nu,a,1\nu,b,yesterday-ish\n",
            ["--time-col", "t"],
            3,
            ["time 'yesterday-ish' is neither a number nor a date"],
        ),
        ("long.csv", "user,item\nu,a\nv,b,c\n", [], 3, ["Expected 2 fields in line 3, saw 3"]),
        ("long1.csv", "user,item\nu,a,c\nv,b\n", [], 2, ["more fields than the 2 column(s)"]),
        ("empty.csv", "", [], None, ["is empty"]),
        ("header.csv", "user,item\n", [], None, ["has a header line but no rows"]),
        ("binary.csv", b"user,item\n\x00\x01\x02\x03", [], None, ["is not a UTF-8 text file"]),
        ("latin1.csv", "user,item\nren\xe9,a\n".encode("latin-1"), [], None, ["is not a UTF-8 text file"]),
    ],
)
def test_bad_tables(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str | bytes,
    args: list[str],
    line: int | None,
    fragments: list[str],
) -> None:
    p = tmp_path / name
    p.write_bytes(content.encode() if isinstance(content, str) else content)
    code, out, err = run_cli(["data", "info", str(p), *args], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    where = f"{p}, line {line}:" if line is not None else f"{p}:"
    assert err.startswith("error: " + where), err
    for f in fragments:
        assert f in err, (f, err)


def test_bad_parquet_names_row_and_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "log.parquet"
    pd.DataFrame({"user": ["a", None, "b"], "item": ["x", "y", "z"]}).to_parquet(p)
    code, _, err = run_cli(["data", "info", str(p)], capsys)
    assert code == 2 and "log.parquet: row 2: empty cell in id column 'user'" in err
    code, _, err = run_cli(["data", "info", str(p), "--item-col", "thing"], capsys)
    assert code == 2 and "has no column 'thing'; columns found: ['user', 'item']" in err
    fake = tmp_path / "fake.parquet"
    fake.write_text("user,item\n")
    code, _, err = run_cli(["data", "info", str(fake)], capsys)
    assert code == 2 and "fake.parquet: is not a readable Parquet file" in err and "Traceback" not in err


def test_missing_table_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["data", "info", str(tmp_path / "absent.csv")], capsys)
    assert code == 2 and "absent.csv: no such file" in err


def test_option_errors(tmp_path: Path) -> None:
    p = tmp_path / "log.csv"
    p.write_text("user,item\nu,a\nu,b\n")
    with pytest.raises(ConfigError, match="--min-rating needs --rating-col"):
        load_interactions(DataConfig(dataset=str(p), min_rating=3))
    with pytest.raises(ConfigError, match="needs a time column"):
        load_interactions(DataConfig(dataset=str(p), split="temporal"))
    with pytest.raises(ConfigError, match="unknown split 'weird'"):
        load_interactions(DataConfig(dataset=str(p), split="weird"))
    with pytest.raises(ConfigError, match="test_fraction must be between 0 and 1"):
        load_interactions(DataConfig(dataset=str(p), test_fraction=1.5))


def test_unseen_items_after_a_split_warn_or_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Leave-last-one-out by row: u -> "only" (seen nowhere else), v -> b, w -> a.
    p = tmp_path / "log.csv"
    p.write_text("user,item\nu,a\nv,a\nv,b\nw,b\nw,a\nu,only\n")
    with pytest.warns(DataWarning, match=r"dropped 1 test interaction\(s\).*\(0 user\(s\), 1 item\(s\)\)"):
        data = load_interactions(DataConfig(dataset=str(p), split="loo"))
    assert pairs(data, data.test) == {("v", "b"), ("w", "a")}
    assert pairs(data, data.train) == {("u", "a"), ("v", "a"), ("w", "b")}
    with pytest.raises(DataError) as e:
        load_interactions(DataConfig(dataset=str(p), split="loo", strict=True))
    assert "item 'only' never occurs in train" in str(e.value) and e.value.line == 7
    code, _, err = run_cli(["data", "info", str(p), "--split", "loo", "--strict"], capsys)
    assert code == 2 and f"{p}, line 7: test item 'only' never occurs in train" in err


def test_compressed_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import gzip

    p = tmp_path / "log.csv.gz"
    p.write_bytes(gzip.compress(b"user,item\nu,a\nu,b\nv,b\nv,a\n"))
    data = load_interactions(DataConfig(dataset=str(p), split="loo"))
    assert data.name == "log" and pairs(data, data.test) == {("u", "b"), ("v", "a")}
    broken = tmp_path / "broken.tsv.gz"
    broken.write_bytes(b"this is not gzip data")
    code, _, err = run_cli(["data", "info", str(broken)], capsys)
    assert code == 2 and "broken.tsv.gz: cannot be read" in err and "Traceback" not in err
    bad_cell = tmp_path / "cell.csv.gz"
    bad_cell.write_bytes(gzip.compress(b"user,item\nu,a\n,b\n"))
    code, _, err = run_cli(["data", "info", str(bad_cell)], capsys)
    assert code == 2 and "cell.csv.gz: row 2: empty cell in id column 'user'" in err


def test_info_prints_a_table_and_carves_validation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "log.csv"
    rows = [f"u{u},i{(u * 7 + k) % 13}" for u in range(20) for k in range(10)]
    p.write_text("user,item\n" + "\n".join(rows) + "\n")
    code, out, _ = run_cli(["data", "info", str(p), "--valid-fraction", "0.25", "--json"], capsys)
    stats = json.loads(out)
    assert code == 0 and stats["n_users"] == 20 and stats["n_items"] == 13
    # 10 per user: 2 to test, then round(8 * 0.25) = 2 of the remaining 8 to valid
    assert (stats["n_train"], stats["n_test"], stats["n_valid"]) == (120, 40, 40)
    code, out, _ = run_cli(["data", "info", str(p)], capsys)
    assert code == 0 and "n_users" in out and "20" in out
