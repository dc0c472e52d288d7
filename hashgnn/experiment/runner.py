"""Run a suite's grid with :func:`hashgnn.train.run.train_run`, resumably, and rebuild its results file.

For each selected grid point, in order:

- a run folder with ``final_metrics.json`` made with the same config is complete: skipped;
- a folder with ``config.yaml`` but no final metrics is an interrupted run: continued with
  :func:`~hashgnn.train.run.resume_run` from its newest checkpoint;
- a folder made with a different config is an error row (never silently reused or overwritten);
- with ``reuse``, an identical finished run of another suite under the same ``out`` is copied
  (``bits.yaml`` shares its 32- and 64-bit points with ``paper.yaml``);
- otherwise the run is trained. A method the installed model code does not implement, or any failure
  of training, gives an error row and the grid goes on.

Each run folder gets ``experiment.json`` (status, error, wall seconds); each invocation appends a
line to ``<out>/<suite>/invocations.jsonl`` (selection, counts, wall time), which the report uses to
say how long a suite took and what was left out.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hashgnn import interrupt
from hashgnn.config import RunConfig, override
from hashgnn.errors import ConfigError, HashgnnError
from hashgnn.experiment.results import (
    RESULTS_FILE,
    RUN_INFO,
    collect_rows,
    read_json,
    run_dir,
    stale_diff,
    stale_message,
    suite_dir,
    write_json,
    write_results,
)
from hashgnn.experiment.suite import GridPoint, Suite, comparable
from hashgnn.run import Run
from hashgnn.train.checkpoint import POINTER
from hashgnn.train.folder import foreign_entries

INVOCATIONS_FILE = "invocations.jsonl"


@dataclass
class Selection:
    """Which part of a suite's grid to run (None: all); the CLI's ``--only-*`` and ``--seeds`` filters."""

    methods: list[str] | None = None
    datasets: list[str] | None = None
    bits: list[int] | None = None
    seeds: list[int] | None = None
    variants: list[str] | None = None

    def selects(self, p: GridPoint) -> bool:
        """Whether grid point ``p`` is part of the selection."""
        return (
            (self.methods is None or p.method in self.methods)
            and (self.datasets is None or p.dataset in self.datasets)
            and (self.bits is None or p.bits in self.bits)
            and (self.seeds is None or p.seed in self.seeds)
            and (self.variants is None or (p.variant or "") in self.variants)
        )

    def as_dict(self) -> dict[str, Any]:
        """The filters that are set."""
        return {
            k: v
            for k, v in (
                ("methods", self.methods),
                ("datasets", self.datasets),
                ("bits", self.bits),
                ("seeds", self.seeds),
                ("variants", self.variants),
            )
            if v is not None
        }

    def describe(self) -> str:
        """The filters as CLI options, e.g. ``--only-bits 32 --seeds 1``; ``all`` when none is set."""
        names = {
            "methods": "--only-methods",
            "datasets": "--only-datasets",
            "bits": "--only-bits",
            "seeds": "--seeds",
            "variants": "--only-variants",
        }
        parts = [f"{names[k]} {','.join(map(str, v))}" for k, v in self.as_dict().items()]
        return " ".join(parts) or "all"

    @staticmethod
    def _axes(suite: Suite) -> dict[str, list[Any]]:
        return {
            "methods": suite.methods,
            "datasets": suite.datasets,
            "bits": suite.bits,
            "seeds": suite.seeds,
            "variants": list(suite.variants),
        }

    def check(self, suite: Suite) -> None:
        """Every filter value must be in the suite's grid (a typo must not select nothing)."""
        self.check_any([suite])

    def check_any(self, suites: list[Suite]) -> None:
        """Every filter value must be in the grid of at least one of ``suites``."""
        names = {
            "methods": "--only-methods",
            "datasets": "--only-datasets",
            "bits": "--only-bits",
            "seeds": "--seeds",
            "variants": "--only-variants",
        }
        for axis, given in self.as_dict().items():
            have = [v for s in suites for v in self._axes(s)[axis]]
            bad = [v for v in given if v not in have]
            if bad:
                where = ", ".join(f"{s.name!r} ({s.path})" for s in suites)
                raise ConfigError(
                    f"{names[axis]} {','.join(map(str, bad))}: not in the grid of suite {where}; "
                    f"its values are {', '.join(map(str, dict.fromkeys(have))) or '(none)'}"
                )

    def restricted_to(self, suite: Suite) -> Selection:
        """This selection with each filter cut to the values ``suite`` has (possibly selecting nothing)."""
        axes = self._axes(suite)
        return Selection(**{k: [v for v in given if v in axes[k]] for k, given in self.as_dict().items()})


