"""``hashgnn experiment``: run experiment suites (a grid of runs) and write their results and report."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

from hashgnn import interrupt
from hashgnn.cli import app
from hashgnn.cli.common import console, print_json
from hashgnn.errors import ConfigError

ListOpt = Optional[list[str]]


def _split(values: list[str] | None, what: str, as_int: bool = False) -> list | None:
    """Values of a repeatable option that also takes comma-separated lists (``--only-bits 32,64``)."""
    if not values:
        return None
    items = [v.strip() for x in values for v in x.split(",") if v.strip()]
    if not as_int:
        return items
    try:
        return [int(v) for v in items]
    except ValueError:
        raise ConfigError(f"{what} takes integers, got {', '.join(items)}") from None


@app.command("experiment")
def experiment(
    suites: Annotated[
        list[Path],
        typer.Argument(
            help="Suite files (YAML), e.g. experiments/paper.yaml; several are "
            "run one after the other and share one report."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder of the suites' runs: <out>/<suite>/<dataset>/<method>[-<variant>]/bits<K>/seed<S>.",
        ),
    ] = Path("runs/experiments"),
    report: Annotated[
        Optional[Path],
        typer.Option(
            help="Also write the combined Markdown report here (figures in "
            "its folder's figures/), e.g. docs/REPRODUCTION.md."
        ),
    ] = None,
    only_methods: Annotated[
        ListOpt, typer.Option("--only-methods", help="Run only these methods (repeat or comma-separate).")
    ] = None,
    only_datasets: Annotated[ListOpt, typer.Option("--only-datasets", help="Run only these data sets.")] = None,
    only_bits: Annotated[ListOpt, typer.Option("--only-bits", help="Run only these code lengths.")] = None,
    seeds: Annotated[ListOpt, typer.Option("--seeds", help="Run only these seeds.")] = None,
    only_variants: Annotated[ListOpt, typer.Option("--only-variants", help="Run only these variants.")] = None,
    report_only: Annotated[
        bool,
        typer.Option(
            "--report-only", help="Train nothing: rebuild the results files and reports from the run folders."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the selected grid points and their state; run nothing.")
    ] = False,
    device: Annotated[
        Optional[str], typer.Option(help="auto | cpu | cuda for every run (does not make a finished run stale).")
    ] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for PyTorch in every run.")] = None,
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse/--no-reuse",
            help="Copy identical finished runs of other suites under --out instead of training them again.",
        ),
    ] = True,
    qps: Annotated[
        bool,
        typer.Option(
            "--qps/--no-qps",
            help="Measure queries per second on the runs' codes for suites whose report asks for the qps plot.",
        ),
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print a summary as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Run experiment suites (methods x data sets x code lengths x seeds), resumably, and report them.

    Finished runs are skipped and interrupted ones resumed: the same command continues where it stopped.

    Each suite writes <out>/<suite>/results.jsonl (a row per run and setting) and <out>/<suite>/report.md.

    Exit status 1 when a run failed (its error is a row of the results and the report), 2 for a bad suite.
    """
    from hashgnn.experiment.qps import measure_suite_qps
    from hashgnn.experiment.report import write_report
    from hashgnn.experiment.runner import Selection, plan, run_suite
    from hashgnn.experiment.suite import load_suite

    loaded = [load_suite(p) for p in suites]  # every file is checked before anything runs
    if len({s.name for s in loaded}) != len(loaded):
        raise ConfigError("two suite files have the same name; give each a distinct `name:`")
    sel = Selection(
        methods=_split(only_methods, "--only-methods"),
        datasets=_split(only_datasets, "--only-datasets"),
        bits=_split(only_bits, "--only-bits", as_int=True),
        seeds=_split(seeds, "--seeds", as_int=True),
        variants=_split(only_variants, "--only-variants"),
    )
    sel.check_any(loaded)
    if dry_run:
        listing = plan(loaded, out, sel)
        if json_out:
            print_json(listing)
        else:
            for r in listing:
                print(f"{r['suite']}\t{r['run']}\t{r['state']}")
        return
    # How to regenerate a report from the same folders (printed in its header).
    regen = ["hashgnn", "experiment", *map(str, suites), "--out", str(out), "--report-only"]
    summary = []
    failed = 0
    for s in loaded:
        if not report_only:
            res = run_suite(
                s, out, sel.restricted_to(s), device=device, threads=threads, reuse=reuse, progress=not quiet
            )
            counts = {k: res.count(k) for k in ("done", "resumed", "reused", "skipped", "error", "left_out")}
            failed += counts["error"]
            if not quiet:
                console.print(
                    f"[bold]{s.name}[/bold]: "
                    + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
                    + f" in {res.wall_seconds:.0f} s"
                )
        else:
            counts = {}
        interrupt.check()  # a stop request that reached no loop still ends the command here
        if qps and "qps" in s.report.plots:
            measure_suite_qps(s, out, progress=not quiet)  # cached; the reports read it
        suite_report = write_report(
            [s],
            out,
            out / s.name / "report.md",
            qps=qps,
            progress=not quiet,
            command=shlex.join(["hashgnn", "experiment", str(s.path), "--out", str(out), "--report-only"]),
        )
        summary.append(
            {
                "suite": s.name,
                "results": str(out / s.name / "results.jsonl"),
                "report": str(suite_report),
                "counts": counts,
            }
        )
    combined = None
    if report is not None:
        combined = write_report(
            loaded, out, report, command=shlex.join([*regen, "--report", str(report)]), qps=qps, progress=not quiet
        )
        if not quiet:
            console.print(f"report: {combined}")
    if json_out:
        print_json({"suites": summary, "report": str(combined) if combined else None, "failed_runs": failed})
    elif not quiet:
        for x in summary:
            console.print(f"{x['suite']}: results {x['results']}, report {x['report']}")
    if failed:
        console.print(f"[red]{failed} run(s) failed[/red]; their errors are in the results and the report")
        raise typer.Exit(1)
