"""The Markdown report of one or more suites (docs/REPRODUCTION.md is one), with its figures.

For every suite: what it ran (grid, settings, protocol), how long it took, a table per data set, code
length and retrieval setting with the mean ± sd over seeds (the best hashing row marked), the
paper's claims next to the measurements (where the suite asks for them), figures, failed runs and
the grid points left out, with why. The header names the commit and the machine. Where the numbers
disagree with a claim, the report says so; nothing here adjusts the protocol.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hashgnn.environment import git_commit, machine_info
from hashgnn.errors import HashgnnError
from hashgnn.experiment.claims import COMPARABLE, Claim, check_claims, claims_table, md_cell
from hashgnn.experiment.qps import suite_qps
from hashgnn.experiment.results import (
    RESULTS_FILE,
    RUN_INFO,
    Stat,
    aggregate,
    collect_rows,
    read_json,
    run_dir,
    stale_diff,
    suite_dir,
    write_results,
)
from hashgnn.experiment.runner import Selection, read_invocations
from hashgnn.experiment.suite import GridPoint, Setting, Suite
from hashgnn.io import write_text
from hashgnn.methods import MODES, get_method, names
from hashgnn.run import Run

HASHING = names(hashing=True)


def _hms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    h, rem = divmod(s, 3600)
    m = rem // 60
    return f"{h} h {m:02d} min" if h else f"{m} min {s % 60:02d} s"


def _n(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# ---------------------------------------------------------------------------------- left out
def missing_reason(folder: Path, p: GridPoint, invocations: list[dict[str, Any]]) -> str:
    """Why a grid point has no result: interrupted, another config in its folder, not selected, not run."""
    info = read_json(folder / RUN_INFO) or {}
    if (folder / Run.CONFIG).exists():
        if stale_diff(folder, p):
            return "its folder holds a run of another config"
        return "interrupted; running the suite again resumes it"
    if info.get("status") == "interrupted":
        return "interrupted before its first checkpoint"
    if not invocations:
        return "not run yet"
    sel = invocations[-1].get("selection") or {}
    s = Selection(**{k: sel.get(k) for k in ("methods", "datasets", "bits", "seeds", "variants")})
    if not s.selects(p):
        return f"not selected (last invocation: {invocations[-1].get('selection_cli', 'filtered')})"
    if invocations[-1].get("state") == "interrupted":
        return "not reached (the last invocation was interrupted)"
    return "not run yet"


def _left_out_table(suite: Suite, out: Path, missing: list[GridPoint], invocations: list[dict[str, Any]]) -> list[str]:
    groups: dict[tuple[str, str, int], tuple[list[str], list[int], int]] = {}
    for p in missing:
        key = (missing_reason(run_dir(out, suite, p), p, invocations), p.dataset, p.bits)
        labels, seeds, n = groups.get(key, ([], [], 0))
        if p.label not in labels:
            labels.append(p.label)
        if p.seed not in seeds:
            seeds.append(p.seed)
        groups[key] = (labels, seeds, n + 1)
    lines = ["| why | data set | bits | methods | seeds | runs |", "|---|---|---:|---|---|---:|"]
    for (why, ds, bits), (labels, seeds, n) in groups.items():
        lines.append(f"| {md_cell(why)} | {ds} | {bits} | {', '.join(labels)} | {', '.join(map(str, seeds))} | {n} |")
    return lines


# ------------------------------------------------------------------------------- provenance
def _code_label(record: dict[str, Any]) -> str:
    if record.get("commit"):
        return f"`{str(record['commit'])[:12]}`" + (
            " with uncommitted changes" if record.get("uncommitted_changes") else ""
        )
    return f"hashgnn {record.get('hashgnn', '?')} (not a git checkout)"


def _machine_label(record: dict[str, Any]) -> str:
    gpu = record.get("gpu") or "no GPU"
    return f"{record.get('cpu', '?')}, {record.get('usable_cpus', '?')} usable CPUs, {gpu}"


def trained_at(suites: list[Suite], out: Path) -> tuple[str, str]:
    """Which code, and which machines, trained the suites' finished runs (their ``environment.json``).

    A run resumed under other code or on another machine counts once under each; runs written before
    run folders recorded their environment are counted apart, so a report never claims what it cannot show.
    """
    code: dict[str, int] = {}
    machines: dict[str, int] = {}
    unknown = 0
    for suite in suites:
        for p in suite.points():
            folder = run_dir(out, suite, p)
            if not (folder / Run.FINAL_METRICS).exists():
                continue
            try:
                records = Run(folder).environment
            except HashgnnError:
                records = []
            unknown += not records
            for counts, label in ((code, _code_label), (machines, _machine_label)):
                for key in {label(r) for r in records}:
                    counts[key] = counts.get(key, 0) + 1

    def line(counts: dict[str, int]) -> str:
        parts = [f"{key} ({_n(n, 'run')})" for key, n in sorted(counts.items(), key=lambda kv: -kv[1])]
        if unknown:
            parts.append(f"not recorded for {_n(unknown, 'run')} (run folders written before hashgnn recorded it)")
        return "; ".join(parts) if parts else "no finished runs"

    return line(code), line(machines)


# ------------------------------------------------------------------------------------- tables
def _kind(method: str) -> str:
    return "hashing" if method in HASHING else "continuous"


def _ours(method: str) -> bool:
    """This project's own methods (the improved recipe and the fitted reference), not the paper's."""
    m = get_method(method)
    return m.role == "improved" or m.fit is not None


def _table(
    suite: Suite,
    agg: dict[Any, dict[str, Stat]],
    rows: list[dict[str, Any]],
    ds: str,
    bits: int,
    s: Setting,
    primary: str,
    popular: dict[str, float] | None,
) -> list[str]:
    labels = [lab for lab in dict.fromkeys(p.label for p in suite.points()) if (ds, bits, s.name, lab) in agg]
    if not labels:
        return []
    method_of = {p.label: p.method for p in suite.points()}
    best = None
    if primary in s.metrics:
        cands = [(agg[(ds, bits, s.name, lab)][primary].mean, lab) for lab in labels if method_of[lab] in HASHING]
        cands = [c for c in cands if math.isfinite(c[0])]
        best = max(cands)[1] if cands else None
    times: dict[str, list[float]] = {}
    epochs: dict[str, list[float]] = {}
    served: dict[str, list[float]] = {}  # the validated epoch whose weights are served (0-based)
    for r in rows:
        if r["status"] == "ok" and r["dataset"] == ds and r["bits"] == bits and r["setting"] == s.name:
            times.setdefault(r["label"], []).append(float(r.get("train_seconds") or float("nan")))
            epochs.setdefault(r["label"], []).append(float(r.get("epochs_run") or float("nan")))
            if r.get("best_epoch") is not None and r["best_epoch"] >= 0:
                served.setdefault(r["label"], []).append(float(r["best_epoch"]))
    head = ["method", "kind", "seeds", *s.metrics, "epochs", "served epoch", "train time / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---", "---:"] + ["---:"] * (len(head) - 3)) + "|"]
    for lab in labels:
        st = agg[(ds, bits, s.name, lab)]
        n = max(v.n for v in st.values())
        name = f"**{lab}** (best hashing)" if lab == best else lab
        kind = _kind(method_of[lab])
        if kind == "continuous" and s.mode != "continuous":
            kind = "continuous (sign of z)" if s.mode == "hamming" else "continuous (signs, then z)"
        if _ours(method_of[lab]):
            kind += ", this project's (not the paper's)"
        ep = sum(epochs.get(lab, [math.nan])) / max(len(epochs.get(lab, [])), 1)
        tt = sum(times.get(lab, [math.nan])) / max(len(times.get(lab, [])), 1)
        sv = served.get(lab)
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    kind,
                    str(n),
                    *(st[m].fmt() for m in s.metrics),
                    f"{ep:.0f}" if math.isfinite(ep) else "n/a",
                    f"{sum(sv) / len(sv):.0f}" if sv else "–",
                    _hms(tt),
                ]
            )
            + " |"
        )
    if popular:
        vals = [f"{popular[m]:.4f}" if m in popular else "n/a" for m in s.metrics]
        lines.append("| most popular | reference | – | " + " | ".join(vals) + " | – | – |")
    return lines


def _popular(suite: Suite, out: Path, ds: str) -> dict[str, float] | None:
    for p in suite.points():
        if p.dataset == ds:
            f = read_json(run_dir(out, suite, p) / Run.FINAL_METRICS)
            if f and f.get("baseline_popular"):
                return f["baseline_popular"]
    return None


def _protocol(suite: Suite) -> list[str]:
    """A few lines on the shared training protocol and what differs per method / variant."""
    p0 = suite.points()[0].config
    m, t, e, d = p0.model, p0.train, p0.eval, p0.data
    sched = (
        {
            "staircase": f"staircase (+{m.beta_step} every {m.beta_hold} epochs)",
            "linear": f"linear over {m.beta_epochs} epochs",
            "constant": f"constant {m.beta_value}",
        }[m.beta_schedule]
        if m.beta_schedule in ("staircase", "linear", "constant")
        else m.beta_schedule
    )
    lines = [
        f"- Shared protocol (first grid point; per-method patches below): encoder `{m.encoder}`, "
        f"{_n(t.epochs, 'epoch')}, batch {t.batch_size} positive edges, {_n(t.negatives, 'negative')}, "
        f"Adam lr {t.lr}, "
        f"{t.ranking_loss} ranking loss + {t.recon_weight} × reconstruction, guidance `{m.guidance}` with "
        f"beta {sched}; validation split {d.valid_fraction} of train, served weights from the best "
        f"validation Recall@20 epoch; test cut-offs {e.ks} (ndcg_legacy depth {max(e.ks)}), C = {e.candidates}."
    ]
    for name, patches in (
        ("method", suite.overrides),
        ("data set", suite.dataset_overrides),
        ("variant", suite.variants),
    ):
        for key, patch in patches.items():
            flat = ", ".join(f"{sec}.{k} = {v}" for sec, kv in patch.items() for k, v in (kv or {}).items())
            lines.append(f"- {name} `{key}`: {flat or '(no change)'}")
    return lines


# ------------------------------------------------------------------------------------- qps
def _qps_points(suite: Suite, out: Path, qps: dict[str, dict[str, Any]], primary: str) -> list[dict[str, Any]]:
    pts = []
    for run_id, q in qps.items():
        final = read_json(suite_dir(out, suite) / run_id / Run.FINAL_METRICS) or {}
        for mode in MODES:
            if f"{mode}_qps" in q and mode in final.get("test", {}):
                pts.append(
                    {
                        "dataset": q["dataset"],
                        "label": f"{q['label']} {q['bits']}b",
                        "mode": mode,
                        "qps": q[f"{mode}_qps"],
                        "value": float(final["test"][mode].get(primary, math.nan)),
                        "run": run_id,
                    }
                )
    return pts


# ------------------------------------------------------------------------------------- report
@dataclass
class SuiteReport:
    """The Markdown of one suite and the claims it checked."""

    markdown: list[str]
    claims: list[Claim]
    rows: list[dict[str, Any]]


def suite_report(
    suite: Suite,
    out: Path,
    fig_dir: Path,
    rel_base: Path,
    qps: bool = True,
    progress: bool = True,
    evaluate: bool = True,
) -> SuiteReport:
    """Markdown lines for ``suite`` (figures into ``fig_dir``, linked relative to ``rel_base``)."""
    from hashgnn.experiment import plots

    out = Path(out)
    sdir = suite_dir(out, suite)
    rows, missing = collect_rows(suite, out, evaluate=evaluate)
    write_results(rows, sdir / RESULTS_FILE)
    primary = suite.report.primary
    keys = sorted({m for s in suite.settings for m in s.metrics} | {primary})
    agg = aggregate(rows, keys)
    invocations = read_invocations(sdir)
    points = suite.points()
    ok_runs = {r["run"] for r in rows if r["status"] == "ok"}
    err_runs = {r["run"]: r["error"] for r in rows if r["status"] == "error"}
    L: list[str] = [f"## Suite `{suite.name}` ({md_cell(suite.report.title or suite.path.name)})", ""]
    if suite.description:
        L += [suite.description, ""]
    n_var = len(suite.variants) or 1
    L += [
        f"- Suite file: `{suite.path}`; runs in `{sdir}`; results: `{sdir / RESULTS_FILE}` "
        f"(one JSON row per run and setting).",
        f"- Grid: {_n(len(suite.methods), 'method')} ({', '.join(suite.methods)}) × "
        f"{_n(len(suite.datasets), 'data set')} "
        f"({', '.join(suite.datasets)}) × bits {', '.join(map(str, suite.bits))} × seeds "
        f"{', '.join(map(str, suite.seeds))}"
        + (f" × {n_var} variants" if suite.variants else "")
        + f" = {len(points)} runs.",
        "- Settings: " + "; ".join(f"{s.label} ({', '.join(s.metrics)})" for s in suite.settings) + ".",
        f"- Runs: {len(ok_runs)} finished, {len(err_runs)} failed, {len(missing)} left out.",
        *_protocol(suite),
    ]
    # wall time
    infos = {p.run_id: read_json(run_dir(out, suite, p) / RUN_INFO) or {} for p in points if p.run_id in ok_runs}
    run_wall = [float(i.get("wall_seconds") or 0.0) for i in infos.values()]
    killed = sum(1 for i in infos.values() if i.get("killed_attempts"))
    # Records written before killed attempts were counted hold only the last attempt's time.
    short = sum(
        1
        for r in rows
        if r["status"] == "ok"
        and r["setting"] == suite.settings[0].name
        and float(r.get("train_seconds") or 0.0) > float(infos.get(r["run"], {}).get("wall_seconds") or 0.0) > 0
    )
    reused = [
        p
        for p in points
        if p.run_id in ok_runs and (read_json(run_dir(out, suite, p) / RUN_INFO) or {}).get("reused_from")
    ]
    train_s = [
        float(r.get("train_seconds") or 0.0)
        for r in rows
        if r["status"] == "ok" and r["setting"] == suite.settings[0].name
    ]
    inv_wall = sum(float(i.get("wall_seconds") or 0.0) for i in invocations)
    line = (
        f"- Wall time: {_hms(sum(run_wall))} for the {len(run_wall)} finished runs (training, validation and "
        f"test evaluation; training epochs: {_hms(sum(train_s))} in all)"
    )
    if reused:
        line += f", not counting {len(reused)} runs copied from identical runs of another suite"
    if killed:
        line += f"; {_n(killed, 'run')} resumed after a killed attempt, counted to the last file it wrote"
    if short:
        line += (
            f"; for {_n(short, 'run')} the recorded wall time covers only the last attempt (resumed after a "
            "killed attempt before such attempts were counted) and is shorter than the training"
        )
    line += f"; {len(invocations)} invocation(s) of `hashgnn experiment` took {_hms(inv_wall)} in all"
    if invocations:
        line += f" on {', '.join(sorted({i.get('host', '?') for i in invocations}))}"
    L += [line + ".", ""]
    # tables
    L += [
        f"Mean ± sample standard deviation over seeds. **Bold**: the hashing method with the best "
        f"{primary} in that table. Continuous models in the Hamming setting are ranked by sign(z).",
        "",
    ]
    for ds in suite.datasets:
        popular = _popular(suite, out, ds)
        for bits in suite.bits:
            blocks = []
            for s in suite.settings:
                t = _table(suite, agg, rows, ds, bits, s, primary, popular)
                if t:
                    blocks += [f"#### {s.label}", "", *t, ""]
            if blocks:
                L += [f"### {ds}, {bits} bits", "", *blocks]
    # claims
    qps_res: dict[str, dict[str, Any]] = {}
    if qps and "qps" in suite.report.plots:
        qps_res = suite_qps(suite, out)  # measured by `hashgnn experiment` (measure_suite_qps), not here
    claims = check_claims(suite, rows, primary, qps_res) if suite.report.claims else []
    if claims:
        L += [
            "### The paper's claims against these measurements",
            "",
            'The paper says the codes are "comparable" to the continuous counterpart without a number; the '
            f"targets used here are the project's: Hamming ≥ {COMPARABLE['hamming']:.0%} and hierarchical ≥ "
            f"{COMPARABLE['hierarchical']:.0%} of the continuous model's {primary} (continuous model ranked by its "
            'z). "Above" compares means over seeds; the standard error of the difference says whether seed '
            "noise could explain it.",
            "",
            *claims_table(claims, primary),
            "",
        ]
        bad = [c for c in claims if c.agrees is False]
        if bad:
            L += [
                f"**Where our numbers disagree with the paper:** {len(bad)} of "
                f"{sum(c.agrees is not None for c in claims)} checked claims; see the rows marked "
                '"disagrees" above.',
                "",
            ]
    # figures
    figs: list[tuple[str, Path]] = []
    if "bits" in suite.report.plots and len({r["bits"] for r in rows if r["status"] == "ok"}) > 1:
        f = plots.plot_bits(suite, rows, fig_dir / f"{suite.name}-bits.png", primary)
        if f:
            figs.append((f"{primary} against code length", f))
    if "curves" in suite.report.plots:
        f = plots.plot_curves(suite, out, fig_dir / f"{suite.name}-curves.png")
        if f:
            figs.append(("Validation Recall@20 against epoch (beta below)", f))
    if qps_res:
        pts = _qps_points(suite, out, qps_res, primary)
        f = plots.plot_qps(
            pts, fig_dir / f"{suite.name}-qps.png", primary, f"{suite.name}: test {primary} against queries per second"
        )
        if f:
            figs.append((f"{primary} against queries per second", f))
        L += [
            "### Retrieval speed on the runs' codes",
            "",
            f"Every test user is a query for the top {suite.report.qps_k} items, with the retrieval engine: "
            "`HammingIndex` (own kernel), `HierarchicalIndex` (Hamming top-C re-ranked by z) and `FloatIndex` "
            "on z (the faster of faiss and torch). Best of 3 timed passes after a warm-up, first seed's run. "
            "*search* is the search alone (plotted, and used for the speed claim); *excluding train* also "
            "removes each user's training items from the results, as the evaluation does.",
            "",
            "| data set | run | mode | queries | items | threads | q/s, search | q/s, excluding train | "
            + primary
            + " |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for pt in pts:
            q = qps_res[pt["run"]]
            mode = pt["mode"] + (f" ({q['continuous_backend']})" if pt["mode"] == "continuous" else "")
            excl = q.get(f"{pt['mode']}_qps_excluding_train", math.nan)
            L.append(
                f"| {pt['dataset']} | {pt['run']} | {mode} | {q['queries']} | {q['items']} | "
                f"{q['threads']} | {pt['qps']:,.0f} | {excl:,.0f} | {pt['value']:.4f} |"
            )
        L.append("")
    if figs:
        L += ["### Figures", ""]
        for title, f in figs:
            L += [f"![{title}]({os.path.relpath(f, rel_base)})", ""]
    if err_runs:
        L += ["### Failed runs", "", "| run | error |", "|---|---|"]
        L += [f"| {run} | {md_cell(err)} |" for run, err in err_runs.items()]
        L.append("")
    if missing:
        L += [
            "### Left out",
            "",
            f"{len(missing)} of {len(points)} grid points have no result:",
            "",
            *_left_out_table(suite, out, missing, invocations),
            "",
            f"Run them with `hashgnn experiment {suite.path}` (finished runs are skipped).",
            "",
        ]
    return SuiteReport(L, claims, rows)


def write_report(
    suites: list[Suite],
    out: str | Path,
    path: str | Path,
    command: str | None = None,
    qps: bool = True,
    progress: bool = True,
    evaluate: bool = True,
) -> Path:
    """Write the Markdown report of ``suites`` to ``path``; figures go to ``<path's folder>/figures``."""
    out, path = Path(out), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig_dir = path.parent / "figures"
    sha, dirty = git_commit()
    mi = machine_info()
    trained_code, trained_machines = trained_at(suites, out)
    names = ", ".join(f"`{s.name}`" for s in suites)
    title = (suites[0].report.title or suites[0].name) if len(suites) == 1 else "the HashGNN paper's experiments"
    L = [
        f"# Experiment report: {title}",
        "",
        f"Generated by `hashgnn experiment` from the run folders under `{out}` on "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; do not edit by hand, regenerate with "
        f"`{command or 'hashgnn experiment SUITE.yaml ... --report ' + str(path)}`.",
        "",
        f"- Commit: `{sha or 'unknown (not a git checkout)'}`"
        + (" plus uncommitted changes" if dirty else "")
        + " (the code that wrote this report)",
        f"- Runs trained at: {trained_code}",
        f"- Runs trained on: {trained_machines}",
        f"- Machine: {mi['cpu']}, {mi['logical_cpus']} logical CPUs ({mi['usable_cpus']} usable), torch threads "
        f"{mi['torch_threads']}, numba threads {mi['numba_threads']}, GPU: {mi['gpu'] or 'none'}; "
        f"torch {mi['torch']}, Python {mi['python']}, {mi['platform']}",
        f"- Suites: {names}",
        "",
    ]
    parts = [suite_report(s, out, fig_dir, path.parent, qps=qps, progress=progress, evaluate=evaluate) for s in suites]
    claims = [(s, c) for s, p in zip(suites, parts, strict=True) for c in p.claims]
    if claims:
        checked = [c for _, c in claims if c.agrees is not None]
        bad = [c for c in checked if not c.agrees]
        L += [
            "## Summary: the paper's claims",
            "",
            f"{len(checked)} claim checks measured, {len(checked) - len(bad)} agree, {len(bad)} disagree; "
            f"{len(claims) - len(checked)} could not be checked (method not run). Disagreements:",
            "",
        ]
        if bad:
            L += [
                f"- {c.dataset}, {c.bits} bits, {c.setting}: {c.claim}: {c.verdict} ({md_cell(c.measured)})"
                for c in bad
            ]
        else:
            L.append("- none")
        L.append("")
    for p in parts:
        L += p.markdown
    return write_text(path, "\n".join(L).rstrip() + "\n")
