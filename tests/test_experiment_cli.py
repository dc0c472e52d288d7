"""`hashgnn experiment experiments/smoke.yaml` end to end with the real trainer on music_toy.

One module-scoped run of the whole smoke suite (18 tiny runs) is checked for the results file, the
report's structure and figures; then a rerun must train nothing and write the same results, and bad
suite files or filters must be exit-2 errors without a traceback.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from hashgnn.cli import main
from hashgnn.experiment import load_suite, read_results
from hashgnn.methods import names as method_names

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "experiments" / "smoke.yaml"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(["experiment", *map(str, args)])
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, _cache_dir: Path) -> dict[str, Path]:
    """The smoke suite run once through the CLI (module scope: the run is the expensive part)."""
    tmp = tmp_path_factory.mktemp("smoke")
    out, report = tmp / "runs", tmp / "docs" / "REPRODUCTION.md"
    with pytest.raises(SystemExit) as e:
        main(["experiment", str(SMOKE), "--out", str(out), "--report", str(report), "--quiet"])
    assert (e.value.code or 0) == 0
    return {"out": out, "report": report, "results": out / "smoke" / "results.jsonl"}


def test_every_row_has_finite_metrics(smoke: dict[str, Path]) -> None:
    suite = load_suite(SMOKE)
    rows = read_results(smoke["results"])
    assert len(rows) == len(suite.points()) * len(suite.settings)
    assert {(r["run"], r["setting"]) for r in rows} == {
        (p.run_id, s.name) for p in suite.points() for s in suite.settings
    }
    for r in rows:
        assert r["status"] == "ok", r
        setting = next(s for s in suite.settings if s.name == r["setting"])
        for key in setting.metrics:
            assert isinstance(r[key], float) and math.isfinite(r[key]) and 0.0 <= r[key] <= 1.0, (r["run"], key)
        assert r["epochs_run"] == 3 and r["encoder"] == "sage"


def test_report_structure(smoke: dict[str, Path]) -> None:
    text = smoke["report"].read_text()
    suite = load_suite(SMOKE)
    assert text.startswith("# ")
    assert re.search(r"^- Commit: `([0-9a-f]{40}|unknown)", text, re.M)
    assert re.search(r"^- Machine: .+\d+ logical CPUs .*torch threads \d+", text, re.M)
    # Every run of the suite recorded the code and machine that trained it (environment.json).
    n = len(suite.points())
    assert re.search(
        rf"^- Runs trained at: (`[0-9a-f]{{12}}`( with uncommitted changes)?|hashgnn \S+ \(not a git checkout\)) \({n} runs\)$",
        text,
        re.M,
    )
    assert re.search(rf"^- Runs trained on: .+, \d+ usable CPUs, .+ \({n} runs\)$", text, re.M)
    assert "## Suite `smoke`" in text and "- Wall time: " in text
    assert "18 finished, 0 failed, 0 left out" in text
    assert [f"### music_toy, {b} bits" in text for b in suite.bits] == [True] * len(suite.bits)
    # One table per (bits, setting), a header naming the setting's metrics and a row per method.
    tables = re.findall(r"^#### (.+)\n\n(\|.+\|\n\|[-:|]+\|\n(?:\|.*\|\n)+)", text, re.M)
    assert len(tables) == len(suite.bits) * len(suite.settings)
    for title, table in tables:
        setting = next(s for s in suite.settings if s.label == title)
        lines = table.strip().splitlines()
        assert (
            lines[0]
            == "| "
            + " | ".join(["method", "kind", "seeds", *setting.metrics, "epochs", "served epoch", "train time / run"])
            + " |"
        )
        for ln in lines[2:-1]:  # the served (validated) epoch is one of the epochs run
            cells = [c.strip() for c in ln.split("|")[1:-1]]
            if cells[-2] != "–":
                assert 0 <= float(cells[-2]) < float(cells[-3])
        names = [ln.split("|")[1].strip() for ln in lines[2:]]
        plain = [re.sub(r"\*\*(.+)\*\* \(best hashing\)", r"\1", n) for n in names]
        assert plain == [*suite.methods, "most popular"]
        assert sum("(best hashing)" in n for n in names) == 1
        best = next(n for n in names if "(best hashing)" in n)
        assert re.sub(r"\*\*(.+)\*\*.*", r"\1", best) in method_names(hashing=True)
    assert "### The paper's claims against these measurements" in text
    assert "## Summary: the paper's claims" in text
    for fig in ("smoke-bits.png", "smoke-curves.png", "smoke-qps.png"):
        assert f"(figures/{fig})" in text
        assert (smoke["report"].parent / "figures" / fig).read_bytes()[:4] == b"\x89PNG"
    assert (smoke["out"] / "smoke" / "report.md").exists()


def test_rerun_trains_nothing_and_writes_the_same_results(
    smoke: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashgnn.train.run as run_mod

    def refuse(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(run_mod, "train_run", refuse)
    monkeypatch.setattr(run_mod, "resume_run", refuse)
    before = smoke["results"].read_text()
    code, out, err = cli(capsys, SMOKE, "--out", smoke["out"], "--json", "--quiet")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["suites"][0]["counts"]["skipped"] == 18 and summary["failed_runs"] == 0
    assert smoke["results"].read_text() == before


def test_bad_suite_key_is_exit_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = SMOKE.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("  seeds: [1]\n", "  seeds: [1]\n  seed: [2]\n"))
    line = bad.read_text().splitlines().index("  seed: [2]") + 1
    code, out, err = cli(capsys, bad, "--out", tmp_path / "runs")
    assert code == 2 and out == ""
    assert err.startswith(f"error: {bad}, line {line}: unknown key 'seed' in grid")
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_bad_filter_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, SMOKE, "--out", tmp_path / "runs", "--only-bits", "12")
    assert code == 2 and "--only-bits 12: not in the grid" in err and "Traceback" not in err
    code, _, err = cli(capsys, SMOKE, "--out", tmp_path / "runs", "--seeds", "one")
    assert code == 2 and "--seeds takes integers" in err


def test_dry_run_lists_the_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, SMOKE, "--out", tmp_path / "runs", "--dry-run", "--only-methods", "hashgnn,mf")
    assert code == 0
    lines = [ln.split("\t") for ln in out.strip().splitlines()]
    assert len(lines) == 18
    assert sum(state == "to run" for _, _, state in lines) == 4
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)


def test_sigterm_is_recorded_as_an_interrupted_invocation(tmp_path: Path, mirror: Path, _cache_dir: Path) -> None:
    """`kill PID` (SIGTERM) stops a suite like Ctrl-C: exit 130, the invocation and the run in
    progress are recorded as interrupted, and the same command would resume it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "runs"
    env = {**os.environ, "HASHGNN_DATA_MIRROR": str(mirror), "HASHGNN_CACHE": str(_cache_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hashgnn", "experiment", str(SMOKE), "--out", str(out), "--quiet", "--no-qps"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("smoke/*/*/*/*/config.yaml")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(out.glob("smoke/*/*/*/*/config.yaml")), "no run started within 120 s"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    rows = [json.loads(x) for x in (out / "smoke" / "invocations.jsonl").read_text().splitlines()]
    assert rows[-1]["state"] == "interrupted"


def test_reports_name_this_projects_methods_as_not_the_papers() -> None:
    """Every table says which rows are the paper's methods and which are this project's own."""
    from hashgnn.experiment.report import _ours
    from hashgnn.methods import METHOD_NAMES, get_method

    assert _ours("spectral_distill") and _ours("spectral")
    paper = [m for m in METHOD_NAMES if get_method(m).role in ("method", "ablation", "baseline")]
    assert "hashgnn" in paper and not any(_ours(m) for m in paper)
