"""Which folders may hold, and which may lose, a training run.

``hashgnn train --out DIR`` writes a run into DIR and ``--overwrite`` replaces the run already there.
A user's folder must never be deleted by mistake, so the rules are strict:

- a run is written only into a folder that is missing, empty, or holds nothing but run files
  (:data:`RUN_ENTRIES`);
- ``--overwrite`` replaces only a folder that is recognisably a hashgnn run: its ``config.yaml``
  parses as a :class:`~hashgnn.config.RunConfig` and every entry is a run file. It is never the
  current folder, one of its ancestors, the home folder or ``/``;
- the old run is moved aside (renamed, on the same file system) while the new one trains, removed
  only after the new one has finished, and moved back if the new one fails or is interrupted.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
import shutil
from pathlib import Path

from hashgnn.errors import HashgnnError
from hashgnn.run import Run
from hashgnn.train.checkpoint import POINTER
from hashgnn.train.trackers import TB_FOLDER

# Every entry a run folder may hold (glob patterns): the trainer's files (hashgnn.run.Run.FILES and
# the checkpoints), the experiment runner's records, and the temporary names of atomic writes.
RUN_ENTRIES = (
    *Run.FILES,
    POINTER,
    "ckpt-*",
    ".ckpt-*",
    Run.RUNNER_RECORD,
    Run.RUNNER_ERROR,
    Run.SETTINGS_CACHE,
    TB_FOLDER,
    "*.tmp",
    ".*.tmp",
    ".*.part",
)


def foreign_entries(folder: Path) -> list[str]:
    """Names of the entries of ``folder`` that are not run files (sorted)."""
    return sorted(p.name for p in folder.iterdir() if not any(fnmatch.fnmatchcase(p.name, pat) for pat in RUN_ENTRIES))


def protected_reason(folder: Path) -> str | None:
    """Why ``folder`` must never be replaced (the current folder, an ancestor, home, ``/``), or None."""
    target = folder.expanduser().resolve()
    cwd = Path.cwd().resolve()
    home = Path.home().resolve()
    if target == Path(target.anchor):
        return "it is the root of the file system"
    if target == cwd:
        return "it is the current folder"
    if target in cwd.parents:
        return "it holds the current folder"
    if target == home:
        return "it is the home folder"
    return None


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` has a ``config.yaml`` (it holds, or held, a run)."""
    return (folder / Run.CONFIG).is_file()


def check_writable_run_folder(folder: Path) -> None:
    """Refuse to train into a folder with files that are not a run's (they could be overwritten)."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise HashgnnError(f"--out {folder}: exists and is not a folder; pick another --out")
    foreign = foreign_entries(folder)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise HashgnnError(
            f"--out {folder}: the folder already holds files that are not a hashgnn run's "
            f"({shown}); pick a new or empty folder for the run"
        )


def check_replaceable_run(folder: Path) -> None:
    """Raise unless ``folder`` is a hashgnn run that ``--overwrite`` may replace."""
    from hashgnn.config import RunConfig

    reason = protected_reason(folder)
    if reason:
        raise HashgnnError(f"--overwrite refuses to replace {folder}: {reason}; pick a run folder of its own")
    check_writable_run_folder(folder)
    try:
        RunConfig.load(folder / Run.CONFIG)
    except HashgnnError as e:
        raise HashgnnError(
            f"--overwrite refuses to replace {folder}: its {Run.CONFIG} is not a hashgnn run "
            f"config ({e}); remove the folder yourself if it is really to go"
        ) from None


class Replacement:
    """The old run of a folder, moved aside while a new run is written in its place.

    Use as a context manager around the new run: on success the old run is deleted, on any
    exception (Ctrl-C included) the new, partial run is deleted and the old one is put back.
    """

    def __init__(self, folder: Path) -> None:
        check_replaceable_run(folder)
        self.folder = folder
        self.aside = folder.with_name(f".{folder.name}.replaced-{os.getpid()}-{secrets.token_hex(4)}")
        os.replace(folder, self.aside)

    def __enter__(self) -> Replacement:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            shutil.rmtree(self.aside)
            return
        # The new run failed: the folder holds only what this process wrote since the move.
        if self.folder.exists():
            if foreign_entries(self.folder):  # someone put files there meanwhile: keep both
                raise HashgnnError(
                    f"the new run in {self.folder} failed and the folder now holds other "
                    f"files; the old run is kept in {self.aside}"
                ) from None
            shutil.rmtree(self.folder)
        os.replace(self.aside, self.folder)
