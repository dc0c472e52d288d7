"""Shared test set-up: point the data loader at the local mirror and a throw-away cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("HASHGNN_DATA_MIRROR", REPO.parent / "shared" / "data"))
os.environ["HASHGNN_DATA_MIRROR"] = str(MIRROR)
# As the hashgnn command does (the library itself leaves the environment alone): passive OpenMP
# waiting keeps 2-thread torch fast on shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test session gets a fresh cache, so tests never see a user's cache."""
    d = tmp_path_factory.mktemp("hashgnn-cache")
    os.environ["HASHGNN_CACHE"] = str(d)
    return d


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The read-only local mirror of public data sets (../shared/data)."""
    if not (MIRROR / "music_toy" / "train.txt").exists():
        pytest.fail(f"data mirror not found at {MIRROR}; set HASHGNN_DATA_MIRROR")
    return MIRROR
