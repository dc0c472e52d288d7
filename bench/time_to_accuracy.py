"""Validation Recall@20 against wall-clock time: run folders of the epoch trainer and fitted methods.

    python bench/time_to_accuracy.py --run runs/gowalla-plain runs/gowalla-reference \\
        --reported-epoch-seconds 338.7 --out docs/figures/time-to-accuracy.png

An epoch-trainer run contributes its curve (cumulative training seconds from metrics.jsonl against
the validation Recall@20 of each validated epoch; validation time is not included). A fitted run
(``spectral``, ``spectral_distill``) contributes one point: its whole fit time (``train_seconds``:
the fit on the carve-out, its validation, and the refit on the full split) against its validation
Recall@20. ``--reported-epoch-seconds S`` adds LightGCN-PyTorch's recipe as points at its own
README's Recall@20 (0.1071 after epoch 5, 0.1824 after 1000; **test** figures it reports, not
validation, and not rerun here) placed at ``S`` seconds per epoch, a time measured on this kind of
machine (docs/MODEL.md, "Speed"). ``--point METHOD LABEL SECONDS RECALL`` adds one recorded whole-fit point whose run folder is
not at hand (drawn as a fitted run's star). ``--history FILE NAME SECONDS`` adds the per-epoch validation
Recall@20 of run NAME recorded in FILE (bench/results/gpu-h200/runs-*.jsonl: the H200 runs of
2026-11-27) placed at SECONDS per epoch, the epoch time measured for the same recipe on 2 CPU cores
(docs/RESULTS.md, "Training speed"): the accuracy of every epoch as trained, the time it would take
here. The figure says which is which. A JSON summary goes to stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

REPORTED = ((5, 0.1071), (1000, 0.1824))  # LightGCN-PyTorch README, gowalla, epochs -> test Recall@20


def curve(run: Path) -> dict:
    """The run's (seconds, validation Recall@20) points and a label."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    method = cfg["model"]["method"]
    final = json.loads((run / "final_metrics.json").read_text()) if (run / "final_metrics.json").exists() else {}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    if method.startswith("spectral"):
        pts = [(float(final["train_seconds"]), float(final["best_valid_recall@20"]))]
    else:
        t, pts = 0.0, []
        for r in rows:
            t += float(r.get("seconds", 0.0))
            if "valid_recall@20" in r:
                pts.append((t, float(r["valid_recall@20"])))
    test = final.get("test", {}).get(final.get("serving_mode", "continuous"), {}).get("recall@20")
    return {"run": str(run), "method": method, "points": pts, "test_recall@20": test}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, nargs="*", default=[])
    ap.add_argument("--history", nargs=3, action="append", default=[], metavar=("FILE", "NAME", "SECONDS"))
    ap.add_argument(
        "--point",
        nargs=4,
        action="append",
        default=[],
        metavar=("METHOD", "LABEL", "SECONDS", "RECALL"),
        help="a recorded whole-fit point whose run folder is not at hand (e.g. a fitted run of an earlier day)",
    )
    ap.add_argument("--reported-epoch-seconds", type=float, default=None)
    ap.add_argument("--target", type=float, default=0.1830, help="horizontal line (LightGCN paper, gowalla)")
    ap.add_argument("--out", type=Path, default=Path("docs/figures/time-to-accuracy.png"))
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [curve(r) for r in args.run]
    for file, name, seconds in args.history:
        rec = next(json.loads(x) for x in Path(file).read_text().splitlines() if json.loads(x)["name"] == name)
        pts = [
            ((r["epoch"] + 1) * float(seconds), float(r["valid_recall@20"]))
            for r in rec["history"]
            if "valid_recall@20" in r
        ]
        curves.append(
            {
                "run": f"{name} ({Path(file).name}; {seconds} s/epoch on 2 CPU cores)",
                "method": rec["final"]["method"],
                "points": pts,
                "test_recall@20": rec["final"]["test"][rec["final"]["serving_mode"]]["recall@20"],
            }
        )
    for method, label, seconds, recall in args.point:
        curves.append({"run": f"{label} (recorded)", "method": method, "points": [(float(seconds), float(recall))]})
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for c in curves:
        xs = [p[0] / 60 for p in c["points"]]
        ys = [p[1] for p in c["points"]]
        style = {"marker": "*", "ms": 14, "ls": ""} if c["method"].startswith("spectral") else {"marker": "o", "ms": 3}
        label = c["run"] if "(" in c["run"] else Path(c["run"]).name
        ax.plot(xs, ys, label=f"{c['method']}: {label}, validation", **style)
    if args.reported_epoch_seconds:
        xs = [e * args.reported_epoch_seconds / 60 for e, _ in REPORTED]
        ax.plot(
            xs,
            [r for _, r in REPORTED],
            "s--",
            color="grey",
            label="LightGCN-PyTorch: its README's test Recall@20, at our measured s/epoch",
        )
    ax.axhline(args.target, color="tab:red", lw=0.8, ls=":", label=f"target {args.target}")
    ax.set_xscale("log")
    ax.set_xlabel("wall time, minutes (log scale; 2 CPU cores)")
    ax.set_ylabel("Recall@20")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(json.dumps({"out": str(args.out), "curves": curves}, indent=1))


if __name__ == "__main__":
    main()
