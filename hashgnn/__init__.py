"""hashgnn: learning to hash with graph neural networks for recommender systems.

The package reads like the pipeline: ``data`` -> ``graph`` -> ``model`` -> ``train`` -> ``codes`` ->
``index`` -> ``eval``; ``cli`` is a thin layer over them.
"""

import os as _os

# OpenMP's default spin-waiting makes 2-thread PyTorch up to 10x slower on a machine whose cores are
# shared with other work (measured, docs/MODEL.md). It only takes effect if set before torch loads;
# a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # Lazy: `import hashgnn` stays cheap; `hashgnn.HammingIndex` loads the index stage on first use.
    if name in ("HammingIndex", "FloatIndex", "HierarchicalIndex"):
        from hashgnn import index

        return getattr(index, name)
    raise AttributeError(f"module 'hashgnn' has no attribute {name!r}")
