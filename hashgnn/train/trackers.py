"""Experiment trackers: MLflow and TensorBoard get the config, every epoch's metrics, the final metrics
and the run folder's small files.

``train_run(..., tracker="mlflow")`` (``hashgnn train --tracker mlflow``) and ``tracker="tensorboard"``
hook into the trainer's per-epoch path, so the Python API and the CLI report the same. Both libraries
are optional extras (``pip install 'hashgnn[mlflow]'`` / ``'hashgnn[tensorboard]'``), imported only
when asked for.

- **mlflow**: ``tracker_uri`` is any MLflow tracking URI; default ``$MLFLOW_TRACKING_URI``, else a local
  file store ``./mlruns`` (for a file store, ``MLFLOW_ALLOW_FILE_STORE=true`` is set unless the
  environment already says otherwise: MLflow 3 otherwise refuses its own file store). Experiment ``hashgnn``, one MLflow run per invocation named after the run
  folder (a resumed run is a new MLflow run tagged ``resumed``). Metric names replace ``@`` (not allowed
  by MLflow) with ``_at_``: ``valid_recall_at_20``, ``test/hamming/recall_at_20``.
- **tensorboard**: ``tracker_uri`` is the log folder; default ``DIR/tensorboard`` inside the run folder
  (``tensorboard --logdir DIR``). Scalars ``train/<name>`` per epoch, ``test/<mode>/<metric>`` at the
  end, the config and final metrics as text, ``training.png`` as an image.

A tracker failing (a server down) must not lose a run: its errors become a warning and training goes on.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from hashgnn.errors import ConfigError, HashgnnError

TRACKERS = ("mlflow", "tensorboard")
TB_FOLDER = "tensorboard"
# The run folder's small files a tracker keeps a copy of.
SMALL_FILES = ("config.yaml", "final_metrics.json", "metrics.jsonl", "codes.json", "features.json", "training.png")


class TrackerWarning(UserWarning):
    """A tracker could not record something; the run itself is unaffected."""


def metric_name(name: str) -> str:
    """A metric key as trackers accept it (MLflow refuses ``@``)."""
    return name.replace("@", "_at_")


def flatten(d: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def _numbers(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker:
    """The interface the trainer calls; the base class records nothing."""

    def start(self, config: dict[str, Any], run_dir: Path, resumed: bool) -> None:
        """Begin recording a run (its config as parameters)."""

    def log_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        """One epoch's row of ``metrics.jsonl``."""

    def finish(self, final: dict[str, Any] | None, run_dir: Path) -> None:
        """The final metrics (None when the run failed) and the folder's small files; closes the run."""


class MlflowTracker(Tracker):
    def __init__(self, uri: str | None) -> None:
        try:
            import mlflow
        except ImportError:
            raise HashgnnError(
                "--tracker mlflow needs MLflow: pip install 'hashgnn[mlflow]' (or mlflow / mlflow-skinny)"
            ) from None
        self.mlflow = mlflow
        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()
        self.run: Any = None
        if self.uri.startswith("file:") or "://" not in self.uri:
            # MLflow 3 keeps its file store in "maintenance mode" and refuses it unless this documented
            # opt-out is set; the local file store is what the issue asked for as the default, and
            # the user's own setting of the variable wins.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

    def start(self, config: dict[str, Any], run_dir: Path, resumed: bool) -> None:
        m = self.mlflow
        client = m.tracking.MlflowClient(tracking_uri=self.uri)
        exp = client.get_experiment_by_name("hashgnn")
        exp_id = exp.experiment_id if exp is not None else client.create_experiment("hashgnn")
        tags = {"hashgnn.run_folder": str(run_dir.resolve()), "resumed": str(bool(resumed)).lower()}
        self.client = client
        self.run = client.create_run(exp_id, run_name=run_dir.name, tags=tags)
        params = {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in flatten(config).items()}
        from mlflow.entities import Param

        client.log_batch(self.run.info.run_id, params=[Param(k, v[:6000]) for k, v in params.items()])

    def log_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        metrics = [Metric(metric_name(k), v, ts, epoch) for k, v in _numbers(row).items() if k != "epoch"]
        self.client.log_batch(self.run.info.run_id, metrics=metrics)

    def finish(self, final: dict[str, Any] | None, run_dir: Path) -> None:
        from mlflow.entities import Metric

        rid = self.run.info.run_id
        if final is not None:
            ts = int(time.time() * 1000)
            flat = _numbers(flatten({k: final[k] for k in ("test", "baseline_popular") if k in final}, sep="/"))
            scalars = _numbers({k: v for k, v in final.items() if not isinstance(v, dict)})
            metrics = [Metric(metric_name(k), v, ts, 0) for k, v in {**flat, **scalars}.items()]
            for i in range(0, len(metrics), 900):  # MLflow takes at most 1000 metrics per batch
                self.client.log_batch(rid, metrics=metrics[i : i + 900])
        for name in SMALL_FILES:
            if (run_dir / name).is_file():
                self.client.log_artifact(rid, str(run_dir / name))
        self.client.set_terminated(rid, status="FINISHED" if final is not None else "FAILED")


