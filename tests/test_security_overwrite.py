"""Security issue, item 1: `--overwrite` and the experiment runner never delete a user's files.

The CLI runs as a real subprocess on real folders of user files, as a user would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hashgnn.config import RunConfig
from hashgnn.errors import ConfigError, HashgnnError
from hashgnn.experiment.suite import load_suite
from hashgnn.train.folder import Replacement, check_replaceable_run
from hashgnn.train.run import train_run

TINY = {
    "data": {"dataset": "music_toy", "valid_fraction": 0.0},
    "model": {"method": "mf", "bits": 16, "mf_dim": 16},
    "train": {"epochs": 1, "batch_size": 4096, "negatives": 1, "seed": 3, "threads": 1},
    "eval": {"ks": [20], "candidates": 50},
}


def hashgnn_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m hashgnn ARGS`` in ``cwd``, as a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "hashgnn", *args],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def user_folder(root: Path, config_text: str) -> Path:
    """A folder of a user's own files that happens to hold a config.yaml."""
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(config_text)
    (root / "src").mkdir()
    (root / "src" / "notes.txt").write_text("a week of work\n")
    (root / "results.csv").write_text("a,b\n1,2\n")
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_with_a_bad_option_leaves_the_folder_alone(tmp_path: Path) -> None:
    # The reproduction of the issue: today's main printed the bits error after emptying the folder.
    folder = user_folder(tmp_path / "thatfolder", "my: own config\n")
    before = snapshot(folder)
    r = hashgnn_cli(["train", "--out", str(folder), "--overwrite", "-d", "lastfm", "--bits", "100000"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert snapshot(folder) == before


def test_overwrite_refuses_a_folder_that_is_not_only_a_run(tmp_path: Path) -> None:
    # A config.yaml that is a valid run config does not make the folder a run: its other files stay.
    cfg_text = yaml.safe_dump(RunConfig.from_dict(TINY).to_dict())
    folder = user_folder(tmp_path / "project", cfg_text)
    before = snapshot(folder)
    r = hashgnn_cli(["train", "--config", str(folder / "config.yaml"), "--out", str(folder), "--overwrite"], tmp_path)
    assert r.returncode == 2 and "not a hashgnn run" in r.stderr
    assert "results.csv" in r.stderr and "src" in r.stderr
    assert snapshot(folder) == before


def test_overwrite_of_the_current_folder_is_refused(tmp_path: Path) -> None:
    here = user_folder(tmp_path / "home-ish", yaml.safe_dump(RunConfig.from_dict(TINY).to_dict()))
    before = snapshot(here)
    for out in (".", str(here), str(here.parent)):
        r = hashgnn_cli(["train", "--config", "config.yaml", "--out", out, "--overwrite"], here)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "refuses to replace" in r.stderr or "not a hashgnn run" in r.stderr
    assert snapshot(here) == before


def test_protected_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for folder, why in (
        (Path("/"), "root"),
        (Path.home(), "home"),
        (tmp_path, "current"),
        (tmp_path.parent, "holds the current"),
    ):
        with pytest.raises(HashgnnError, match=why):
            check_replaceable_run(folder)


def test_training_into_a_folder_of_other_files_is_refused(tmp_path: Path) -> None:
    # Without config.yaml the folder is not a run, and its files could be overwritten by one.
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("mine\n")
    (folder / "paper.tex").write_text("\\section{}\n")
    with pytest.raises(HashgnnError, match=r"paper\.tex"):
        train_run(RunConfig.from_dict(TINY), folder, progress=False)
    assert (folder / "metrics.jsonl").read_text() == "mine\n"


def fail_half_way(run: Path) -> None:
    """Replace ``run`` and fail after the new run has written something."""
    with Replacement(run):
        run.mkdir()
        (run / "config.yaml").write_text("half\n")
        raise RuntimeError("boom")


def test_overwrite_replaces_a_real_run_and_restores_it_on_failure(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = train_run(RunConfig.from_dict(TINY), run, progress=False)
    original = snapshot(run)
    # A failure while the new run trains puts the old run back, byte for byte.
    with pytest.raises(RuntimeError, match="boom"):
        fail_half_way(run)
    assert snapshot(run) == original and not list(tmp_path.glob(".run.replaced-*"))
    # A successful overwrite replaces it and leaves nothing aside.
    cfg = RunConfig.from_dict({**TINY, "train": {**TINY["train"], "seed": 4}})
    second = train_run(cfg, run, progress=False, overwrite=True)
    assert second["seed"] == 4 and first["seed"] == 3
    assert RunConfig.load(run / "config.yaml").train.seed == 4
    assert not list(tmp_path.glob(".run.replaced-*"))


def write_suite(path: Path, name: str = "s", dataset: str = "music_toy", variant: str | None = None) -> Path:
    d: dict = {
        "name": name,
        "base": {"train": {"epochs": 1}},
        "grid": {"methods": ["mf"], "datasets": [dataset], "bits": [16], "seeds": [1]},
        "settings": [{"name": "h", "mode": "hamming", "metrics": ["recall@20"]}],
    }
    if variant is not None:
        d["variants"] = {variant: {"train": {"lr": 0.01}}}
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.mark.parametrize("field", ["name", "variant"])
@pytest.mark.parametrize("bad", ["..", ".", "...", ".hidden", "-"])
def test_suite_names_that_leave_out_are_refused(tmp_path: Path, field: str, bad: str) -> None:
    kw = {"name": bad} if field == "name" else {"variant": bad}
    with pytest.raises(ConfigError, match="letter or digit"):
        load_suite(write_suite(tmp_path / "suite.yaml", **kw))


def test_a_data_set_named_dotdot_stays_under_out(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path / "suite.yaml", dataset=".."))
    out = tmp_path / "out"
    from hashgnn.experiment.results import run_dir, suite_dir

    folder = run_dir(out, suite, suite.points()[0])
    assert suite_dir(out, suite).resolve() in folder.resolve().parents
