"""The runner with a stand-in trainer: skip, resume, error rows, stale folders, reuse, left out, report.

The stand-in writes what ``train_run`` writes (config.yaml, metrics.jsonl, final_metrics.json) with
metrics computed from the config, so every value in the results can be checked exactly; the real
trainer runs in tests/test_experiment_cli.py.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

import hashgnn.experiment.runner as runner
from hashgnn.config import RunConfig
from hashgnn.eval.metrics import metric_keys
from hashgnn.experiment import Selection, load_suite, run_suite, write_report
from hashgnn.experiment.results import read_results
from hashgnn.methods import MODES
from hashgnn.train.lock import RunLock

SUITE = """\
name: {name}
base:
  data: {{dataset: music_toy}}
  train: {{epochs: {epochs}}}
  eval: {{ks: [20, 100]}}
grid:
  methods: [{methods}]
  datasets: [music_toy]
  bits: [8, 16]
  seeds: [1, 2]
settings:
  - {{name: hamming, mode: hamming, metrics: [recall@20, ndcg_legacy@100]}}
  - {{name: continuous, mode: continuous, metrics: [recall@20]}}
report: {{primary: recall@20, plots: [bits, curves], claims: true}}
"""


def value(cfg: RunConfig, mode: str, key: str) -> float:
    """The stand-in's metric: a function of the config, so the results can be checked exactly."""
    k = int(key.rsplit("@", 1)[1])
    m = ["hashgnn", "hash_ste", "continuous", "lsh"].index(cfg.model.method)
    return (cfg.model.bits + cfg.train.seed + 10 * m) / 1000 * (1 + (mode == "continuous")) * k / 20