@dataclass
class RunOutcome:
    """What happened to one grid point in one invocation."""

    point: GridPoint
    status: str  # done | resumed | reused | skipped | error | left_out
    error: str | None = None
    wall_seconds: float = 0.0


@dataclass
class SuiteOutcome:
    """The result of :func:`run_suite`."""

    suite: Suite
    out: Path
    outcomes: list[RunOutcome] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    results_path: Path | None = None
    wall_seconds: float = 0.0

    def count(self, status: str) -> int:
        """How many grid points ended with ``status``."""
        return sum(o.status == status for o in self.outcomes)

    @property
    def errors(self) -> list[RunOutcome]:
        """The grid points that failed in this invocation."""
        return [o for o in self.outcomes if o.status == "error"]


def implemented_methods() -> set[str]:
    """Methods the installed model code can build (the registry's)."""
    from hashgnn.methods import METHOD_NAMES

    return set(METHOD_NAMES)


def _execution(cfg: RunConfig, device: str | None, threads: int | None) -> RunConfig:
    cfg = RunConfig.from_dict(cfg.to_dict())  # a copy: grid points are shared
    cfg.train = override(cfg.train, device=device, threads=threads)
    return cfg


def _finished_runs(out: Path) -> dict[str, Path]:
    """Finished run folders anywhere under ``out`` by their comparable config (for reuse)."""
    found: dict[str, Path] = {}
    for fm in sorted(out.glob("*/*/*/bits*/seed*/final_metrics.json")):
        folder = fm.parent
        try:
            cfg = RunConfig.load(folder / Run.CONFIG)
        except HashgnnError:
            continue
        found.setdefault(json.dumps(comparable(cfg), sort_keys=True), folder)
    return found


