"""Experiment suites: a grid of runs from YAML, a resumable runner, a results file and a report.

``load_suite(path)`` reads and checks a suite (``experiments/*.yaml``), ``run_suite(suite, out)``
trains what is missing with :func:`hashgnn.train.run.train_run` and writes ``out/<suite>/results.jsonl``,
and ``write_report(suites, out, path)`` writes the Markdown report (docs/REPRODUCTION.md) with its
figures. The ``hashgnn experiment`` command wraps all three. See docs/EXPERIMENTS.md.
"""

from __future__ import annotations

from hashgnn.experiment.report import write_report
from hashgnn.experiment.results import collect_rows, read_results
from hashgnn.experiment.runner import Selection, SuiteOutcome, run_suite
from hashgnn.experiment.suite import GridPoint, Setting, Suite, load_suite

__all__ = [
    "GridPoint",
    "Selection",
    "Setting",
    "Suite",
    "SuiteOutcome",
    "collect_rows",
    "load_suite",
    "read_results",
    "run_suite",
    "write_report",
]
