"""The registered data sets, loaded from the mirror: published counts and a slow reference parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hashgnn.cli import main
from hashgnn.config import DataConfig
from hashgnn.data import list_datasets, load_interactions
from hashgnn.data.registry import REGISTRY
from hashgnn.errors import DataError, DataWarning

REPO = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the ``hashgnn`` entry point in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def slow_pairs(path: Path) -> list[tuple[int, int]]:
    """The obvious line-by-line parse of the one-line-per-user format."""
    out = []
    for line in path.read_text().splitlines():
        tok = [int(t) for t in line.split()]
        out.extend((tok[0], i) for i in tok[1:])
    return out


def matrix_pairs(m) -> set[tuple[int, int]]:
    r, c = m.nonzero()
    return set(zip(r.tolist(), c.tolist(), strict=True))


def test_registry_lists_the_six_data_sets(capsys: pytest.CaptureFixture[str]) -> None:
    assert list_datasets() == ["gowalla", "ml-1m", "music_toy", "lastfm", "yelp2018", "amazon-book"]
    for spec in REGISTRY.values():
        assert spec.base_url.startswith("https://") and spec.base_url.endswith("/")
        assert spec.train_file in spec.files and spec.test_file in spec.files
        for pin in spec.all_files(extras=True).values():  # every file pinned: no trust on first use
            assert (pin.sha256 is not None and len(pin.sha256) == 64 and pin.size > 0) or len(pin.git_blob) == 40
    assert REGISTRY["yelp2018"].files["train.txt"].git_blob == "cda12361055ba448ae4bd1070f6000c16dea8f22"
    code, out, _ = run_cli(["data", "list", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == set(REGISTRY)
    assert rows["amazon-book"]["n_train"] == 2380730 and rows["amazon-book"]["verified"] is True
    assert rows["gowalla"]["verified"] is True


def test_gowalla_counts_in_process(mirror: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["data", "info", "gowalla", "--json", "-q"], capsys)
    stats = json.loads(out)
    assert code == 0 and "warning" not in err
    counts = [stats[k] for k in ("n_users", "n_items", "n_train", "n_test")]
    assert counts == [29858, 40981, 810128, 217242]
    assert stats["density"] == pytest.approx((810128 + 217242) / (29858 * 40981))


def test_gowalla_must_show_command(mirror: Path, tmp_path: Path) -> None:
    """The exact command of the issue, from the repository root, with the relative mirror path."""
    env = {**os.environ, "HASHGNN_DATA_MIRROR": "../shared/data", "HASHGNN_CACHE": str(tmp_path)}
    exe = Path(sys.executable).with_name("hashgnn")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from hashgnn.cli import main; main()"]
    proc = subprocess.run(
        [*cmd, "data", "info", "gowalla", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert [stats[k] for k in ("n_users", "n_items", "n_train", "n_test")] == [29858, 40981, 810128, 217242]
    assert "density" in stats


def test_music_toy_matches_a_slow_reference(mirror: Path) -> None:
    train = slow_pairs(mirror / "music_toy" / "train.txt")
    test = slow_pairs(mirror / "music_toy" / "test.txt")
    assert (len(train), len(test)) == (16180, 4998)  # the published counts
    with pytest.warns(DataWarning, match=r"dropped 527 test interaction"):
        data = load_interactions("music_toy", progress=False)
    assert (data.n_users, data.n_items) == (1872, 3846)
    assert matrix_pairs(data.train) == set(train)
    seen_users = {u for u, _ in train}
    seen_items = {i for _, i in train}
    kept = {(u, i) for u, i in test if u in seen_users and i in seen_items}
    assert matrix_pairs(data.test) == kept
    assert data.meta["n_test_unseen_dropped"] == len(test) - len(kept) == 527
    assert data.meta["n_test_in_train"] == 5  # as the mirror's README says
    with pytest.raises(DataError, match="never occurs in train"):
        load_interactions(DataConfig(dataset="music_toy", strict=True), progress=False)


def test_ml_1m_counts(mirror: Path) -> None:
    with pytest.warns(DataWarning, match=r"dropped 39 test interaction\(s\).*\(0 user\(s\), 31 item\(s\)\)"):
        data = load_interactions("ml-1m", progress=False)
    assert (data.n_users, data.n_items, data.train.nnz) == (6040, 3952, 797758)
    assert data.meta["n_test_raw"] == 202451 and data.test.nnz == 202451 - 39
    # 3,706 items occur in the files (README), 31 of them only in test; the id space is 3,952
    assert len(np.unique(data.train.indices)) == 3706 - 31


def test_lastfm_counts_and_one_based_ids(mirror: Path) -> None:
    import pandas as pd

    with pytest.warns(DataWarning, match="test1.txt: dropped"):
        data = load_interactions("lastfm", progress=False)
    assert (data.n_users, data.n_items, data.train.nnz) == (1892, 4489, 42135)
    assert data.meta["n_test_raw"] == 10533
    ref_train = pd.read_csv(mirror / "lastfm" / "data1.txt", sep="\t", header=None)
    ref_test = pd.read_csv(mirror / "lastfm" / "test1.txt", sep="\t", header=None)
    assert matrix_pairs(data.train) == set(zip(ref_train[0] - 1, ref_train[1] - 1, strict=True))
    seen_u, seen_i = set(ref_train[0]), set(ref_train[1])
    kept = {(u - 1, i - 1) for u, i in zip(ref_test[0], ref_test[1], strict=True) if u in seen_u and i in seen_i}
    assert matrix_pairs(data.test) == kept
    assert data.user_ids[0] == 1 and data.item_ids[-1] == 4489


def test_a_registered_name_written_as_a_path_is_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "gowalla"
    d.mkdir()
    (d / "train.txt").write_text("0 0\n1 1\n")
    (d / "test.txt").write_text("0 1\n")
    monkeypatch.chdir(tmp_path)
    data = load_interactions("./gowalla")
    assert data.meta["source"] == "folder" and data.n_users == 2