def _copy_run(src: Path, dst: Path) -> None:
    """Copy a finished run's folder (without checkpoints) to ``dst``, atomically by rename."""
    if dst.exists() and foreign_entries(dst):
        raise HashgnnError(
            f"{dst} holds files that are not a run's ({', '.join(foreign_entries(dst)[:5])}); "
            "move them away to let the runner reuse a finished run there"
        )
    tmp = dst.with_name(f".{dst.name}.copying-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("ckpt-*", POINTER, RUN_INFO, "*.tmp", Run.RUNNER_ERROR))
        if dst.exists():  # only an unfinished attempt's records (run files, no config.yaml) get here
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _record(folder: Path, status: str, error: str | None, wall: float, **extra: Any) -> None:
    prev = read_json(folder / RUN_INFO) or {}
    total = float(prev.get("wall_seconds") or 0.0) + wall if prev.get("status") != "ok" else wall
    if prev.get("killed_attempts") and prev.get("status") != "ok":
        extra = {"killed_attempts": prev["killed_attempts"], **extra}
    write_json(
        folder / RUN_INFO,
        {"status": status, "error": error, "wall_seconds": round(total, 3), "finished_at": _now(), **extra},
    )


def _begin_attempt(folder: Path) -> None:
    """Record that an attempt at ``folder`` is running, and count a previous one that was killed.

    A process killed outright (SIGKILL, the end of a machine's session) writes no record, so its
    time would be lost to the run's wall time; its attempt is counted from its start to the last
    file it wrote (a checkpoint or a metrics row: within an epoch of its end). A folder that another
    process is training is left alone: the trainer refuses it, and that attempt is not killed.
    """
    from hashgnn.train.lock import RunLock

    folder.mkdir(parents=True, exist_ok=True)
    try:
        with RunLock(folder):
            pass
    except HashgnnError:
        return
    prev = read_json(folder / RUN_INFO) or {}
    total = float(prev.get("wall_seconds") or 0.0) if prev.get("status") != "ok" else 0.0
    killed = int(prev.get("killed_attempts") or 0)
    if prev.get("status") == "running" and prev.get("attempt_started") is not None:
        started = float(prev["attempt_started"])
        written = [f.stat().st_mtime for f in folder.rglob("*") if f.is_file() and f.name != RUN_INFO]
        total += max(0.0, max(written, default=started) - started)
        killed += 1
    write_json(
        folder / RUN_INFO,
        {
            "status": "running",
            "error": None,
            "wall_seconds": round(total, 3),
            "attempt_started": time.time(),
            "started_at": _now(),
            "killed_attempts": killed,
        },
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def run_point(
    suite: Suite,
    p: GridPoint,
    out: Path,
    *,
    device: str | None = None,
    threads: int | None = None,
    reuse_index: dict[str, Path] | None = None,
    progress: bool = True,
    train: Callable[..., Any] | None = None,
    resume: Callable[..., Any] | None = None,
) -> RunOutcome:
    """Bring one grid point to a finished run folder (see the module docstring); never raises a run's error."""
    import torch

    from hashgnn.train.run import resume_run, train_run

    train = train or train_run
    resume = resume or resume_run
    folder = run_dir(out, suite, p)
    if (folder / Run.FINAL_METRICS).exists():
        diff = stale_diff(folder, p)
        if diff:
            return RunOutcome(p, "error", stale_message(folder, diff))
        return RunOutcome(p, "skipped")
    if p.method not in implemented_methods():
        msg = f"method {p.method!r} is not implemented by this version of hashgnn.model (no run was made)"
        folder.mkdir(parents=True, exist_ok=True)
        _record(folder, "error", msg, 0.0)
        return RunOutcome(p, "error", msg)
    cfg = _execution(p.config, device, threads)
    torch_threads = torch.get_num_threads()  # a run's train.threads must not leak into the next run
    t0 = time.perf_counter()
    status = "done"
    extra: dict[str, Any] = {}
    try:
        if (folder / Run.CONFIG).exists():
            diff = stale_diff(folder, p)
            if diff:
                return RunOutcome(p, "error", stale_message(folder, diff))
            status = "resumed"
            _begin_attempt(folder)
            # Where it runs comes from this invocation (the suite and its flags), not the folder.
            resume(
                folder,
                progress=progress,
                mirror=cfg.data.mirror,
                cache_dir=cfg.data.cache_dir,
                device=cfg.train.device,
                threads=cfg.train.threads,
            )
        elif reuse_index is not None and json.dumps(comparable(cfg), sort_keys=True) in reuse_index:
            src = reuse_index[json.dumps(comparable(cfg), sort_keys=True)]
            _copy_run(src, folder)
            status, extra = "reused", {"reused_from": str(src)}
        else:
            _begin_attempt(folder)
            train(cfg, folder, progress=progress)
    except KeyboardInterrupt:
        torch.set_num_threads(torch_threads)
        folder.mkdir(parents=True, exist_ok=True)
        _record(folder, "interrupted", "interrupted by the user", time.perf_counter() - t0)
        raise
    except Exception as e:
        torch.set_num_threads(torch_threads)
        wall = time.perf_counter() - t0
        folder.mkdir(parents=True, exist_ok=True)
        if interrupt.requested():  # the error followed a stop request whose interrupt was lost
            _record(folder, "interrupted", "interrupted by the user", wall)
            raise KeyboardInterrupt from e
        if isinstance(e, HashgnnError):
            msg = str(e)
        else:
            (folder / Run.RUNNER_ERROR).write_text(traceback.format_exc())
            msg = f"{type(e).__name__}: {e} (traceback in {folder / 'experiment_error.txt'})"
        _record(folder, "error", msg, wall)
        return RunOutcome(p, "error", msg, wall)
    torch.set_num_threads(torch_threads)
    wall = 0.0 if status == "reused" else time.perf_counter() - t0
    _record(folder, "ok", None, wall, **extra)
    if reuse_index is not None:
        reuse_index.setdefault(json.dumps(comparable(cfg), sort_keys=True), folder)
    return RunOutcome(p, status, None, wall)


def run_suite(
    suite: Suite,
    out: str | Path,
    selection: Selection | None = None,
    *,
    device: str | None = None,
    threads: int | None = None,
    reuse: bool = True,
    progress: bool = True,
    train: Callable[..., Any] | None = None,
    resume: Callable[..., Any] | None = None,
) -> SuiteOutcome:
    """Run the selected part of ``suite`` into ``out/<suite name>`` and write its results file.

    Returns the outcome of every grid point (``left_out`` for those outside ``selection``) and the
    rows written to ``out/<suite>/results.jsonl``. ``train``/``resume`` default to
    :func:`~hashgnn.train.run.train_run` / :func:`~hashgnn.train.run.resume_run`.
    """
    out = Path(out)
    selection = selection or Selection()
    selection.check(suite)
    sdir = suite_dir(out, suite)
    sdir.mkdir(parents=True, exist_ok=True)
    reuse_index = _finished_runs(out) if reuse else None
    result = SuiteOutcome(suite, out)
    points = suite.points()
    chosen = [p for p in points if selection.selects(p)]
    started, t0 = _now(), time.perf_counter()
    state = "finished"
    try:
        for i, p in enumerate(chosen, 1):
            done_already = (run_dir(out, suite, p) / Run.FINAL_METRICS).exists()
            if not done_already:
                _say(progress, f"[{suite.name} {i}/{len(chosen)}] {p.run_id}")
            o = run_point(
                suite,
                p,
                out,
                device=device,
                threads=threads,
                reuse_index=reuse_index,
                progress=progress,
                train=train,
                resume=resume,
            )
            result.outcomes.append(o)
            interrupt.check()
            if o.status == "error":
                _say(progress, f"[{suite.name} {i}/{len(chosen)}] {p.run_id}: ERROR {o.error}")
            elif o.status != "skipped":
                _say(progress, f"[{suite.name} {i}/{len(chosen)}] {p.run_id}: {o.status} in {o.wall_seconds:.1f} s")
                result.rows, _ = collect_rows(suite, out)  # results so far, for whoever watches the file
                write_results(result.rows, sdir / RESULTS_FILE)
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        result.wall_seconds = time.perf_counter() - t0
        chosen_ids = {p.run_id for p in chosen}
        result.outcomes += [RunOutcome(p, "left_out") for p in points if p.run_id not in chosen_ids]
        _log_invocation(sdir, result, selection, started, state)
    result.rows, _ = collect_rows(suite, out)
    result.results_path = sdir / RESULTS_FILE
    write_results(result.rows, result.results_path)
    return result


def _log_invocation(sdir: Path, result: SuiteOutcome, selection: Selection, started: str, state: str) -> None:
    counts: dict[str, int] = {}
    for o in result.outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    row = {
        "started": started,
        "finished": _now(),
        "state": state,
        "wall_seconds": round(result.wall_seconds, 3),
        "trained_seconds": round(sum(o.wall_seconds for o in result.outcomes), 3),
        "selection": selection.as_dict(),
        "selection_cli": selection.describe(),
        "counts": counts,
        "suite_file": str(result.suite.path),
        "host": platform.node(),
        "argv": sys.argv[1:],
    }
    with open(sdir / INVOCATIONS_FILE, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_invocations(sdir: Path) -> list[dict[str, Any]]:
    """The invocation log of a suite folder (oldest first)."""
    path = sdir / INVOCATIONS_FILE
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def plan(suites: list[Suite], out: Path, selection: Selection) -> list[dict[str, str]]:
    """What a run of ``suites`` into ``out`` would do, per grid point: finished, interrupted, to run
    or not selected (``hashgnn experiment --dry-run``)."""
    listing = []
    for s in suites:
        for p in s.points():
            folder = run_dir(out, s, p)
            state = (
                "finished"
                if (folder / Run.FINAL_METRICS).exists()
                else "interrupted"
                if (folder / Run.CONFIG).exists()
                else "to run"
            )
            if not selection.selects(p):
                state = "not selected"
            listing.append({"suite": s.name, "run": p.run_id, "state": state})
    return listing
