"""--tracker mlflow / tensorboard, against the real libraries: config, per-epoch and final metrics, files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from hashgnn.config import RunConfig
from hashgnn.errors import ConfigError
from hashgnn.train.run import train_run
from hashgnn.train.trackers import TrackerWarning, make_tracker

TINY = {
    "data": {"dataset": "music_toy", "valid_fraction": 0.1},
    "model": {"bits": 16, "id_dim": 8, "input_dim": 8, "hidden_dim": 8, "user_fanouts": [3, 2], "item_fanouts": [3]},
    "train": {"epochs": 2, "batch_size": 2048, "negatives": 1, "seed": 5, "device": "cpu", "threads": 1},
    "eval": {"ks": [20], "candidates": 50, "modes": ["hamming", "continuous"]},
}


def _train(out: Path, **kw: object) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # music_toy drops a few unseen test items, with a DataWarning
        warnings.simplefilter("error", TrackerWarning)  # a tracker that fails must fail the test
        return train_run(RunConfig.from_dict(json.loads(json.dumps(TINY))), out, progress=False, **kw)


def test_mlflow_gets_config_epochs_final_metrics_and_files(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'hashgnn[mlflow]')")
    uri = (tmp_path / "mlruns").as_uri()
    final = _train(tmp_path / "run", tracker="mlflow", tracker_uri=uri)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("hashgnn")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["model.bits"] == "16" and run.data.params["data.dataset"] == "music_toy"
    loss = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in loss] == [0, 1]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m.value for m in loss] == pytest.approx([r["loss"] for r in rows])
    assert run.data.metrics["test/hamming/recall_at_20"] == pytest.approx(final["test"]["hamming"]["recall@20"])
    assert run.data.metrics["valid_recall_at_20"] == pytest.approx(rows[-1]["valid_recall@20"])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "final_metrics.json", "metrics.jsonl", "training.png"} <= names


def test_tensorboard_gets_scalars_text_and_the_plot(tmp_path: Path) -> None:
    pytest.importorskip(
        "tensorboard", reason="the tensorboard extra is not installed (pip install 'hashgnn[tensorboard]')"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    final = _train(tmp_path / "run", tracker="tensorboard")
    logs = tmp_path / "run" / "tensorboard"
    acc = EventAccumulator(str(logs), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert [e.step for e in acc.Scalars("train/loss")] == [0, 1]
    assert acc.Scalars("test/hamming/recall_at_20")[0].value == pytest.approx(final["test"]["hamming"]["recall@20"])
    assert "config/text_summary" in tags["tensors"] and "final_metrics/text_summary" in tags["tensors"]
    assert "training" in tags["images"]
    # The tensorboard folder is a run file: the run can still be replaced with --overwrite.
    from hashgnn.train.folder import check_replaceable_run

    check_replaceable_run(tmp_path / "run")


def test_unknown_tracker_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown tracker 'wandb'"):
        make_tracker("wandb")
