"""The results file of a suite: one JSON row per (run, retrieval setting), and their averages over seeds.

Rows are rebuilt from the run folders (``final_metrics.json``, and ``experiment.json`` for errors),
so the file always says what the folders hold. A row of a finished run::

    {"suite": "paper", "dataset": "ml-1m", "method": "hashgnn", "variant": null, "label": "hashgnn",
     "bits": 32, "seed": 12345, "run": "ml-1m/hashgnn/bits32/seed12345", "setting": "hamming",
     "mode": "hamming", "candidates": null, "status": "ok", "error": null, "encoder": "sage",
     "epochs_run": 15, "best_epoch": 14, "train_seconds": ..., "seconds_per_epoch": ...,
     "wall_seconds": ..., "recall@20": ..., "ndcg@20": ..., "ndcg_legacy@50": ..., ...}

A run that failed gives one row per setting with ``"status": "error"``, its message and no metrics.
Grid points never run are not rows; the report lists them as left out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hashgnn import io
from hashgnn.errors import ConfigError
from hashgnn.experiment.suite import GridPoint, Setting, Suite
from hashgnn.run import Run

RESULTS_FILE = "results.jsonl"
RUN_INFO = Run.RUNNER_RECORD  # per run folder: the runner's record (status, error, wall time)
SETTINGS_CACHE = Run.SETTINGS_CACHE  # per run folder: evaluations the run itself did not make


def suite_dir(out: str | Path, suite: Suite) -> Path:
    """The folder of a suite's runs and results: ``<out>/<suite name>``."""
    return Path(out) / suite.name


def run_dir(out: str | Path, suite: Suite, point: GridPoint) -> Path:
    """``<out>/<suite>/<dataset>/<method>[-<variant>]/bits<K>/seed<S>``, always inside ``out``."""
    folder = suite_dir(out, suite) / point.run_id
    root = Path(out).resolve()
    if root not in folder.resolve().parents:  # names are checked on load; this guards every caller
        raise ConfigError(f"run folder {folder} of suite {suite.name!r} would lie outside --out {out}")
    return folder


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_json(path, obj)


def setting_metrics(
    folder: Path, final: dict[str, Any], setting: Setting, evaluate: bool = True
) -> dict[str, float] | None:
    """Test metrics of a finished run in ``setting``.

    Taken from ``final_metrics.json`` when the run evaluated that mode (and, for hierarchical, the same
    C); otherwise the saved codes are evaluated once with the run's cut-offs (so ``ndcg_legacy`` keeps
    its depth) and cached in ``settings_metrics.json``. None when missing and ``evaluate`` is False.
    """
    from hashgnn.config import RunConfig

    cfg = RunConfig.load(folder / Run.CONFIG)
    c = setting.candidates if setting.mode == "hierarchical" else None
    if setting.mode in final.get("test", {}) and (c is None or c == cfg.eval.candidates):
        return dict(final["test"][setting.mode])
    key = f"{setting.mode}:{c}"
    cache = read_json(folder / SETTINGS_CACHE) or {}
    if key in cache:
        return dict(cache[key])
    if not evaluate:
        return None
    from hashgnn.train.run import evaluate_run

    m = evaluate_run(folder, mode=setting.mode, ks=list(cfg.eval.ks), candidates=c, progress=False)
    cache[key] = m
    write_json(folder / SETTINGS_CACHE, cache)
    return dict(m)


def _base_row(suite: Suite, p: GridPoint, s: Setting) -> dict[str, Any]:
    return {
        "suite": suite.name,
        "dataset": p.dataset,
        "method": p.method,
        "variant": p.variant,
        "label": p.label,
        "bits": p.bits,
        "seed": p.seed,
        "run": p.run_id,
        "setting": s.name,
        "mode": s.mode,
        "candidates": (s.candidates or p.config.eval.candidates) if s.mode == "hierarchical" else None,
    }


def stale_diff(folder: Path, p: GridPoint) -> list[str]:
    """How the config saved in ``folder`` differs from the grid point's (empty: it is this point's run)."""
    from hashgnn.config import RunConfig
    from hashgnn.errors import HashgnnError
    from hashgnn.experiment.suite import config_diff

    try:
        saved = RunConfig.load(folder / Run.CONFIG)
    except HashgnnError as e:
        return [f"{Run.CONFIG} unreadable ({e})"]
    return config_diff(p.config, saved)


