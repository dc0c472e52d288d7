"""End-to-end runs: artifacts, config round trip, re-evaluation, resume after a real kill, NaN guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny import tiny

from hashgnn.codes.artifacts import load_codes
from hashgnn.codes.packing import pack_codes
from hashgnn.config import RunConfig
from hashgnn.errors import HashgnnError
from hashgnn.methods import MODES
from hashgnn.run import Run
from hashgnn.train.checkpoint import latest_checkpoint
from hashgnn.train.run import evaluate_run, resume_run, train_run

TINY = tiny("sage")


def tiny_config(**sections: dict) -> RunConfig:
    d = json.loads(json.dumps(TINY))
    for name, values in sections.items():
        d[name].update(values)
    return RunConfig.from_dict(d)


def test_run_folder_holds_everything(tmp_path: Path) -> None:
    run = tmp_path / "run"
    final = train_run(tiny_config(), run, progress=False)
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "final_metrics.json",
        "model.safetensors",
        "codes.json",
        "user_codes.npy",
        "item_codes.npy",
        "user_z.npy",
        "item_z.npy",
        "training.png",
    ):
        assert (run / name).exists(), name
    # Saved as it ran, less where it ran: mirror, cache, device and threads belong to the machine.
    saved = RunConfig.load(run / "config.yaml")
    assert saved == tiny_config().portable() and saved != tiny_config()
    assert (saved.data.mirror, saved.data.cache_dir, saved.train.device, saved.train.threads) == (
        None,
        None,
        "auto",
        None,
    )
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert all("valid_recall@20" in r and np.isfinite(r["loss"]) for r in rows)
    codes = load_codes(run)
    assert codes.user_codes.dtype == np.uint8 and codes.user_codes.shape == (codes.n_users, 2)
    assert codes.bits == 16 and codes.user_z.shape == (codes.n_users, 16)
    # The saved codes are exactly the signs of the saved continuous vectors.
    np.testing.assert_array_equal(codes.item_codes, pack_codes(codes.item_z))
    for mode in MODES:
        m = final["test"][mode]
        assert all(np.isfinite(v) for v in m.values())
        again = evaluate_run(run, mode=mode, progress=False)
        for k in ("recall@20", "ndcg@50", "ndcg_legacy@50"):
            assert again[k] == pytest.approx(m[k], abs=1e-12)
    assert final["baseline_popular"]["recall@20"] > 0


def test_existing_run_is_not_overwritten(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_run(tiny_config(train={"epochs": 1}), run, progress=False)
    with pytest.raises(HashgnnError, match="already holds a run"):
        train_run(tiny_config(train={"epochs": 1}), run, progress=False)


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    a = train_run(tiny_config(train={"epochs": 2}), tmp_path / "a", progress=False)
    b = train_run(tiny_config(train={"epochs": 2}), tmp_path / "b", progress=False)
    assert a["test"] == b["test"]
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "item_z.npy"), np.load(tmp_path / "b" / "item_z.npy"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashgnn.train.loop as loop

    real = loop.train_epoch

    def poisoned(model, optimizer, train, train_cfg, epoch, generator, **kw):
        if epoch == 1:
            orig = model.loss

            def nan_loss(*a, **k):
                loss, parts = orig(*a, **k)
                return loss * float("nan"), parts

            monkeypatch.setattr(model, "loss", nan_loss)
        return real(model, optimizer, train, train_cfg, epoch, generator, **kw)

    monkeypatch.setattr(loop, "train_epoch", poisoned)
    run = tmp_path / "run"
    with pytest.raises(HashgnnError, match="nan"):
        train_run(tiny_config(), run, progress=False)
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and json.loads((ckpt / "state.json").read_text())["epoch"] == 0


def _hashgnn(*args: str) -> list[str]:
    return [sys.executable, "-c", "from hashgnn.cli import main; main()", *args]


def test_resume_after_kill_matches_uninterrupted_run(tmp_path: Path) -> None:
    cfg = tiny_config(train={"epochs": 6})
    cfg_path = tmp_path / "cfg.yaml"
    cfg.save(cfg_path)
    full = train_run(cfg, tmp_path / "full", progress=False)

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        _hashgnn("train", "--config", str(cfg_path), "--out", str(run), "--quiet"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        ckpt = latest_checkpoint(run) if (run / "checkpoint.json").exists() else None
        if ckpt is not None and json.loads((run / "checkpoint.json").read_text())["epoch"] >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed: " + proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "final_metrics.json").exists()

    out = subprocess.run(
        _hashgnn("train", "--resume", str(run), "--quiet", "--json"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    resumed = json.loads(out.stdout)
    assert resumed["test"] == full["test"]
    rows = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(6))
    # The folder says which code and machine trained it: one record for the start, one for the resume.
    records = Run(run).environment
    assert [r["event"] for r in records] == ["train", "resume"]
    for r in records:
        assert r["hashgnn"] and r["cpu"] and r["usable_cpus"] >= 1 and r["torch"].startswith("2.")
        assert r["commit"] is None or len(r["commit"]) == 40
    assert [r["event"] for r in Run(tmp_path / "full").environment] == ["train"]


def test_a_finished_run_extended_matches_a_run_started_with_the_larger_budget(tmp_path: Path) -> None:
    longer = train_run(tiny_config(train={"epochs": 5}), tmp_path / "longer", progress=False)
    run = tmp_path / "run"
    train_run(tiny_config(train={"epochs": 3}), run, progress=False)
    with pytest.raises(HashgnnError, match="3 epochs are trained already; --epochs must be larger than 3"):
        resume_run(run, progress=False, epochs=2)
    # --threads 1 as the first run trained: another thread count sums floats in another order.
    out = subprocess.run(
        _hashgnn("train", "--resume", str(run), "--epochs", "5", "--threads", "1", "--quiet", "--json"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    # Every epoch is validated (eval_every 1), so the old last epoch's validation is one the
    # longer run also made: the runs are the same run, bit for bit.
    assert json.loads(out.stdout)["test"] == longer["test"]
    np.testing.assert_array_equal(np.load(run / "item_z.npy"), np.load(tmp_path / "longer" / "item_z.npy"))
    rows = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(5))
    assert RunConfig.load(run / "config.yaml") == tiny_config(train={"epochs": 5}).portable()
    records = Run(run).environment
    assert [r["event"] for r in records] == ["train", "resume"]
    assert records[1]["extended"] == {"train.epochs": [3, 5]} and "extended" not in records[0]


def test_extensions_that_would_change_the_trained_epochs_are_refused(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from hashgnn.train.run import _check_extension

    # hash_gumbel anneals its temperature over the whole budget: epoch 1 would train differently.
    gumbel = tiny_config(model={"method": "hash_gumbel"}, train={"epochs": 3})
    run = tmp_path / "gumbel"
    train_run(gumbel, run, progress=False)
    with pytest.raises(HashgnnError, match="schedules its epochs over the whole budget"):
        resume_run(run, progress=False, epochs=6)
    assert RunConfig.load(run / "config.yaml").train.epochs == 3  # the folder is untouched
    # A fitted method picks its epochs on validation and refits: a new run, not an extension.
    fitted = tmp_path / "fitted"
    fitted.mkdir()
    tiny_config(model={"method": "spectral_distill"}).save(fitted / "config.yaml")
    with pytest.raises(HashgnnError, match=r"is fitted .* cannot be extended"):
        resume_run(fitted, progress=False, epochs=10)
    # Stopped by patience: more epochs would not change the served weights.
    cfg = tiny_config(train={"epochs": 6, "patience": 1})
    stopped = SimpleNamespace(cfg=cfg, state={"stopped_early": True, "best_epoch": 1}, start_epoch=3)
    with pytest.raises(HashgnnError, match=r"stopped early .* larger --patience"):
        _check_extension(stopped, tiny_config(train={"epochs": 3, "patience": 1}).train, tmp_path)


def test_a_run_stopped_by_its_time_budget_trains_on_with_a_larger_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = train_run(tiny_config(train={"epochs": 4, "max_minutes": 1e-6}), run, progress=False)
    assert first["stopped_by_time"] and first["epochs_run"] == 1
    with pytest.raises(HashgnnError, match=r"stopped at its time budget .* larger --max-minutes"):
        resume_run(run, progress=False, epochs=6)
    final = resume_run(run, progress=False, max_minutes=60.0)
    assert not final["stopped_by_time"] and final["epochs_run"] == 4
    assert RunConfig.load(run / "config.yaml").train.max_minutes == 60.0
    assert Run(run).environment[-1]["extended"] == {"train.max_minutes": [1e-6, 60.0]}


def test_resume_refuses_flags_that_the_run_folder_decides(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_run(tiny_config(train={"epochs": 1}), run, progress=False)
    before = (run / "final_metrics.json").read_bytes()
    out = subprocess.run(
        _hashgnn("train", "--resume", str(run), "--bits", "32", "--patience", "0", "--quiet"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2 and "drop --bits, --patience" in out.stderr, out.stderr
    assert (run / "final_metrics.json").read_bytes() == before


def test_a_malformed_environment_record_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / Run.ENVIRONMENT).write_text('{"event": "train"}')
    with pytest.raises(HashgnnError, match=r"environment\.json: is not a list of records; delete"):
        _ = Run(tmp_path).environment
    (tmp_path / Run.ENVIRONMENT).write_text("[{")
    with pytest.raises(HashgnnError, match=r"environment\.json: .*delete environment\.json"):
        Run(tmp_path).record_environment("resume")
    assert Run(tmp_path / "absent").environment == []


def test_cli_flags_override_config_file(tmp_path: Path) -> None:
    cfg_path = tmp_path / "cfg.yaml"
    tiny_config(train={"epochs": 1}).save(cfg_path)
    run = tmp_path / "run"
    out = subprocess.run(
        _hashgnn("train", "--config", str(cfg_path), "--bits", "24", "--out", str(run), "--quiet"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["bits"] == 24 and saved["model"]["hidden_dim"] == 16
    assert "Recall@20" in out.stdout and "most popular" in out.stdout


def test_bad_config_key_is_a_clear_error(tmp_path: Path) -> None:
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text("model:\n  bitz: 32\n")
    out = subprocess.run(
        _hashgnn("train", "--config", str(cfg_path), "--out", str(tmp_path / "r")),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2
    assert "bitz" in out.stderr and "Traceback" not in out.stderr


def test_time_budget_ends_the_run_after_one_epoch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    final = train_run(tiny_config(train={"epochs": 5, "max_minutes": 1e-9}), run, progress=False)
    assert final["epochs_run"] == 1 and final["stopped_by_time"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and "valid_recall@20" in rows[0]  # the last epoch is validated
    assert all(np.isfinite(v) for v in final["test"]["hamming"].values())
    # Resuming a run that ran out of time only re-exports it (same metrics, no more epochs).
    from hashgnn.train.run import resume_run

    again = resume_run(run, progress=False)
    assert again["epochs_run"] == 1 and again["test"] == final["test"]


@pytest.mark.parametrize("method,epochs_run", [("hashgnn", 3), ("hashgnn_sp", 5)])
def test_patience_counts_from_the_last_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, epochs_run: int
) -> None:
    """Validation that only falls stops hashgnn after `patience` evaluations, and hashgnn_sp only
    after `patience` evaluations of its hash stage (epochs 3 on): its continuous stage's declining
    scores of an untrained hash layer must not end the run before the stage that trains the codes."""
    from hashgnn.train import run as run_module

    falling = iter(np.linspace(0.5, 0.0, 50))
    monkeypatch.setattr(run_module._Trainer, "validate", lambda self, epoch: {"recall@20": float(next(falling))})
    cfg = tiny_config(
        model={"method": method}, train={"epochs": 10, "pretrain_epochs": 3, "eval_every": 1, "patience": 2}
    )
    final = train_run(cfg, tmp_path / "run", progress=False)
    assert final["epochs_run"] == epochs_run  # of 10
