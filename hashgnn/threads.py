"""Start numba's thread pool without changing torch's thread count.

numba's OpenMP threading layer (the one this project's wheels load) sets the process's OpenMP thread
count to ``NUMBA_NUM_THREADS`` (all cores) when it starts, at the first numba parallel region or
the first ``numba.get_num_threads()`` / ``set_num_threads()``; torch's CPU wheel uses the same OpenMP
runtime, so ``torch.get_num_threads()`` changes with it. Until 2026-12-05 a ``hashgnn train
--threads 1`` run went on with every core after its first Hamming validation (the first numba
kernel), and anything that asked numba for its thread count (the machine description of a report
or a run folder) did the same. :func:`start_numba_threads` starts the pool once, puts torch's
count back, and is called before every use of numba's threads in this package.
"""

from __future__ import annotations

import sys

_STATE = {"started": False}


def start_numba_threads() -> None:
    """Start numba's threading layer now (once per process), keeping torch's thread count as it was."""
    if _STATE["started"]:
        return
    import numba

    torch = sys.modules.get("torch")  # not imported: nothing to keep, and no reason to import it
    before = torch.get_num_threads() if torch is not None else None
    numba.get_num_threads()  # launches the layer
    if torch is not None and before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)
    _STATE["started"] = True