class FakeTrainer:
    """Records calls; writes a finished run folder like train_run / resume_run do."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.trained: list[str] = []
        self.resumed: list[str] = []
        self.fail = fail or set()

    def _finish(self, cfg: RunConfig, out: Path) -> dict[str, Any]:
        if cfg.model.method in self.fail:
            raise RuntimeError(f"boom in {cfg.model.method}")
        ks = cfg.eval.ks
        test = {mode: {**{key: value(cfg, mode, key) for key in metric_keys(ks)}, "n_users": 10} for mode in MODES}
        (out / "metrics.jsonl").write_text(
            "".join(
                json.dumps({"epoch": e, "beta": e / cfg.train.epochs, "valid_recall@20": 0.01 * e}) + "\n"
                for e in range(cfg.train.epochs)
            )
        )
        final = {
            "method": cfg.model.method,
            "encoder": cfg.model.encoder,
            "dataset": cfg.data.dataset,
            "bits": cfg.model.bits,
            "seed": cfg.train.seed,
            "epochs_run": cfg.train.epochs,
            "best_epoch": 0,
            "train_seconds": 1.5,
            "seconds_per_epoch": 0.5,
            "test": test,
            "baseline_popular": dict.fromkeys(metric_keys(ks), 0.05),
        }
        (out / "final_metrics.json").write_text(json.dumps(final))
        return final

    def train(self, cfg: RunConfig, out: Path, progress: bool = True) -> dict[str, Any]:
        out = Path(out)
        assert not (out / "config.yaml").exists()
        out.mkdir(parents=True, exist_ok=True)
        self.trained.append(str(out))
        cfg.save(out / "config.yaml")
        return self._finish(cfg, out)

    def resume(self, run_dir: Path, progress: bool = True, **machine: Any) -> dict[str, Any]:
        self.resumed.append(str(run_dir))
        return self._finish(RunConfig.load(Path(run_dir) / "config.yaml"), Path(run_dir))


def suite_file(tmp_path: Path, name: str = "s", methods: str = "hashgnn, continuous", epochs: int = 3) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(SUITE.format(name=name, methods=methods, epochs=epochs))
    return p


def run(suite_path: Path, out: Path, fake: FakeTrainer, **kw: Any):
    return run_suite(load_suite(suite_path), out, progress=False, train=fake.train, resume=fake.resume, **kw)


def test_rows_skip_and_same_results_on_rerun(tmp_path: Path) -> None:
    fake = FakeTrainer()
    out = tmp_path / "out"
    res = run(suite_file(tmp_path), out, fake)
    assert res.count("done") == 8 and len(fake.trained) == 8
    rows = read_results(out / "s" / "results.jsonl")
    assert len(rows) == 8 * 2
    suite = load_suite(suite_file(tmp_path))
    by_id = {p.run_id: p.config for p in suite.points()}
    for r in rows:
        assert r["status"] == "ok"
        cfg = by_id[r["run"]]
        assert (r["method"], r["bits"], r["seed"]) == (cfg.model.method, cfg.model.bits, cfg.train.seed)
        for key in ("recall@20", "ndcg_legacy@100", "recall@100"):
            assert r[key] == pytest.approx(value(cfg, r["mode"], key))
        assert math.isfinite(r["wall_seconds"])
    before = (out / "s" / "results.jsonl").read_text()
    again = run(suite_file(tmp_path), out, fake)
    assert again.count("skipped") == 8 and len(fake.trained) == 8  # nothing trained again
    assert (out / "s" / "results.jsonl").read_text() == before


def test_failed_and_unimplemented_methods_are_error_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "implemented_methods", lambda: {"hashgnn", "continuous", "hash_ste"})
    fake = FakeTrainer(fail={"hash_ste"})
    out = tmp_path / "out"
    res = run(suite_file(tmp_path, methods="hashgnn, hash_ste, lsh"), out, fake)
    assert res.count("done") == 4 and res.count("error") == 8
    rows = read_results(out / "s" / "results.jsonl")
    errs = [r for r in rows if r["status"] == "error"]
    assert {r["method"] for r in errs} == {"hash_ste", "lsh"} and len(errs) == 8 * 2
    lsh = next(r for r in errs if r["method"] == "lsh")
    assert "not implemented" in lsh["error"] and "recall@20" not in lsh
    ste = next(r for r in errs if r["method"] == "hash_ste")
    assert "RuntimeError: boom in hash_ste" in ste["error"]
    assert (out / "s" / ste["run"] / "experiment_error.txt").read_text().startswith("Traceback")
    assert not any("lsh" in t for t in fake.trained)  # never attempted
    report = write_report(
        [load_suite(suite_file(tmp_path, methods="hashgnn, hash_ste, lsh"))],
        out,
        tmp_path / "r.md",
        qps=False,
        progress=False,
    ).read_text()
    assert "### Failed runs" in report and "boom in hash_ste" in report and "not implemented" in report
    # Fixed and rerun: the failed runs had saved their config, so they are resumed; lsh fails again.
    fake.fail = set()
    res = run(suite_file(tmp_path, methods="hashgnn, hash_ste, lsh"), out, fake)
    assert res.count("resumed") == 4 and res.count("skipped") == 4 and res.count("error") == 4
    rows = read_results(out / "s" / "results.jsonl")
    assert {r["method"] for r in rows if r["status"] == "ok"} == {"hashgnn", "hash_ste"}


def killed_run(tmp_path: Path) -> tuple[Any, Any, Path]:
    """(suite, its first grid point, that point's folder) with what a killed train_run leaves behind."""
    suite = load_suite(suite_file(tmp_path))
    p = suite.points()[0]
    folder = tmp_path / "out" / "s" / p.run_id
    folder.mkdir(parents=True)
    p.config.save(folder / "config.yaml")
    return suite, p, folder


def test_interrupted_run_is_resumed(tmp_path: Path) -> None:
    fake = FakeTrainer()
    out = tmp_path / "out"
    _, p, folder = killed_run(tmp_path)
    res = run(suite_file(tmp_path), out, fake)
    assert fake.resumed == [str(folder)] and len(fake.trained) == 7
    assert next(o for o in res.outcomes if o.point.run_id == p.run_id).status == "resumed"


def test_a_killed_attempt_counts_in_the_runs_wall_time(tmp_path: Path) -> None:
    fake = FakeTrainer()
    out = tmp_path / "out"
    suite, _, folder = killed_run(tmp_path)
    # A first attempt that recorded 50 s and was then resumed, ran 600 s more and was killed outright:
    # its last file was written 600 s after it started, and its record still says "running".
    started = time.time() - 1000
    (folder / "metrics.jsonl").write_text("{}\n")
    os.utime(folder / "config.yaml", (started, started))
    os.utime(folder / "metrics.jsonl", (started + 600, started + 600))
    record = {"status": "running", "wall_seconds": 50.0, "attempt_started": started, "killed_attempts": 0}
    (folder / "experiment.json").write_text(json.dumps(record))
    t0 = time.perf_counter()
    run(suite_file(tmp_path), out, fake)
    this_attempt = time.perf_counter() - t0
    info = json.loads((folder / "experiment.json").read_text())
    assert info["status"] == "ok" and info["killed_attempts"] == 1
    assert 650.0 <= info["wall_seconds"] <= 650.0 + this_attempt
    # A run that finished in one attempt records no killed attempt.
    other = json.loads((out / "s" / suite.points()[1].run_id / "experiment.json").read_text())
    assert other["status"] == "ok" and "killed_attempts" not in other and other["wall_seconds"] < this_attempt
    # A folder that another process is training (its lock held) is not taken for a killed attempt.
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "experiment.json").write_text(json.dumps({**record, "attempt_started": time.time() - 100}))
    before = (busy / "experiment.json").read_text()
    with RunLock(busy):
        runner._begin_attempt(busy)
    assert (busy / "experiment.json").read_text() == before
    runner._begin_attempt(busy)  # free now: the earlier attempt is counted as killed
    assert json.loads((busy / "experiment.json").read_text())["killed_attempts"] == 1


