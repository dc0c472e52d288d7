"""Security issue, items 3 and 5: a run folder (perhaps received from someone else) never chooses where
data is read from or cached, never makes errors list other folders, and its checkpoint pointer is
checked; checkpoints are replaced atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import hashgnn.train.checkpoint as ckpt_mod
from hashgnn.config import RunConfig
from hashgnn.errors import HashgnnError
from hashgnn.train.checkpoint import latest_checkpoint, save_checkpoint
from hashgnn.train.run import evaluate_run, resume_run, train_run

TINY = {
    "data": {"dataset": "music_toy", "valid_fraction": 0.0},
    "model": {"method": "mf", "bits": 16, "mf_dim": 16},
    "train": {"epochs": 1, "batch_size": 4096, "negatives": 1, "seed": 3, "threads": 1, "device": "cpu"},
    "eval": {"ks": [20], "candidates": 50},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs") / "run"
    train_run(RunConfig.from_dict(TINY), folder, progress=False)
    return folder


def hostile_copy(run: Path, dest: Path, **data: object) -> Path:
    """A copy of ``run`` whose config.yaml sets the given data fields (as a received folder might)."""
    import shutil

    shutil.copytree(run, dest)
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    cfg["data"].update(data)
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dest


def test_the_saved_config_holds_no_machine_fields(run: Path) -> None:
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["mirror"] is None and saved["data"]["cache_dir"] is None
    assert saved["train"]["device"] == "auto" and saved["train"]["threads"] is None


def test_a_received_run_cannot_choose_mirror_or_cache(run: Path, tmp_path: Path) -> None:
    evil_cache = tmp_path / "evil-cache"
    folder = hostile_copy(run, tmp_path / "received", mirror="http://127.0.0.1:9/evil/", cache_dir=str(evil_cache))
    want = evaluate_run(run, mode="hamming", progress=False)
    got = evaluate_run(folder, mode="hamming", progress=False)  # the environment's mirror and cache
    assert got == want and not evil_cache.exists()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for cmd in (
        ["evaluate", "--run", str(folder), "--k", "20", "--json"],
        ["recommend", "--run", str(folder), "--users", "0", "--k", "5", "--json"],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "hashgnn", *cmd], check=False, capture_output=True, text=True, env=env, timeout=300
        )
        assert r.returncode == 0, r.stderr
    assert not evil_cache.exists()


def test_a_run_folder_cannot_make_errors_list_other_folders(run: Path, tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere"
    secret.mkdir()
    (secret / "id_rsa").write_text("key\n")
    folder = hostile_copy(run, tmp_path / "received", dataset=str(secret))
    with pytest.raises(HashgnnError) as e:
        evaluate_run(folder, progress=False)
    assert "id_rsa" not in str(e.value) and "train.txt" in str(e.value)


def test_a_data_folder_is_saved_as_an_absolute_path(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    data = tmp_path / "work" / "toy"
    data.mkdir(parents=True)
    for f in ("train.txt", "test.txt"):
        shutil.copy(mirror / "music_toy" / f, data / f)
    monkeypatch.chdir(tmp_path / "work")
    cfg = RunConfig.from_dict({**TINY, "data": {"dataset": "toy", "valid_fraction": 0.0}})
    cfg.data.dataset = "./toy"
    train_run(cfg, tmp_path / "run", progress=False)
    assert RunConfig.load(tmp_path / "run" / "config.yaml").data.dataset == str(data.resolve())
    monkeypatch.chdir(tmp_path)  # evaluated from elsewhere: still finds its data
    assert evaluate_run(tmp_path / "run", progress=False)["n_users"] > 0


@pytest.mark.parametrize("latest", ["../../etc", "/etc", "ckpt-0000/../..", "state.json", 5, None])
def test_the_checkpoint_pointer_names_only_checkpoints(tmp_path: Path, latest: object) -> None:
    (tmp_path / "checkpoint.json").write_text(json.dumps({"latest": latest}))
    with pytest.raises(HashgnnError, match=r"checkpoint\.json"):
        latest_checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(HashgnnError, match="not a checkpoint pointer"):
        latest_checkpoint(tmp_path)


def test_resume_with_a_hostile_pointer_is_a_clear_error(run: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "r"
    shutil.copytree(run, folder)
    (folder / "final_metrics.json").unlink()
    (folder / "checkpoint.json").write_text(json.dumps({"latest": "../../../../etc"}))
    r = subprocess.run(
        [sys.executable, "-m", "hashgnn", "train", "--resume", str(folder)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert r.returncode == 2 and "not a checkpoint of this run" in r.stderr and "Traceback" not in r.stderr


def test_a_checkpoint_is_never_replaced_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    gen = torch.Generator().manual_seed(0)
    first = save_checkpoint(tmp_path, 3, model, opt, gen, {"history": []})

    # The process dies while writing the pointer for a second save of the same epoch (a resumed run):
    # the checkpoint the pointer names must still be there and whole.
    def die(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod, "atomic_write", die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 3, model, opt, gen, {"history": []})
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == first and (first / "model.safetensors").is_file()
    second = save_checkpoint(tmp_path, 4, model, opt, gen, {"history": []})
    assert latest_checkpoint(tmp_path) == second and not first.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ckpt-")) == [second.name]


def test_resume_takes_the_device_from_this_machine(run: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "r"
    shutil.copytree(run, folder)
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["train"]["device"] = "cuda"  # written on a GPU machine; this one may have none
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    final = resume_run(folder, progress=False, device="cpu")
    assert final["device"] == "cpu"
