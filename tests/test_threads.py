"""numba's thread pool must not change torch's thread count (hashgnn/threads.py).

Each check runs in a fresh interpreter: the pool starts once per process, so only the first numba use
of a process shows the problem (it made `hashgnn train --threads 1` train on every core after its
first Hamming validation).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores: one thread is numba's default here")

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    first = sys.argv[1]
    if first == "search":
        from hashgnn.index import HammingIndex
        rng = np.random.default_rng(0)
        codes = rng.integers(0, 256, (500, 8), dtype=np.uint8)
        index = HammingIndex(64)  # threads=None: numba's default, the path of a first validation
        index.add(codes)
        index.search(codes[:5], 3)
    elif first == "machine":
        from hashgnn.environment import machine_info
        assert machine_info()["torch_threads"] == 1
    elif first == "rerank":
        from hashgnn.index import HierarchicalIndex
        rng = np.random.default_rng(0)
        codes = rng.integers(0, 256, (500, 8), dtype=np.uint8)
        vecs = rng.standard_normal((500, 16)).astype(np.float32)
        index = HierarchicalIndex(64, 16, candidates=50)
        index.add(codes, vecs)
        index.search(codes[:5], vecs[:5], 3)
    import numba
    print(torch.get_num_threads(), numba.get_num_threads())
    """
)


@pytest.mark.parametrize("first", ["search", "machine", "rerank"])
def test_numba_keeps_torch_threads(first: str) -> None:
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, first], capture_output=True, text=True, timeout=300, check=False
    )
    assert res.returncode == 0, res.stderr[-2000:]
    torch_threads, numba_threads = map(int, res.stdout.split())
    assert torch_threads == 1
    assert numba_threads >= 2  # numba keeps its own default: the restore did not shrink its pool
