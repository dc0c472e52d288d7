"""Portable code artifacts of a run: packed codes, continuous vectors and a JSON header.

:class:`RunCodes` holds them in memory; :class:`hashgnn.run.Run` owns their files (layout, atomic
writes, validation on load). All loadable without running code (no pickle).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class RunCodes:
    """Codes and continuous vectors of every user and item of a run."""

    bits: int
    user_codes: np.ndarray
    item_codes: np.ndarray
    user_z: np.ndarray
    item_z: np.ndarray
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None
    # "sign": the codes are sign(z) (every trained network); otherwise how they were made (the
    # vectors may then be wider than the codes: spectral methods, hashgnn/train/fitted.py)
    code_source: str = "sign"
    # the order served rankings break ties in: position p of the index holds item item_order[p]
    # (None: item index order, ties to the lower index; hashgnn/eval/ties.py, tie_order)
    item_order: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return int(self.user_codes.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_codes.shape[0])


def save_codes(run_dir: str | Path, codes: RunCodes) -> None:
    """Write ``codes`` into ``run_dir`` (see :meth:`hashgnn.run.Run.save_codes`)."""
    from hashgnn.run import Run

    Run(run_dir).save_codes(codes)


def load_codes(run_dir: str | Path) -> RunCodes:
    """Read and validate the code artifacts of ``run_dir`` (see :attr:`hashgnn.run.Run.codes`)."""
    from hashgnn.run import Run

    return Run(run_dir).codes
