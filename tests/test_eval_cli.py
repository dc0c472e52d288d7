"""`hashgnn evaluate`: Most-Popular on music_toy from the mirror, `--k 20 50 100`, errors."""

from __future__ import annotations

import json

import pytest
from test_eval_metrics import reference_mean

from hashgnn.cli import main
from hashgnn.cli.evaluate import parse_ks
from hashgnn.config import DataConfig
from hashgnn.errors import ConfigError
from hashgnn.eval import metric_keys


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(["evaluate", *args])
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def test_parse_ks():
    assert parse_ks([20], ["50", "100"]) == [20, 50, 100]
    assert parse_ks([5, 5], []) == [5]
    with pytest.raises(ConfigError, match="only integers may follow --k"):
        parse_ks([20], ["abc"])


def test_popular_music_toy_json_matches_reference(mirror, capsys):
    code, out, _ = run_cli(
        capsys, "--dataset", "music_toy", "--model", "popular", "--k", "20", "50", "100", "--json", "--no-progress"
    )
    assert code == 0
    got = json.loads(out)  # stdout holds nothing but the JSON
    assert set(metric_keys([20, 50, 100])) <= set(got)

    from hashgnn.data import load_interactions

    data = load_interactions(DataConfig(dataset="music_toy"))
    degree = data.train.getnnz(axis=0)
    order = sorted(range(data.n_items), key=lambda i: (-degree[i], i))  # popularity, ties: lower index
    ranked, tests = [], []
    for u in range(data.n_users):  # the slow, obvious reference
        seen = set(data.train[u].indices.tolist())
        ranked.append([i for i in order if i not in seen][:100])
        tests.append(set(data.test[u].indices.tolist()))
    want = reference_mean(ranked, tests, [20, 50, 100], 100)
    assert got["n_users"] == want["n_users"] > 0
    for key in metric_keys([20, 50, 100]):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_table_output(mirror, capsys):
    code, out, err = run_cli(capsys, "--dataset", "music_toy", "--k", "10", "--no-progress")
    assert code == 0
    assert "ndcg_legacy" in out and "@10" in out
    assert "evaluated" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "music_toy", "--k", "20", "abc"], "only integers may follow --k"),
        (["--dataset", "music_toy", "--k", "0"], "positive integer"),
        (["--dataset", "music_toy", "--model", "bpr"], "unknown model"),
        (["--dataset", "music_toy", "--run", "somewhere"], "exactly one of"),
        ([], "exactly one of"),
        (["--run", "somewhere", "--mode", "fast"], "unknown --mode"),
    ],
)
def test_errors_exit_2_without_traceback(capsys, args, message):
    code, _, err = run_cli(capsys, *args, "--no-progress")
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_python_dash_m_runs_the_cli():
    """``python -m hashgnn`` is the same interface as the console script (used on machines where
    the package is on PYTHONPATH but not installed, e.g. bench/gpu_check.sh)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "hashgnn", "train", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0 and "--continuous-weight" in out.stdout and "--max-minutes" in out.stdout
