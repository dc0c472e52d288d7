"""The Run object on a real tiny run: its API, the rebuilt model, and a clear error for each damaged file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import tiny

import hashgnn as hg
from hashgnn.cli import main
from hashgnn.codes.packing import pack_codes
from hashgnn.config import RunConfig
from hashgnn.io import ArtifactError
from hashgnn.methods import MODES
from hashgnn.run import EXPORT_SALT, Run
from hashgnn.train.run import train_run

TINY = tiny("lightgcn")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "run"
    train_run(RunConfig.from_dict(json.loads(json.dumps(TINY))), folder, progress=False)
    return folder


@pytest.fixture
def copy(trained: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def test_run_exposes_config_codes_vectors_metrics(trained: Path) -> None:
    run = hg.Run.load(trained)
    assert run.config.model.method == "hashgnn" and run.config.model.bits == 16
    uz, iz = run.vectors
    assert uz.shape == (run.codes.n_users, 16) and iz.shape == (run.codes.n_items, 16)
    np.testing.assert_array_equal(run.codes.item_codes, pack_codes(iz))
    assert set(run.metrics["test"]) == set(hg.MODES)
    assert [r["epoch"] for r in run.history] == [0, 1]
    # re-evaluation from the folder gives the numbers written at the end of training
    for mode in hg.MODES:
        again = run.evaluate(mode)
        assert again["recall@20"] == run.metrics["test"][mode]["recall@20"]
        assert again["ndcg@10"] == run.metrics["test"][mode]["ndcg@10"]


def test_model_is_rebuilt_from_its_weights(trained: Path) -> None:
    run = Run.load(trained, device="cpu")
    model = run.model()
    cfg = run.config
    gen = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + EXPORT_SALT)
    uz, iz = model.embed(gen)
    # lightgcn is deterministic: the rebuilt network serves exactly the exported vectors
    np.testing.assert_array_equal(uz.numpy(), run.codes.user_z)
    np.testing.assert_array_equal(iz.numpy(), run.codes.item_z)


def test_machine_fields_never_come_from_the_folder(copy: Path) -> None:
    cfg = yaml_load(copy / Run.CONFIG)
    cfg["data"]["mirror"] = "/nonexistent/mirror"
    cfg["data"]["cache_dir"] = "/nonexistent/cache"
    cfg["train"]["device"] = "cuda"
    cfg["train"]["threads"] = 64
    yaml_dump(copy / Run.CONFIG, cfg)
    run = Run.load(copy)
    d, t = run.config.data, run.config.train
    assert (d.mirror, d.cache_dir, t.device, t.threads) == (None, None, "auto", None)
    assert Run.load(copy, threads=1, device="cpu").config.train.threads == 1


def yaml_load(p: Path) -> dict:
    import yaml

    return yaml.safe_load(p.read_text())


def yaml_dump(p: Path, d: dict) -> None:
    import yaml

    p.write_text(yaml.safe_dump(d))


def _head(p: Path, n: int) -> None:
    p.write_bytes(p.read_bytes()[:n])


def _wrong_shape(p: Path) -> None:
    a = np.load(p)
    np.save(p, a[:-1])


def _wrong_dtype(p: Path) -> None:
    np.save(p, np.load(p).astype(np.float64 if np.load(p).dtype != np.float64 else np.int16))


def _huge_header(p: Path) -> None:
    # a 192-byte-ish file whose header claims an enormous array: must be refused before any allocation
    with open(p, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 10**4)})
        f.write(b"\0" * 64)


def _garbage(p: Path) -> None:
    p.write_bytes(b"\x00\xffnot this file at all{{{")


NPYS = (Run.USER_CODES, Run.ITEM_CODES, Run.USER_Z, Run.ITEM_Z)
DAMAGE = [
    (name, how)
    for name in NPYS
    for how in (lambda p: _head(p, 100), _wrong_shape, _wrong_dtype, _huge_header, _garbage)
]
DAMAGE += [
    (name, how)
    for name in (Run.CODES_HEADER, Run.FINAL_METRICS, Run.CONFIG)
    for how in (lambda p: _head(p, 10), _garbage, lambda p: p.write_text("[1, 2, 3]"))
]
DAMAGE += [(Run.WEIGHTS, lambda p: _head(p, 100)), (Run.WEIGHTS, _garbage)]


@pytest.mark.parametrize("name,damage", DAMAGE, ids=[f"{n}-{i}" for i, (n, _) in enumerate(DAMAGE)])
def test_each_damaged_artifact_is_named(copy: Path, name: str, damage) -> None:
    damage(copy / name)
    with pytest.raises(ArtifactError) as e:
        Run.load(copy)
    assert name in str(e.value)
    assert e.value.path.name == name


def test_cli_exits_2_naming_the_file(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _head(copy / Run.ITEM_CODES, 100)
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--run", str(copy), "--mode", "hamming", "--no-progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert Run.ITEM_CODES in err and "Traceback" not in err
    assert "hashgnn train --resume" in " ".join(err.split())


@pytest.mark.parametrize("mode", MODES)
def test_metrics_measure_what_recommend_returns(trained: Path, mode: str) -> None:
    from hashgnn.eval import HammingScorer, HierarchicalScorer, InnerProductScorer, per_user_metrics, topk_items

    run = Run.load(trained)
    data, c, ks = run.data(), run.codes, run.config.eval.ks
    users = np.flatnonzero(np.diff(data.test.indptr) > 0)
    recs = run.recommend(users, k=max(ks), mode=mode)
    values, valid = per_user_metrics(recs.items, data.test[users], ks, max(ks))
    for key, v in values.items():
        assert float(v[valid].mean()) == pytest.approx(run.metrics["test"][mode][key], rel=1e-12, abs=1e-15)
    # ... and the brute-force scorers of hashgnn.eval rank the same lists, once the items are put in
    # the run's tie order (popularity: the scorers break ties by the lower position)
    order = c.item_order
    assert order is not None and run.metrics["ties"] == "popularity"
    assert np.all(np.diff(np.diff(data.train.tocsc().indptr)[order]) <= 0)  # most popular first
    ic, iz = c.item_codes[order], c.item_z[order]
    scorer = {
        "hamming": lambda: HammingScorer(c.user_codes, ic, c.bits),
        "hierarchical": lambda: HierarchicalScorer(c.user_codes, ic, c.bits, c.user_z, iz, run.config.eval.candidates),
        "continuous": lambda: InnerProductScorer(c.user_z, iz),
    }[mode]()
    placed = topk_items(scorer, users, max(ks), exclude=data.train.tocsc()[:, order].tocsr())
    np.testing.assert_array_equal(np.where(placed >= 0, order[np.maximum(placed, 0)], -1), recs.items)


def test_an_older_or_newer_folder_format_is_named(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header = json.loads((copy / Run.CODES_HEADER).read_text())
    header["format_version"] = 0
    (copy / Run.CODES_HEADER).write_text(json.dumps(header))
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--run", str(copy), "--no-progress"])
    err = " ".join(capsys.readouterr().err.split())
    assert e.value.code == 2 and "Traceback" not in err
    assert f"{Run.CODES_HEADER}: format_version 0; this hashgnn reads format_version 1" in err