def test_folder_of_another_config_is_never_reused_or_overwritten(tmp_path: Path) -> None:
    fake = FakeTrainer()
    out = tmp_path / "out"
    run(suite_file(tmp_path, epochs=3), out, fake)
    res = run(suite_file(tmp_path, epochs=4), out, fake)  # the suite changed since
    assert res.count("error") == 8 and len(fake.trained) == 8
    rows = read_results(out / "s" / "results.jsonl")
    assert all(r["status"] == "error" and "train.epochs: 4 != 3" in r["error"] for r in rows)
    assert RunConfig.load(out / "s" / rows[0]["run"] / "config.yaml").train.epochs == 3


def test_identical_runs_of_another_suite_are_copied(tmp_path: Path) -> None:
    fake = FakeTrainer()
    out = tmp_path / "out"
    run(suite_file(tmp_path, name="a"), out, fake)
    res = run(suite_file(tmp_path, name="b", methods="hashgnn, hash_ste"), out, fake)
    assert res.count("reused") == 4 and res.count("done") == 4 and len(fake.trained) == 12
    rows = {(r["run"], r["setting"]): r for r in read_results(out / "b" / "results.jsonl")}
    r = rows[("music_toy/hashgnn/bits8/seed1", "hamming")]
    assert r["reused_from"] == str(out / "a" / "music_toy/hashgnn/bits8/seed1")
    assert r["recall@20"] == pytest.approx((8 + 1) / 1000)
    res = run(suite_file(tmp_path, name="c", methods="hashgnn"), out, fake, reuse=False)
    assert res.count("done") == 4


def test_selection_leaves_points_out_and_the_report_says_why(tmp_path: Path) -> None:
    fake = FakeTrainer()
    out = tmp_path / "out"
    res = run(suite_file(tmp_path), out, fake, selection=Selection(bits=[8], seeds=[1]))
    assert res.count("done") == 2 and res.count("left_out") == 6
    suite = load_suite(suite_file(tmp_path))
    text = write_report([suite], out, tmp_path / "docs" / "R.md", qps=False, progress=False).read_text()
    assert "2 finished, 0 failed, 6 left out" in text
    assert "not selected (last invocation: --only-bits 8 --seeds 1)" in text
    assert "| music_toy | 16 | hashgnn, continuous | 1, 2 | 4 |" in text
    # Claims are stated from what was measured: continuous is twice hashgnn in the stand-in.
    assert "codes comparable to the continuous counterpart" in text and "**disagrees**" in text
    assert (tmp_path / "docs" / "figures" / "s-curves.png").stat().st_size > 0
    assert "![Validation Recall@20 against epoch (beta below)](figures/s-curves.png)" in text
    # One bits value finished: no line to draw against code length.
    assert not (tmp_path / "docs" / "figures" / "s-bits.png").exists()


@pytest.fixture
def stop_request():
    """Request a stop as the command's SIGTERM handler does; cleared afterwards for the next tests."""
    from hashgnn import interrupt

    yield interrupt.request
    interrupt._requested.clear()


def test_an_error_after_a_stop_request_is_an_interruption(tmp_path: Path, stop_request: Any) -> None:
    # A signal's KeyboardInterrupt can be lost (a destructor swallows it, or a half-imported module
    # fails later with an AttributeError): the run is still recorded as interrupted, not as failed,
    # and the suite stops instead of going on to the next point.
    class LostInterrupt(FakeTrainer):
        def _finish(self, cfg: RunConfig, out: Path) -> dict[str, Any]:
            stop_request()
            raise AttributeError("module 'matplotlib' has no attribute 'get_data_path'")

    fake = LostInterrupt()
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(suite_file(tmp_path), out, fake)
    assert len(fake.trained) == 1
    info = json.loads((Path(fake.trained[0]) / runner.RUN_INFO).read_text())
    assert info["status"] == "interrupted"


def test_a_stop_request_between_runs_stops_the_suite(tmp_path: Path, stop_request: Any) -> None:
    class StopAfterFirst(FakeTrainer):
        def _finish(self, cfg: RunConfig, out: Path) -> dict[str, Any]:
            final = super()._finish(cfg, out)
            stop_request()  # its KeyboardInterrupt was lost after the run had finished
            return final

    fake = StopAfterFirst()
    with pytest.raises(KeyboardInterrupt):
        run(suite_file(tmp_path), tmp_path / "out", fake)
    assert len(fake.trained) == 1
    info = json.loads((Path(fake.trained[0]) / runner.RUN_INFO).read_text())
    assert info["status"] == "ok"
