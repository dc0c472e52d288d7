"""The report's figures (matplotlib, Agg backend, PNG).

- :func:`plot_bits`: the primary metric against code length, one line per method, mean ± sd over seeds.
- :func:`plot_curves`: validation Recall@20 (and beta) against the training epoch, one line per
  method/variant (the guidance schedules), mean over seeds, from each run's ``metrics.jsonl``.
- :func:`plot_qps`: accuracy against queries per second for Hamming, hierarchical and continuous
  retrieval of the same runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from hashgnn.experiment.results import aggregate
from hashgnn.experiment.suite import Suite
from hashgnn.methods import CODE_MODES
from hashgnn.run import Run

_MODE_STYLE = {"hamming": ("-", "o"), "hierarchical": ("--", "s"), "continuous": (":", "^")}


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def _metric_label(key: str) -> str:
    name, k = key.rsplit("@", 1)
    pretty = {
        "recall": "Recall",
        "ndcg": "NDCG",
        "ndcg_legacy": "NDCG (legacy)",
        "precision": "Precision",
        "hit": "HitRate",
    }
    return f"{pretty.get(name, name)}@{k}"


def plot_bits(suite: Suite, rows: list[dict[str, Any]], path: Path, primary: str) -> Path | None:
    """The primary metric against code length per method (Hamming solid, hierarchical dashed)."""
    settings = [s for s in suite.settings if s.mode in CODE_MODES]
    agg = aggregate(rows, [primary])
    datasets = [d for d in suite.datasets if any(k[0] == d for k in agg)]
    if not datasets or not settings:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.0), squeeze=False)
    order = [p.label for p in suite.points()]
    labels = sorted({k[3] for k in agg}, key=order.index)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, ds in zip(axes[0], datasets, strict=True):
        for li, label in enumerate(labels):
            for s in settings:
                pts = [(k, agg[(ds, k, s.name, label)][primary]) for k in suite.bits if (ds, k, s.name, label) in agg]
                if not pts:
                    continue
                ls, mk = _MODE_STYLE[s.mode]
                x = [p[0] for p in pts]
                y = [p[1].mean for p in pts]
                e = [p[1].sd or 0.0 for p in pts]
                ax.errorbar(
                    x,
                    y,
                    yerr=e,
                    ls=ls,
                    marker=mk,
                    ms=4,
                    capsize=3,
                    color=colors[li % len(colors)],
                    label=f"{label} ({s.name})",
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(suite.bits)
        ax.set_xticklabels([str(b) for b in suite.bits])
        ax.set_xlabel("code length K (bits)")
        ax.set_ylabel(f"test {_metric_label(primary)}")
        ax.set_title(ds)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(
        f"{suite.name}: {_metric_label(primary)} against code length (mean ± sd over seeds; "
        "solid Hamming, dashed hierarchical)",
        fontsize=10,
    )
    return _save(fig, path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    except FileNotFoundError:
        return []


def training_curves(
    suite: Suite, out: Path, key: str = "valid_recall@20"
) -> dict[tuple[str, int, str], dict[str, np.ndarray]]:
    """Per (dataset, bits, label): epochs and the mean over seeds of ``key`` and beta, from metrics.jsonl.

    Only finished runs count; an epoch is averaged over the seeds that reached it.
    """
    from hashgnn.experiment.results import run_dir

    per: dict[tuple[str, int, str], list[list[dict[str, Any]]]] = {}
    for p in suite.points():
        folder = run_dir(out, suite, p)
        if not (folder / Run.FINAL_METRICS).exists():
            continue
        rows = _read_jsonl(folder / Run.METRICS_LOG)
        if rows:
            per.setdefault((p.dataset, p.bits, p.label), []).append(rows)
    curves: dict[tuple[str, int, str], dict[str, np.ndarray]] = {}
    for g, runs in per.items():
        acc: dict[int, list[float]] = {}
        beta: dict[int, list[float]] = {}
        for rows in runs:
            for r in rows:
                if key in r and r[key] is not None and math.isfinite(r[key]):
                    acc.setdefault(int(r["epoch"]), []).append(float(r[key]))
                if "beta" in r:
                    beta.setdefault(int(r["epoch"]), []).append(float(r["beta"]))
        ep = np.array(sorted(acc), dtype=np.int64)
        be = np.array(sorted(beta), dtype=np.int64)
        curves[g] = {
            "epoch": ep,
            "value": np.array([np.mean(acc[e]) for e in ep]),
            "beta_epoch": be,
            "beta": np.array([np.mean(beta[e]) for e in be]),
        }
    return curves


def plot_curves(suite: Suite, out: Path, path: Path, key: str = "valid_recall@20") -> Path | None:
    """Validation accuracy (top) and beta (bottom) against the epoch, per (dataset, bits) column."""
    curves = training_curves(suite, out, key)
    if not curves:
        return None
    cols = sorted({(g[0], g[1]) for g in curves}, key=lambda c: (suite.datasets.index(c[0]), c[1]))
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(
        2,
        len(cols),
        figsize=(5.6 * len(cols), 6.2),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1.3]},
        sharex="col",
    )
    order = [p.label for p in suite.points()]
    # One colour per schedule, shared by its node and bit granularities (solid and dashed), so that
    # eleven or more series stay distinguishable.
    stems = list(dict.fromkeys(_granularity_split(lab)[0] for lab in order))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ci, (ds, bits) in enumerate(cols):
        labels = sorted({g[2] for g in curves if g[:2] == (ds, bits)}, key=order.index)
        for label in labels:
            c = curves[(ds, bits, label)]
            stem, gran = _granularity_split(label)
            style = {"color": colors[stems.index(stem) % len(colors)], "ls": "--" if gran == "bit" else "-"}
            axes[0][ci].plot(c["epoch"] + 1, c["value"], marker="o", ms=2.0, lw=1.1, label=label, **style)
            if len(c["beta"]):
                axes[1][ci].plot(c["beta_epoch"] + 1, c["beta"], lw=1.2, **style)
        axes[0][ci].set_title(f"{ds}, {bits} bits")
        axes[0][ci].set_ylabel(f"validation {_metric_label(key.removeprefix('valid_'))}")
        axes[0][ci].grid(alpha=0.3)
        axes[1][ci].set_ylabel("beta (P[code])")
        axes[1][ci].set_xlabel("epoch")
        axes[1][ci].set_ylim(-0.05, 1.05)
        axes[1][ci].grid(alpha=0.3)
        axes[1][ci].xaxis.set_major_locator(MaxNLocator(integer=True))
        if ci == len(cols) - 1:
            axes[0][ci].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(
        f"{suite.name}: validation accuracy of the served codes during training (mean over seeds)", fontsize=10
    )
    return _save(fig, path)


def _granularity_split(label: str) -> tuple[str, str | None]:
    """``'x-linear10-bit'`` -> ``('x-linear10', 'bit')``; labels without the suffix are their own stem."""
    stem, _, last = label.rpartition("-")
    return (stem, last) if stem and last in ("node", "bit") else (label, None)


def plot_qps(points: list[dict[str, Any]], path: Path, primary: str, title: str) -> Path | None:
    """Accuracy against queries per second. ``points``: dataset, label, mode, qps, value."""
    if not points:
        return None
    datasets = list(dict.fromkeys(p["dataset"] for p in points))
    plt = _plt()
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.4 * len(datasets), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    series = list(dict.fromkeys(p["label"] for p in points))
    for ax, ds in zip(axes[0], datasets, strict=True):
        for mode, (_, mk) in _MODE_STYLE.items():
            for si, label in enumerate(series):
                pts = [p for p in points if p["dataset"] == ds and p["label"] == label and p["mode"] == mode]
                if pts and all(math.isfinite(p["value"]) for p in pts):
                    ax.scatter(
                        [p["qps"] for p in pts],
                        [p["value"] for p in pts],
                        marker=mk,
                        s=40,
                        color=colors[si % len(colors)],
                        label=f"{label}: {mode}",
                    )
        ax.set_xscale("log")
        ax.set_xlabel("queries per second (log scale; all test users, training items excluded)")
        ax.set_ylabel(f"test {_metric_label(primary)}")
        ax.set_title(ds)
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
