"""Faults caused for real: a folder in use, a file-size limit, read-only places, signals.

Each test makes the system refuse for real (an flock held by another process, ``RLIMIT_FSIZE`` set on
a running trainer with ``prlimit``, folders the process may not write, SIGTERM / SIGKILL) and checks
that the command stops with a clear message (exit 2, no traceback) and that nothing already written
is lost. docs/RELIABILITY.md lists them.

Tests may run as root, which ignores file modes; there the subprocess drops the capabilities that
let root override them (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``, ``CAP_FOWNER``, via
``prctl(PR_CAPBSET_DROP)`` before ``exec``), so a folder with mode 555 is read-only for it too.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tiny import tiny

from hashgnn.config import RunConfig
from hashgnn.errors import HashgnnError
from hashgnn.train.lock import RunLock, lock_path

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "experiments" / "smoke.yaml"

# Small batches, so that an epoch lasts long enough for the test to act during the next one.
SLOW_TINY = tiny("sage", train={"epochs": 2, "batch_size": 512, "seed": 3}, eval={"ks": [20], "candidates": 50})


def _hashgnn(*args: str) -> list[str]:
    return [sys.executable, "-m", "hashgnn", *args]


def _config(tmp_path: Path, **train: object) -> Path:
    d = json.loads(json.dumps(SLOW_TINY))
    d["train"].update(train)
    path = tmp_path / "cfg.yaml"
    RunConfig.from_dict(d).save(path)
    return path


def _wait(cond: Callable[[], bool], proc: subprocess.Popen, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(f"the process ended before {what}: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _pointer_epoch(run: Path) -> int:
    try:
        return int(json.loads((run / "checkpoint.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return -1


def _assert_clear_error(out: subprocess.CompletedProcess, *fragments: str) -> None:
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    for f in fragments:
        assert f in out.stderr, out.stderr[-3000:]


def _whole_checkpoint(run: Path) -> None:
    """The checkpoint the pointer names loads completely (every file parses)."""
    from safetensors.torch import load_file

    from hashgnn.train.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(run)
    assert ckpt is not None
    for name in ("model.safetensors", "optim.safetensors", "rng.safetensors"):
        assert load_file(ckpt / name)
    for name in ("optim.json", "state.json"):
        json.loads((ckpt / name).read_text())
    assert not list(run.glob(".ckpt-*.tmp")), "a half-written checkpoint was left behind"


# --- a folder in use -----------------------------------------------------------------------------


def test_a_second_lock_on_one_folder_is_refused_and_released_on_exit(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunLock(run):
        assert lock_path(run).is_file()
        with pytest.raises(HashgnnError, match=r"in use by another hashgnn process \(pid \d+"):
            RunLock(run).acquire()
    assert not lock_path(run).exists()
    RunLock(run).acquire().release()


def test_train_into_a_folder_in_use_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path: Path) -> None:
    cfg = _config(tmp_path, epochs=200)
    run = tmp_path / "run"
    holder = subprocess.Popen(
        _hashgnn("train", "--config", str(cfg), "--out", str(run), "--quiet"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait((run / "config.yaml").exists, holder, "the run started")
        for args in (["--config", str(cfg), "--out", str(run), "--overwrite"], ["--resume", str(run)]):
            second = subprocess.run(
                _hashgnn("train", *args, "--quiet"), capture_output=True, text=True, timeout=300, check=False
            )
            _assert_clear_error(second, "in use by another hashgnn process", f"pid {holder.pid}")
        assert holder.poll() is None, "the first run must not be disturbed"
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(run).exists()  # SIGKILL left the file, but not the lock:
    RunLock(run).acquire().release()


# --- a file-size limit while writing a checkpoint ----------------------------------------------------


def test_a_file_size_limit_mid_run_is_a_clear_error_and_resume_finishes(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _hashgnn("train", "--config", str(cfg), "--out", str(run), "--quiet"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait(lambda: _pointer_epoch(run) >= 0, proc, "the first checkpoint")
        # From now on the trainer may not write a file larger than 16 KiB (its weights are ~370 KiB).
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (16 * 1024, resource.RLIM_INFINITY))
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err and "File too large" in err and "--resume" in err, err[-3000:]
    assert not (run / "final_metrics.json").exists()
    _whole_checkpoint(run)

    out = subprocess.run(
        _hashgnn("train", "--resume", str(run), "--quiet", "--json"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["epochs_run"] == 2
    rows = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == [0, 1]


# --- read-only and missing places ------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_PR_CAPBSET_DROP = 24
_OVERRIDES = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def _drop_overrides() -> None:
    for cap in _OVERRIDES:
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture
def as_unprivileged(tmp_path: Path) -> Callable[[], None] | None:
    """``preexec_fn`` under which mode 555 folders are read-only (None when not root)."""
    if os.geteuid() != 0:
        return None
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o555)
    probe.chmod(0o555)
    try:
        r = subprocess.run(["touch", str(probe / "x")], preexec_fn=_drop_overrides, capture_output=True, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE ({e}), so no folder is read-only")
    if r.returncode == 0:
        pytest.skip("running as root and mode 555 is still writable after dropping CAP_DAC_OVERRIDE")
    return _drop_overrides


def _read_only_folder(tmp_path: Path) -> Path:
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    return ro


def test_read_only_and_missing_output_places_are_clear_errors(
    tmp_path: Path, as_unprivileged: Callable[[], None] | None
) -> None:
    ro = _read_only_folder(tmp_path)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    cfg = _config(tmp_path, epochs=1)
    for out in (ro / "run", a_file / "run"):
        r = subprocess.run(
            _hashgnn("train", "--config", str(cfg), "--out", str(out), "--quiet"),
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=as_unprivileged,
            check=False,
        )
        _assert_clear_error(r, str(out))
    r = subprocess.run(
        _hashgnn("data", "info", "music_toy", "--quiet"),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=as_unprivileged,
        env={**os.environ, "HASHGNN_CACHE": str(ro / "cache")},
        check=False,
    )
    _assert_clear_error(r, "cache", "HASHGNN_CACHE")


def test_numba_kernels_work_when_no_cache_can_be_written(
    tmp_path: Path, as_unprivileged: Callable[[], None] | None
) -> None:
    """A read-only install with a read-only NUMBA_CACHE_DIR and no home: compiled in memory, not a crash."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "hashgnn", site / "hashgnn", ignore=shutil.ignore_patterns("__pycache__"))
    ro = _read_only_folder(tmp_path)
    for p in [site, *site.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    code = (
        "import numpy as np, hashgnn; from hashgnn.index.hamming import HammingIndex; "
        f"assert hashgnn.__file__.startswith({str(site)!r}), hashgnn.__file__; "
        "x = np.random.default_rng(0).integers(0, 256, (300, 8), dtype=np.uint8); "
        "ix = HammingIndex(64); ix.add(x); d, i = ix.search(x[:3], 5); print(i[:, 0].tolist())"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "NUMBA_CACHE_DIR": str(ro / "numba"),
        "HOME": str(ro / "home"),
        "XDG_CACHE_HOME": str(ro / "xdg"),
    }
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
        preexec_fn=as_unprivileged,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "[0, 1, 2]"  # each code is its own nearest neighbour
    assert not list(site.rglob("*.nbi"))
    for p in [site, *site.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)  # so that pytest can remove tmp_path


# --- SIGTERM during experiment and recommend --all -------------------------------------------------


def _assert_files_whole(root: Path) -> None:
    """No temporary or partial file anywhere under ``root``; every JSON, YAML and .npy parses."""
    import yaml

    from hashgnn.io import read_npy

    leftovers = [p for p in root.rglob("*") if p.name.endswith((".tmp", ".part")) and not p.is_dir()]
    assert not leftovers, leftovers
    for p in root.rglob("*"):
        if p.is_dir() or "ckpt-" in str(p):
            continue
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            [json.loads(x) for x in p.read_text().splitlines()]
        elif p.suffix == ".yaml":
            yaml.safe_load(p.read_text())
        elif p.suffix == ".npy":
            read_npy(p)


@pytest.mark.slow
def test_sigterm_during_experiment_leaves_whole_files_and_a_rerun_continues(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    cmd = _hashgnn("experiment", str(SMOKE), "--out", str(out), "--quiet", "--no-qps", "--only-methods", "hashgnn")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        finished = lambda: list(out.glob("smoke/**/final_metrics.json"))  # noqa: E731
        _wait(lambda: bool(finished()), proc, "the first run finished", seconds=400)
        first = finished()[0]
        stamp = first.stat().st_mtime_ns
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    _assert_files_whole(out)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert first.stat().st_mtime_ns == stamp, "the finished run was trained again"
    rows = [json.loads(x) for x in (out / "smoke" / "results.jsonl").read_text().splitlines()]
    assert len({r["run"] for r in rows}) == 2 and all(r["status"] == "ok" for r in rows)
    _assert_files_whole(out)


def test_an_error_after_a_stop_request_exits_as_interrupted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # What CI once saw: SIGTERM landed inside `import matplotlib`, the interrupt was lost, and a later
    # import of the half-initialised package failed with an AttributeError (exit 1, a traceback).
    import hashgnn.cli as cli
    from hashgnn import interrupt

    def app(**_: object) -> None:
        with contextlib.suppress(KeyboardInterrupt):  # the interrupt is lost on the way
            cli._terminate(signal.SIGTERM, None)  # the command's SIGTERM handler
        raise AttributeError("module 'matplotlib' has no attribute 'get_data_path'")

    cli._register()  # the commands attach themselves to the real app first
    monkeypatch.setattr(cli, "app", app)
    try:
        with pytest.raises(SystemExit) as e:
            cli.main(["experiment"])
    finally:
        interrupt._requested.clear()
    assert e.value.code == 130
    assert "interrupted" in capsys.readouterr().err
    # Without a stop request the same error is a bug, and stays visible as one.
    monkeypatch.setattr(cli, "app", lambda **_: (_ for _ in ()).throw(AttributeError("a bug")))
    with pytest.raises(AttributeError, match="a bug"):
        cli.main(["experiment"])


def test_sigterm_during_recommend_all_keeps_the_previous_file(tmp_path: Path) -> None:
    from hashgnn.codes.artifacts import RunCodes, save_codes
    from hashgnn.codes.packing import pack_codes

    folder = tmp_path / "run"
    folder.mkdir()
    rng = np.random.default_rng(0)
    uz = rng.standard_normal((150_000, 32)).astype(np.float32)
    iz = rng.standard_normal((2_000, 32)).astype(np.float32)
    save_codes(folder, RunCodes(32, pack_codes(uz), pack_codes(iz), uz, iz))
    cfg = RunConfig()
    cfg.data.dataset = "music_toy"
    cfg.save(folder / "config.yaml")
    top = tmp_path / "out" / "top.csv"
    top.parent.mkdir()
    top.write_text("user,rank,item,score\n0,1,0,1.0\n")  # an earlier, complete output
    cmd = _hashgnn("recommend", "--run", str(folder), "--all", "--out", str(top), "--k", "5", "--include-seen")
    proc = subprocess.Popen([*cmd, "--batch-users", "1024"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait(lambda: any(p.name.endswith(".tmp") for p in top.parent.iterdir()), proc, "the output started")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err.decode()[-3000:]
    assert top.read_text() == "user,rank,item,score\n0,1,0,1.0\n"
    assert sorted(p.name for p in top.parent.iterdir()) == ["top.csv"]
    again = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    import pandas as pd

    frame = pd.read_csv(top)
    assert len(frame) == 150_000 * 5 and frame["user"].nunique() == 150_000
