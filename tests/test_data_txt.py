"""The one-line-per-user reader: accepted variations, every kind of bad input, huge ids."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from hashgnn.cli import main
from hashgnn.config import DataConfig
from hashgnn.data import load_interactions
from hashgnn.data.txt import MAX_ID_SPACE, read_user_lines
from hashgnn.errors import DataError, DataWarning


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the ``hashgnn`` entry point in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def write_folder(root: Path, train: bytes | str, test: bytes | str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in (("train.txt", train), ("test.txt", test)):
        (root / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def reference_pairs(text: str) -> set[tuple[int, int]]:
    """Obviously-correct slow parse, to compare the vectorised reader with."""
    pairs = set()
    for line in text.splitlines():
        tok = line.split()
        pairs.update((int(tok[0]), int(t)) for t in tok[1:])
    return pairs


def dense(m) -> set[tuple[int, int]]:
    r, c = m.nonzero()
    return set(zip(r.tolist(), c.tolist(), strict=True))


def test_basic_counts_follow_max_id_plus_one(tmp_path: Path) -> None:
    d = write_folder(tmp_path / "d", "0 1 2\n1 0\n3 4\n", "0 0\n1 2\n3 1\n")
    data = load_interactions(DataConfig(dataset=str(d)))
    assert (data.n_users, data.n_items) == (4, 5)
    assert dense(data.train) == {(0, 1), (0, 2), (1, 0), (3, 4)}
    # user 3's item 1 and user 0's item 0 were both seen in train (by other users)
    assert dense(data.test) == {(0, 0), (1, 2), (3, 1)}
    assert data.train.dtype == np.float32 and data.train.has_sorted_indices


def test_windows_line_endings_bom_blank_lines_and_empty_users(tmp_path: Path) -> None:
    train = "\ufeff0 1 2\r\n\r\n1 0 \r\n  \r\n2\r\n3 4 1\t2\r\n"
    d = write_folder(tmp_path / "d", train.encode("utf-8"), b"0 0\r\n\r\n1 2\r\n3 1")
    data = load_interactions(DataConfig(dataset=str(d)))
    assert (data.n_users, data.n_items) == (4, 5)
    assert dense(data.train) == {(0, 1), (0, 2), (1, 0), (3, 4), (3, 1), (3, 2)}
    assert dense(data.test) == {(0, 0), (1, 2), (3, 1)}  # (3, 1) is also in train: kept
    assert data.meta["n_test_in_train"] == 1


def test_line_numbers_match_an_editor(tmp_path: Path) -> None:
    p = tmp_path / "train.txt"
    p.write_bytes(b"\xef\xbb\xbf0 1\r\n\r\n2 3 4\r\n")
    lines = read_user_lines(p)
    assert lines.lines.tolist() == [1, 3, 3]
    assert lines.listed_users.tolist() == [0, 2]


def test_vectorised_reader_matches_a_slow_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = []
    for u in rng.permutation(300):
        items = rng.integers(0, 1000, size=rng.integers(0, 30))
        sep = " " if rng.random() < 0.8 else "\t"
        lines.append(sep.join(map(str, [u, *items])) + (" " if rng.random() < 0.2 else ""))
        if rng.random() < 0.1:
            lines.append("")
    text = "\n".join(lines)
    p = tmp_path / "train.txt"
    p.write_text(text)
    got = read_user_lines(p)
    assert set(zip(got.users.tolist(), got.items.tolist(), strict=True)) == reference_pairs(text)
    assert len(got.users) == sum(len(line.split()) - 1 for line in lines if line.split())


@pytest.mark.parametrize(
    "train, line, fragment",
    [
        ("0 1 2\n1 x 3\n", 2, "non-integer id 'x'"),
        ("0 1 2\n\n1 2.5 3\n", 3, "fractional id 2.5"),
        ("0 1 2\n1 -3\n", 2, "negative id -3"),
        ("0 1\n1 2\n2 1e5\n", 3, "non-integer id '1e5'"),
        ("0 1,2\n", 1, "non-integer id '1,2'"),
        ("0 1\n1 2\n2 é\n", 3, "non-integer id 'é'"),
    ],
)
def test_bad_token_names_file_line_and_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], train: str, line: int, fragment: str
) -> None:
    d = write_folder(tmp_path / "d", train, "0 1\n")
    with pytest.raises(DataError) as e:
        load_interactions(str(d))
    assert e.value.line == line and Path(str(e.value.path)).name == "train.txt"
    assert fragment in str(e.value)
    code, out, err = run_cli(["data", "info", str(d)], capsys)
    assert code == 2 and out == ""
    assert f"train.txt, line {line}:" in err and fragment in err and "Traceback" not in err


@pytest.mark.parametrize(
    "content, fragment, line",
    [
        (b"", "is empty", None),
        (b"\n \n\r\n", "has only blank lines", None),
        (b"0 1 2\n1 \x00\x01\x02\xff 3\n", "is not a text file", 2),
        (b"0 1\n\xff\xfe\xfd\n", "is not a text file", 2),
        ("0 1\n".encode("utf-16"), "UTF-16", None),
    ],
)
def test_empty_and_binary_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, fragment: str, line: int | None
) -> None:
    d = write_folder(tmp_path / "d", "0 1\n", content)
    with pytest.raises(DataError) as e:
        load_interactions(str(d))
    assert fragment in str(e.value) and e.value.line == line
    code, _, err = run_cli(["data", "info", str(d)], capsys)
    assert code == 2 and "test.txt" in err and fragment in err and "Traceback" not in err


def test_missing_file_in_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "train.txt").write_text("0 1\n")
    code, _, err = run_cli(["data", "info", str(d)], capsys)
    assert code == 2 and "has no test.txt" in err and str(d) in err and "Traceback" not in err


def test_missing_path_and_unknown_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["data", "info", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "neither a registered data set nor an existing folder or file" in err
    other = tmp_path / "data.json"
    other.write_text("{}")
    code, _, err = run_cli(["data", "info", str(other)], capsys)
    assert code == 2 and "data.json" in err and "not a table file" in err


def test_huge_id_is_refused_without_allocating(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write_folder(tmp_path / "d", f"0 1 2\n1 {10**12}\n", "0 1\n")
    with pytest.raises(DataError) as e:
        load_interactions(str(d))
    assert e.value.line == 2 and "too large" in str(e.value) and "table file" in str(e.value)
    # A sparse id space that would fit the absolute bound is still refused (10 distinct ids).
    d2 = write_folder(tmp_path / "d2", f"0 1 2\n{MAX_ID_SPACE // 10} 3\n", "0 1\n")
    with pytest.raises(DataError) as e:
        load_interactions(str(d2))
    assert e.value.line == 2 and "user id" in str(e.value)
    # An id too long for int64 too
    d3 = write_folder(tmp_path / "d3", "0 1\n", "0 " + "9" * 30 + "\n")
    code, _, err = run_cli(["data", "info", str(d3)], capsys)
    assert code == 2 and "test.txt, line 1:" in err and "too large" in err


def test_moderately_large_ids_are_fine(tmp_path: Path) -> None:
    d = write_folder(tmp_path / "d", "0 1 2\n1 999999\n", "0 999999\n")
    data = load_interactions(str(d))
    assert data.n_items == 1_000_000 and data.test.nnz == 1


def test_unseen_test_users_and_items_warn_or_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # user 2 has no train line; item 5 (beyond train's max) and item 3 (inside, never in train) are unseen
    d = write_folder(tmp_path / "d", "0 0 1\n1 1 4\n", "0 4\n1 0 3\n2 1\n0 5\n")
    with pytest.warns(DataWarning, match=r"dropped 3 test interaction\(s\).*\(1 user\(s\), 2 item\(s\)\)"):
        data = load_interactions(str(d))
    assert dense(data.test) == {(0, 4), (1, 0)}
    assert (data.n_users, data.n_items) == (3, 6)
    assert data.meta["n_test_unseen_dropped"] == 3 and data.meta["n_test_raw"] == 5
    with pytest.raises(DataError) as e:
        load_interactions(DataConfig(dataset=str(d), strict=True))
    assert e.value.line == 2 and "item 3 never occurs in train" in str(e.value)
    code, _, err = run_cli(["data", "info", str(d), "--json"], capsys)
    assert code == 0 and "warning:" in err and "dropped 3 test interaction(s)" in err
    code, out, err = run_cli(["data", "info", str(d), "--strict"], capsys)
    assert code == 2 and "test.txt, line 2:" in err and "Traceback" not in err and out == ""


def test_duplicates_are_dropped_and_counted(tmp_path: Path) -> None:
    d = write_folder(tmp_path / "d", "0 1 1 2\n1 0\n1 0 2\n", "0 0\n0 0\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_interactions(str(d))
    msgs = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any("train.txt: dropped 2 duplicate train interaction(s)" in m for m in msgs)
    assert any("test.txt: dropped 1 duplicate test interaction(s)" in m for m in msgs)
    assert data.train.nnz == 4 and data.test.nnz == 1
    assert data.meta["n_train_duplicates"] == 2 and data.meta["n_test_duplicates"] == 1


def test_loader_writes_nothing(tmp_path: Path) -> None:
    d = write_folder(tmp_path / "d", "0 1 2\n1 x\n", "0 1\n")
    before = sorted(p.name for p in d.iterdir())
    with pytest.raises(DataError):
        load_interactions(str(d))
    load_interactions(str(write_folder(d, "0 1 2\n1 1\n", "0 1\n")))
    assert sorted(p.name for p in d.iterdir()) == before
