"""Progress output: a tqdm bar on a terminal, timed plain lines in a log, nothing with --quiet."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hashgnn.config import RunConfig
from hashgnn.progress import LineProgress, progress_bar

TINY = {
    "data": {"dataset": "music_toy", "valid_fraction": 0.1},
    "model": {"method": "hashgnn", "encoder": "sage", "bits": 16, "id_dim": 8, "input_dim": 8, "hidden_dim": 8},
    "train": {"epochs": 1, "batch_size": 2048, "negatives": 1, "seed": 1, "device": "cpu", "threads": 1},
    "eval": {"ks": [20], "candidates": 50},
}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_plain_lines_with_rate_eta_and_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASHGNN_PROGRESS_SECONDS", "0")
    monkeypatch.delenv("HASHGNN_PROGRESS", raising=False)
    log = io.StringIO()
    bar = progress_bar(4, "epoch 2", "batch", file=log)
    assert isinstance(bar, LineProgress)
    with bar:
        for _ in range(4):
            bar.set_postfix(loss="0.5000")
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == 5  # one per update (interval 0) and the closing line
    assert lines[0].startswith("epoch 2: 1/4 batch (25%), ")
    assert "batch/s" in lines[0] and "ETA" in lines[0] and lines[0].endswith("loss=0.5000")
    assert lines[-1].startswith("epoch 2: 4/4 batch (100%)") and "done in" in lines[-1]


def test_lines_are_spaced_by_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASHGNN_PROGRESS_SECONDS", "3600")
    monkeypatch.delenv("HASHGNN_PROGRESS", raising=False)
    log = io.StringIO()
    with progress_bar(10_000, "evaluate", "user", file=log) as bar:
        for _ in range(10_000):
            bar.update(1)
    assert log.getvalue() == ""  # within one interval and under a second: not a line


def test_a_terminal_gets_a_tqdm_bar_and_quiet_gets_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from tqdm.auto import tqdm

    monkeypatch.delenv("HASHGNN_PROGRESS", raising=False)
    tty = _Terminal()
    bar = progress_bar(3, "x", file=tty)
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
    silent = io.StringIO()
    with progress_bar(3, "x", enabled=False, file=silent) as bar:
        bar.update(3)
    assert silent.getvalue() == ""
    monkeypatch.setenv("HASHGNN_PROGRESS", "lines")
    assert isinstance(progress_bar(3, "x", file=tty), LineProgress)


def test_byte_counts_are_scaled() -> None:
    p = LineProgress(4 * 1024 * 1024, "ml-1m/train.txt", "B", io.StringIO(), 0, unit_scale=True)
    p.n = 2 * 1024 * 1024
    text = p.line(p.start + 1.0, done=False)
    assert text.startswith("ml-1m/train.txt: 2.0 MiB/4.0 MiB (50%), 2.0 MiB/s, ETA")


def test_train_into_a_log_writes_no_carriage_returns(tmp_path: Path) -> None:
    cfg = RunConfig.from_dict(json.loads(json.dumps(TINY)))
    cfg.save(tmp_path / "cfg.yaml")
    env = {**os.environ, "HASHGNN_PROGRESS_SECONDS": "0"}
    env.pop("HASHGNN_PROGRESS", None)
    cmd = [sys.executable, "-m", "hashgnn", "train", "--config", str(tmp_path / "cfg.yaml")]
    out = subprocess.run(
        [*cmd, "--out", str(tmp_path / "a")], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr
    lines = out.stderr.splitlines()
    assert any(x.startswith("epoch 0: ") and "loss=" in x and "batch/s" in x for x in lines), out.stderr
    assert any(x.startswith("evaluate: ") for x in lines), out.stderr


def test_quiet_training_writes_nothing(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from hashgnn.data import load_interactions
    from hashgnn.model import build_model
    from hashgnn.train.loop import build_optimizer, train_epoch

    monkeypatch.setenv("HASHGNN_PROGRESS_SECONDS", "0")
    cfg = RunConfig.from_dict(json.loads(json.dumps(TINY)))
    data = load_interactions(cfg.data, progress=False)
    model = build_model(cfg.model, data.train, torch.device("cpu"), train_cfg=cfg.train)
    opt = build_optimizer(model, cfg.train)
    gen = torch.Generator().manual_seed(0)
    capfd.readouterr()
    train_epoch(model, opt, data.train, cfg.train, 0, gen, progress=False, max_batches=2)
    assert capfd.readouterr().err == ""
    train_epoch(model, opt, data.train, cfg.train, 1, gen, progress=True, max_batches=2)
    assert "epoch 1: 1/2 batch" in capfd.readouterr().err