class TensorboardTracker(Tracker):
    def __init__(self, uri: str | None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise HashgnnError("--tracker tensorboard needs TensorBoard: pip install 'hashgnn[tensorboard]'") from None
        self.writer_class = SummaryWriter
        self.uri = uri
        self.writer: Any = None
        self.last_epoch = 0

    def start(self, config: dict[str, Any], run_dir: Path, resumed: bool) -> None:
        log_dir = Path(self.uri) if self.uri else run_dir / TB_FOLDER
        self.writer = self.writer_class(log_dir=str(log_dir))
        import yaml

        self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def log_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        for k, v in _numbers(row).items():
            if k != "epoch":
                self.writer.add_scalar(f"train/{metric_name(k)}", v, epoch)
        self.last_epoch = epoch
        self.writer.flush()

    def finish(self, final: dict[str, Any] | None, run_dir: Path) -> None:
        if final is not None:
            step = self.last_epoch
            flat = _numbers(flatten({k: final[k] for k in ("test", "baseline_popular") if k in final}, sep="/"))
            for k, v in flat.items():
                self.writer.add_scalar(metric_name(k), v, step)
            self.writer.add_text("final_metrics", "```\n" + json.dumps(final, indent=2) + "\n```", step)
            png = run_dir / "training.png"
            if png.is_file():
                import matplotlib.image

                self.writer.add_image("training", matplotlib.image.imread(png)[..., :3], step, dataformats="HWC")
        self.writer.close()


class Guarded(Tracker):
    """Runs a tracker's calls, turning its failures into one :class:`TrackerWarning` each."""

    def __init__(self, inner: Tracker, name: str) -> None:
        self.inner, self.name = inner, name
        self.broken = False
        self.started = False

    def _call(self, what: str, *args: Any) -> None:
        if self.broken:
            return
        try:
            getattr(self.inner, what)(*args)
        except Exception as e:  # a tracker must never cost the run
            self.broken = True
            warnings.warn(
                f"--tracker {self.name}: {what} failed ({type(e).__name__}: {e}); it records nothing more, "
                "the run goes on",
                TrackerWarning,
                stacklevel=3,
            )

    def start(self, config: dict[str, Any], run_dir: Path, resumed: bool) -> None:
        self.started = True
        self._call("start", config, run_dir, resumed)

    def log_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        self._call("log_epoch", epoch, row)

    def finish(self, final: dict[str, Any] | None, run_dir: Path) -> None:
        if self.started:  # a run that failed before it started has nothing to close
            self._call("finish", final, run_dir)


def make_tracker(name: str | None, uri: str | None = None) -> Tracker:
    """The tracker called ``name`` (None or ``"none"``: records nothing); imports its library now,
    so a missing extra is a clear error before training starts."""
    if name in (None, "", "none"):
        return Tracker()
    if name == "mlflow":
        return Guarded(MlflowTracker(uri), name)
    if name == "tensorboard":
        return Guarded(TensorboardTracker(uri), name)
    raise ConfigError(f"unknown tracker {name!r}; choose {' or '.join(TRACKERS)}")


__all__ = ["TRACKERS", "Tracker", "TrackerWarning", "make_tracker", "metric_name"]
