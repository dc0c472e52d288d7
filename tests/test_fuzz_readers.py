"""Every reader of a user's or a run's file, fed random bytes, truncated files and wrong encodings.

Whatever the bytes, a reader either returns or raises :class:`~hashgnn.errors.HashgnnError` whose
message names the file; never another exception (a traceback on the command line), never a hang
(each call is timed: a few seconds at most).
"""

from __future__ import annotations

import gzip
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashgnn.config import RunConfig
from hashgnn.data.features import read_feature_table
from hashgnn.data.load import load_interactions, load_one_based_pairs
from hashgnn.data.table import read_table
from hashgnn.data.txt import read_user_lines
from hashgnn.errors import HashgnnError
from hashgnn.experiment.suite import load_suite
from hashgnn.io import read_json, read_npy
from hashgnn.train.checkpoint import latest_checkpoint

SECONDS = 5.0
FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def _parquet_bytes() -> bytes:
    buf = io.BytesIO()
    pd.DataFrame({"user": [1, 2, 2, 3], "item": ["a", "b", "c", "a"]}).to_parquet(buf, index=False)
    return buf.getvalue()


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(64, dtype=np.uint8).reshape(8, 8))
    return buf.getvalue()


# name of the file, valid content to truncate / re-encode, reader(path)
READERS: dict[str, tuple[str, bytes, Callable[[Path], Any]]] = {
    "txt": ("train.txt", b"0 1 2 3\n1 2 5\n2 0\n", read_user_lines),
    "csv": ("t.csv", b"user,item,rating\n1,a,5\n2,b,3\n", lambda p: read_table(p, rating_col="rating")),
    "tsv": ("t.tsv", b"user\titem\n1\ta\n2\tb\n", read_table),
    "csv.gz": ("t.csv.gz", gzip.compress(b"user,item\n1,a\n2,b\n"), read_table),
    "parquet": ("t.parquet", _parquet_bytes(), read_table),
    "table-load": ("t.csv", b"user,item\n1,a\n1,b\n2,a\n2,b\n", lambda p: load_interactions(str(p), progress=False)),
    "lastfm": ("data1.txt", b"1\t1\t10\n2\t3\t4\n", lambda p: load_one_based_pairs(p, p, "x")),
    "json": ("final_metrics.json", b'{"test": {}}', read_json),
    "npy": ("codes.npy", _npy_bytes(), lambda p: read_npy(p, kinds="u", ndim=2)),
    "config": ("config.yaml", yaml.safe_dump(RunConfig().to_dict(), sort_keys=False).encode(), RunConfig.load),
    "suite": ("suite.yaml", (Path(__file__).parents[1] / "experiments" / "smoke.yaml").read_bytes(), load_suite),
    "recbole-inter": (
        "d.inter",
        b"user_id:token\titem_id:token\trating:float\nu1\ti1\t4\nu1\ti2\t3\nu2\ti1\t5\nu2\ti2\t1\n",
        lambda p: load_interactions(str(p), progress=False),
    ),
    "recbole-item": (
        "d.item",
        b"item_id:token\tgenre:token_seq\tprice:float\ni1\tA B\t2.5\ni2\tB\t\n",
        lambda p: read_feature_table(p, "item", None, np.array(["i1", "i2"]), 2),
    ),
    "features-csv": (
        "f.csv",
        b"item,price,brand\ni1,2,x\ni2,3,y\n",
        lambda p: read_feature_table(p, "item", None, np.array(["i1", "i2"]), 2),
    ),
    "checkpoint-pointer": ("checkpoint.json", b'{"latest": "ckpt-0001", "epoch": 1}', None),
}


def _call(kind: str, folder: Path, data: bytes) -> None:
    name, _, reader = READERS[kind]
    path = folder / name
    path.write_bytes(data)
    start = time.monotonic()
    message = ""
    try:
        if reader is None:
            latest_checkpoint(folder)
        else:
            reader(path)
    except HashgnnError as e:
        message = str(e)
    assert not message or name in message or str(folder) in message, f"{kind}: the error does not name the file"
    elapsed = time.monotonic() - start
    assert elapsed < SECONDS, f"{kind}: {elapsed:.1f} s on {len(data)} bytes"


@pytest.mark.parametrize("kind", sorted(READERS))
@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes(kind: str, data: bytes, tmp_path: Path) -> None:
    _call(kind, tmp_path, data)


@pytest.mark.parametrize("kind", sorted(READERS))
@FUZZ
@given(cut=st.floats(0.0, 1.0), noise=st.binary(max_size=16))
def test_truncated_files(kind: str, cut: float, noise: bytes, tmp_path: Path) -> None:
    good = READERS[kind][1]
    _call(kind, tmp_path, good[: int(len(good) * cut)] + noise)


@pytest.mark.parametrize("kind", sorted(READERS))
@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "latin-1"])
def test_wrong_encodings(kind: str, encoding: str, tmp_path: Path) -> None:
    good = READERS[kind][1]
    try:
        text = good.decode("utf-8")
    except UnicodeDecodeError:
        pytest.skip("a binary format")
    _call(kind, tmp_path, (text + "é").encode(encoding))


def test_the_valid_samples_are_read(tmp_path: Path) -> None:
    """The samples the fuzzers cut are themselves valid, so truncation tests start from a good file."""
    for kind in (
        "txt",
        "csv",
        "tsv",
        "parquet",
        "json",
        "npy",
        "suite",
        "lastfm",
        "config",
        "table-load",
        "recbole-inter",
        "recbole-item",
        "features-csv",
    ):
        name, good, reader = READERS[kind]
        (tmp_path / name).write_bytes(good)
        assert reader is not None
        reader(tmp_path / name)
    json.loads(READERS["checkpoint-pointer"][1])