def stale_message(folder: Path, diff: list[str]) -> str:
    """The error of a run folder made with another config."""
    return (
        f"{folder} holds a run made with a different config ({'; '.join(diff[:3])}"
        f"{'; ...' if len(diff) > 3 else ''}; suite value != folder value); delete that folder to rerun it "
        "with the suite's config, or pass another --out"
    )


def collect_rows(suite: Suite, out: str | Path, evaluate: bool = True) -> tuple[list[dict[str, Any]], list[GridPoint]]:
    """Rows of every finished or failed grid point, and the grid points that have neither (left out)."""
    from hashgnn.errors import HashgnnError

    rows: list[dict[str, Any]] = []
    missing: list[GridPoint] = []
    for p in suite.points():
        folder = run_dir(out, suite, p)
        info = read_json(folder / RUN_INFO) or {}
        final = read_json(folder / Run.FINAL_METRICS)
        diff = stale_diff(folder, p) if final is not None else []
        if final is not None and not diff:
            for s in suite.settings:
                row = _base_row(suite, p, s)
                row.update(
                    status="ok",
                    error=None,
                    encoder=final.get("encoder"),
                    epochs_run=final.get("epochs_run"),
                    best_epoch=final.get("best_epoch"),
                    train_seconds=final.get("train_seconds"),
                    seconds_per_epoch=final.get("seconds_per_epoch"),
                    wall_seconds=info.get("wall_seconds"),
                    reused_from=info.get("reused_from"),
                )
                try:
                    m = setting_metrics(folder, final, s, evaluate)
                except HashgnnError as e:
                    m, row["status"], row["error"] = None, "error", f"evaluating setting {s.name} failed: {e}"
                if m is not None:
                    row.update({k: float(v) for k, v in m.items()})
                elif row["status"] == "ok":
                    row.update(
                        status="error",
                        error=f"setting {s.name} is not evaluated yet (run the suite without --report-only)",
                    )
                rows.append(row)
        elif final is not None or info.get("status") == "error":
            error = stale_message(folder, diff) if final is not None else info.get("error")
            for s in suite.settings:
                row = _base_row(suite, p, s)
                row.update(status="error", error=error, wall_seconds=info.get("wall_seconds"))
                rows.append(row)
        else:
            missing.append(p)
    return rows, missing


def write_results(rows: list[dict[str, Any]], path: Path) -> None:
    """Write the rows as JSON lines, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_text(path, "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows))


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a results file."""
    text = Path(path).read_text()
    return [json.loads(x) for x in text.splitlines() if x.strip()]


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof = 1) over seeds; sd is None for a single seed."""

    mean: float
    sd: float | None
    n: int

    def fmt(self, digits: int = 4) -> str:
        """``0.1234 ± 0.0012`` (or ``0.1234`` for one seed)."""
        if not math.isfinite(self.mean):
            return "n/a"
        if self.sd is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"

    @property
    def sem(self) -> float | None:
        """Standard error of the mean."""
        return None if self.sd is None else self.sd / math.sqrt(self.n)


def stat(values: list[float]) -> Stat:
    """Mean and sample standard deviation of ``values`` (non-finite values make the mean NaN)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return Stat(float("nan"), None, 0)
    return Stat(float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else None, int(a.size))


def aggregate(rows: list[dict[str, Any]], keys: list[str]) -> dict[tuple[str, int, str, str], dict[str, Stat]]:
    """Average the ``ok`` rows over seeds: ``(dataset, bits, setting, label) -> {key: Stat}``."""
    groups: dict[tuple[str, int, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("status") == "ok":
            groups.setdefault((r["dataset"], r["bits"], r["setting"], r["label"]), []).append(r)
    out: dict[tuple[str, int, str, str], dict[str, Stat]] = {}
    for g, rs in groups.items():
        out[g] = {k: stat([float(r[k]) for r in rs if r.get(k) is not None]) for k in keys}
    return out
