"""`recommend` API and CLI on a fake run folder over music_toy, and `hashgnn bench retrieval`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hashgnn.cli import main
from hashgnn.codes.artifacts import RunCodes, save_codes
from hashgnn.codes.packing import hamming_distance_reference, pack_codes
from hashgnn.config import RunConfig
from hashgnn.data import load_interactions
from hashgnn.errors import HashgnnError
from hashgnn.index.recommend import Recommender, recommend, recommend_all
from hashgnn.methods import MODES

BITS = 32


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `hashgnn ARGS`; (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def train(mirror):
    cfg = RunConfig()
    cfg.data.dataset = "music_toy"
    with warnings.catch_warnings():  # music_toy's test split drops a few unseen items, with a warning
        warnings.simplefilter("ignore")
        return load_interactions(cfg.data, progress=False).train


def make_run(folder: Path, n_users: int, n_items: int, with_ids: bool) -> RunCodes:
    rng = np.random.default_rng(0)
    uz = rng.standard_normal((n_users, BITS)).astype(np.float32)
    iz = rng.standard_normal((n_items, BITS)).astype(np.float32)
    codes = RunCodes(
        BITS,
        pack_codes(uz),
        pack_codes(iz),
        uz,
        iz,
        user_ids=np.array([f"u{i}" for i in range(n_users)]) if with_ids else None,
        item_ids=np.arange(n_items, dtype=np.int64) * 10 + 3 if with_ids else None,
    )
    save_codes(folder, codes)
    cfg = RunConfig()
    cfg.data.dataset = "music_toy"
    cfg.eval.candidates = 50
    cfg.save(folder / "config.yaml")
    return codes


@pytest.fixture(scope="module")
def run(tmp_path_factory, train):
    folder = tmp_path_factory.mktemp("run")
    return folder, make_run(folder, *train.shape, with_ids=False)


def reference(codes: RunCodes, train, users: np.ndarray, k: int, mode: str, c: int = 50):
    """Scores of every item, seen items -inf, sorted with ties to the lower item index."""
    seen = train[users].toarray() > 0
    if mode == "hamming":
        s = BITS - 2.0 * hamming_distance_reference(codes.user_codes[users], codes.item_codes)
    else:
        s = codes.user_z[users].astype(np.float64) @ codes.item_z.T.astype(np.float64)
    if mode == "hierarchical":
        d = np.where(seen, np.inf, hamming_distance_reference(codes.user_codes[users], codes.item_codes))
        cand = np.argsort(d, axis=1, kind="stable")[:, :c]
        keep = np.zeros_like(seen)
        np.put_along_axis(keep, cand, True, 1)
        s = np.where(keep, s, -np.inf)
    s = np.where(seen, -np.inf, s)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, 1)


@pytest.mark.parametrize("mode", MODES)
def test_recommend_matches_reference(run, train, mode):
    folder, codes = run
    users = np.array([0, 5, 17, train.shape[0] - 1])
    rec = recommend(folder, users, k=20, mode=mode)
    want_items, want_scores = reference(codes, train, users, 20, mode)
    np.testing.assert_array_equal(rec.items, want_items)
    np.testing.assert_allclose(rec.scores, want_scores, rtol=1e-5)
    seen = train[users].toarray() > 0
    assert not np.take_along_axis(seen, rec.items, 1).any()


def test_include_seen_and_original_ids(tmp_path, train):
    codes = make_run(tmp_path, *train.shape, with_ids=True)
    rec = recommend(tmp_path, ["u3", "u1"], k=5, by_original_id=True, exclude_seen=False)
    assert rec.users.tolist() == [3, 1]
    d = hamming_distance_reference(codes.user_codes[[3, 1]], codes.item_codes)
    want = np.argsort(d, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(rec.items, want)
    frame = rec.to_frame()
    assert frame["user"].tolist()[:5] == ["u3"] * 5
    assert frame["item"].tolist()[:5] == (want[0] * 10 + 3).tolist()
    with pytest.raises(HashgnnError, match="unknown original user id"):
        recommend(tmp_path, ["nobody"], k=5, by_original_id=True, exclude_seen=False)


def test_recommend_errors(run, tmp_path):
    folder, codes = run
    with pytest.raises(HashgnnError, match="out of range"):
        recommend(folder, [codes.n_users], k=5)
    with pytest.raises(HashgnnError, match="unknown mode"):
        recommend(folder, [0], k=5, mode="lsh")
    with pytest.raises(HashgnnError, match=r"no codes\.json"):
        recommend(tmp_path, [0], k=5)
    with pytest.raises(HashgnnError, match=r"\.parquet or \.csv"):
        recommend_all(folder, tmp_path / "x.txt")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_recommend_all_streams_every_user(run, train, tmp_path, suffix):
    folder, codes = run
    out = tmp_path / f"top{suffix}"
    summary = recommend_all(folder, out, k=7, mode="hamming", batch_users=500, progress=False)
    frame = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(frame.columns) == ["user", "rank", "item", "score"]
    assert summary["rows"] == len(frame) == codes.n_users * 7
    items = frame["item"].to_numpy().reshape(codes.n_users, 7)
    want, _ = reference(codes, train, np.arange(codes.n_users), 7, "hamming")
    np.testing.assert_array_equal(items, want)
    assert frame["rank"].to_numpy().reshape(-1, 7)[0].tolist() == list(range(1, 8))


def test_cli_recommend(run, capsys, tmp_path):
    folder, codes = run
    code, stdout, _ = cli(
        capsys,
        "recommend",
        "--run",
        str(folder),
        "--users",
        "0",
        "5",
        "17",
        "--k",
        "4",
        "--mode",
        "continuous",
        "--json",
    )
    assert code == 0
    out = json.loads(stdout)
    assert [r["user"] for r in out["recommendations"]] == [0, 5, 17]
    want = recommend(folder, [0, 5, 17], k=4, mode="continuous")
    assert [r["items"] for r in out["recommendations"]] == want.items.tolist()

    code, stdout, _ = cli(capsys, "recommend", "--run", str(folder), "--users", "2", "--k", "3")
    assert code == 0 and "hamming" in stdout

    code, stdout, _ = cli(
        capsys,
        "recommend",
        "--run",
        str(folder),
        "--all",
        "--out",
        str(tmp_path / "a.csv"),
        "--k",
        "2",
        "--quiet",
        "--json",
    )
    assert code == 0 and json.loads(stdout)["rows"] == 2 * codes.n_users

    for argv, msg in (
        (["--all"], "--all needs --out"),
        (["--users", "99999"], "out of range"),
        ([], "give --users"),
        (["--users", "1", "--mode", "nope"], "unknown mode"),
    ):
        code, _, err = cli(capsys, "recommend", "--run", str(folder), *argv)
        assert code == 2 and msg in err


def test_cli_bench_retrieval(run, capsys):
    folder, _ = run
    code, stdout, _ = cli(
        capsys,
        "bench",
        "retrieval",
        "--items",
        "3000",
        "--bits",
        "32",
        "--queries",
        "20",
        "--k",
        "10",
        "--candidates",
        "50",
        "--candidates",
        "100",
        "--json",
        "--quiet",
    )
    assert code == 0
    res = json.loads(stdout)
    for key in (
        "own_hamming_qps",
        "faiss_hamming_qps",
        "hierarchical_qps",
        "float_ip_qps",
        "torch_ip_qps",
        "recall_vs_float",
    ):
        assert res[key] > 0, key
    assert set(res["hierarchical"]) == {"50", "100"}
    assert res["faiss_hamming_qps"] == max(res["faiss_hamming_detail"].values())
    assert 0 <= res["recall_vs_float"] <= 1
    assert res["bytes_per_item"]["own_hamming"] == 4 and res["bytes_per_item"]["float_ip"] == 128
    # Codes drawn from a run's bit statistics take the run's code length.
    code, stdout, _ = cli(
        capsys,
        "bench",
        "retrieval",
        "--run",
        str(folder),
        "--items",
        "2000",
        "--queries",
        "5",
        "--k",
        "5",
        "--methods",
        "own,faiss,hnsw",
        "--json",
        "--quiet",
    )
    assert code == 0
    res = json.loads(stdout)
    assert res["bits"] == BITS and "per-bit frequencies" in res["codes"]
    assert "float_ip_qps" not in res
    assert 0 < res["hnsw"]["ef256"]["recall_vs_exact_hamming"] <= 1


def test_recall_at_counts_overlap():
    from hashgnn.index.bench import recall_at

    truth = np.array([[1, 2, 3, 4], [5, 6, -1, -1]])
    found = np.array([[4, 9, 1, 7], [6, -1, -1, -1]])
    assert recall_at(found, truth) == pytest.approx((2 / 4 + 1 / 2) / 2)


def test_tie_aware_recall():
    from hashgnn.index.bench import tie_aware_recall

    exact = np.array([[0, 1, 1, 2], [3, 3, 3, 3], [0, 5, -1, -1]])
    found = np.array([[0, 2, 2, 1], [3, 3, 4, 3], [5, -1, -1, -1]])
    # row 0: 0 and 1 below the k-th distance 2, two at 2 but the exact list has one there -> 3/4
    # row 1: three at the k-th distance 3 -> 3/4; row 2: one of two -> 1/2
    assert tie_aware_recall(found, exact) == pytest.approx((3 / 4 + 3 / 4 + 1 / 2) / 3)


def test_recommender_batches_bound_memory(run):
    folder, codes = run
    rec = Recommender(folder, "hamming")
    sizes = [len(b.users) for b in rec.batches(3, batch_users=1000, progress=False)]
    assert sizes == [1000, codes.n_users - 1000]


def test_recommend_all_temp_file_is_its_own(run, tmp_path):
    # Another process's temporary output (the fixed name older versions used) is never clobbered.
    folder, _ = run
    out = tmp_path / "top.csv"
    other = tmp_path / "top.csv.tmp"
    other.write_text("another process is writing this\n")
    recommend_all(folder, out, k=3, mode="hamming", progress=False)
    assert other.read_text() == "another process is writing this\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["top.csv", "top.csv.tmp"]


@pytest.mark.parametrize("mode", MODES)
def test_retriever_breaks_ties_in_the_runs_item_order(mode: str) -> None:
    """With ``item_order`` every mode returns brute force's ranking: score descending, then the item
    that comes first in the order (here a random permutation), never an excluded item."""
    import scipy.sparse as sp

    from hashgnn.index.recommend import Retriever

    rng = np.random.default_rng(11)
    n_users, n_items, bits = 25, 60, 8  # 8 bits: 9 Hamming levels, so ties everywhere
    uc, ic = rng.choice([-1.0, 1.0], (n_users, bits)), rng.choice([-1.0, 1.0], (n_items, bits))
    uz = rng.integers(-1, 2, (n_users, 3)).astype(np.float32)  # small integers: exact float ties too
    iz = rng.integers(-1, 2, (n_items, 3)).astype(np.float32)
    order = rng.permutation(n_items)
    codes = RunCodes(bits, pack_codes(uc), pack_codes(ic), uz, iz, item_order=order)
    seen = sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))
    rank = np.empty(n_items, np.int64)
    rank[order] = np.arange(n_items)
    k, cand = 10, 30
    got = Retriever(codes, mode, candidates=cand).topk(np.arange(n_users), k, exclude=seen)
    dense = seen.toarray() > 0
    for u in range(n_users):
        ham = uc[u] @ ic.T
        allowed = [i for i in range(n_items) if not dense[u, i]]
        if mode == "hamming":
            want = sorted(allowed, key=lambda i: (-ham[i], rank[i]))[:k]
        elif mode == "continuous":
            want = sorted(allowed, key=lambda i: (-(uz[u] @ iz[i]), rank[i]))[:k]
        else:
            pool = sorted(allowed, key=lambda i: (-ham[i], rank[i]))[:cand]
            want = sorted(pool, key=lambda i: (-(uz[u] @ iz[i]), rank[i]))[:k]
        assert got[u].tolist() == want, (u, mode)
