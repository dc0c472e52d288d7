"""Where code ran: the git commit and the machine (CPU, cores, threads, libraries, GPU).

A run folder keeps one record per start or resume (``environment.json``, :func:`provenance`), and
an experiment report names the commits its runs were trained at.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def git_commit(repo: Path | None = None) -> tuple[str | None, bool]:
    """``(HEAD commit, working tree has uncommitted changes)``; (None, False) outside git."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            != ""
        )
        return sha or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, False


def machine_info() -> dict[str, Any]:
    """CPU model, logical and usable cores, torch/numba threads, library versions, GPU."""
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import numba

        from hashgnn.threads import start_numba_threads

        start_numba_threads()  # asking numba for its threads starts its pool, which resets torch's count
        numba_threads: int | None = numba.get_num_threads()
    except ImportError:
        numba_threads = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba_threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": gpu,
    }


def provenance(event: str) -> dict[str, Any]:
    """One record of ``event`` (``train`` or ``resume``) for a run folder: when, which code, which machine.

    ``commit`` is None when the package does not run from a git checkout (an installed wheel); then
    ``hashgnn`` (the package version) is what names the code.
    """
    from hashgnn import __version__

    sha, dirty = git_commit()
    return {
        "event": event,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hashgnn": __version__,
        "commit": sha,
        "uncommitted_changes": dirty,
        "host": platform.node(),
        **machine_info(),
    }
