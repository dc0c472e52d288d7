"""Security issue, item 4: hostile numbers and files end in a clear error, never in a traceback or a
huge allocation."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from hashgnn.config import DataConfig, RunConfig
from hashgnn.data import load_interactions
from hashgnn.errors import ConfigError, DataError, HashgnnError
from hashgnn.experiment.suite import load_suite
from hashgnn.train.run import train_run


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hashgnn", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


@pytest.mark.parametrize("k", ["100000000000000", "3847"])  # music_toy has 3,846 items
def test_a_huge_k_is_refused_before_allocating(k: str) -> None:
    r = cli("evaluate", "--dataset", "music_toy", "--k", k)
    assert r.returncode == 2 and "at most the number of items (3846)" in r.stderr and "Traceback" not in r.stderr


def test_eval_sizes_are_checked_before_training(tmp_path: Path) -> None:
    base = {"data": {"dataset": "music_toy"}, "model": {"method": "mf"}, "train": {"epochs": 50}}
    for section, value in (("candidates", 10**12), ("ks", [20, 10**12])):
        cfg = RunConfig.from_dict({**base, "eval": {section: value}})
        t0 = time.perf_counter()
        with pytest.raises(HashgnnError, match="number of items"):
            train_run(cfg, tmp_path / section, progress=False)
        assert time.perf_counter() - t0 < 60 and not (tmp_path / section).exists()  # refused, not trained


@pytest.mark.parametrize("bits", ["1000000", "-5", "0"])
def test_bench_refuses_absurd_code_lengths(bits: str) -> None:
    r = cli("bench", "retrieval", "--items", "1000", "--queries", "10", "--k", "10", "--bits", bits)
    assert r.returncode == 2 and "--bits must be between 1 and" in r.stderr and "Traceback" not in r.stderr


def test_bench_refuses_a_corpus_that_does_not_fit() -> None:
    r = cli("bench", "retrieval", "--items", "100000000000", "--bits", "64", "--k", "10")
    assert r.returncode == 2 and "GiB" in r.stderr and "Traceback" not in r.stderr


def alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_yaml_aliases_are_refused_quickly(tmp_path: Path) -> None:
    # 14 levels of four-fold aliases: 4**14 (268 million) leaves if expanded.
    for loader in (RunConfig.load, load_suite):
        p = tmp_path / "bomb.yaml"
        p.write_text(alias_bomb(14))
        t0 = time.perf_counter()
        with pytest.raises(ConfigError, match="aliases"):
            loader(p)
        assert time.perf_counter() - t0 < 5


def test_oversized_yaml_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "big.yaml"
    p.write_text("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="at most"):
        RunConfig.load(p)


@pytest.mark.parametrize(
    "section,key,value,expected",
    [
        ("eval", "batch_users", "1024", "an integer"),
        ("train", "epochs", 2.5, "an integer"),
        ("train", "lr", "fast", "a number"),
        ("train", "use_ranking", "yes", "true/false"),
        ("model", "user_fanouts", [10, "5"], "an integer"),
        ("eval", "ks", 20, "a list of integers"),
        ("data", "mirror", 5, "a string or null"),
        ("train", "threads", True, "an integer or null"),
    ],
)
def test_config_values_are_type_checked(tmp_path: Path, section: str, key: str, value: object, expected: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({section: {key: value}}))
    with pytest.raises(ConfigError) as e:
        RunConfig.load(p)
    assert f"config.{section}.{key}" in str(e.value) and expected in str(e.value)
    r = cli("train", "--config", str(p), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and f"config.{section}.{key}" in r.stderr and "Traceback" not in r.stderr


def test_integers_are_accepted_for_floats() -> None:
    cfg = RunConfig.from_dict({"train": {"lr": 1, "max_minutes": 2}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.train.max_minutes == 2.0


@pytest.mark.parametrize("members", [[], ["a.csv", "b.csv"]])
def test_a_zip_must_hold_exactly_one_table(tmp_path: Path, members: list[str]) -> None:
    p = tmp_path / "log.csv.zip"
    with zipfile.ZipFile(p, "w") as z:
        for m in members:
            z.writestr(m, "user,item\n1,2\n")
    with pytest.raises(DataError, match=f"holds {len(members)} files") as e:
        load_interactions(DataConfig(dataset=str(p)), progress=False)
    assert str(p) in str(e.value)
