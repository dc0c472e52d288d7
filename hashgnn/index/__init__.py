"""Stage 6, retrieval: exact Hamming top-k, the continuous baseline, hierarchical search, recommend.

- :class:`HammingIndex`: packed binary codes, exact top-k by Hamming distance (own numba kernel,
  faiss ``IndexBinaryFlat``, torch on any device, or fused Triton kernels on a CUDA GPU).
- :class:`FloatIndex`: real vectors, exact top-k by inner product (faiss ``IndexFlatIP`` or torch).
- :class:`HierarchicalIndex`: Hamming top-C, re-ranked by inner product.
- :class:`AsymmetricIndex`: real queries against packed binary item codes, exact top-k by ``<q, +-1 code>``.
- :class:`WeightedHammingIndex`: packed binary item codes, exact top-k by a weighted Hamming distance
  (a code and small integer weights per query: the asymmetric score, quantised, at near Hamming speed).
- :class:`MultiIndexHashing`: exact Hamming top-k that probes substring hash tables instead of
  scanning every code (large corpora, near neighbours).
- :class:`MilvusIndex`: the same search against a Milvus collection (optional extra ``milvus``).
- :func:`hashgnn.index.recommend.recommend`: top-k items for users of a finished run
  (``hashgnn recommend``).

Imports are lazy so that ``import hashgnn.index`` does not load numba, faiss or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hashgnn.index.asymmetric import AsymmetricIndex
    from hashgnn.index.float_index import FloatIndex
    from hashgnn.index.hamming import HammingIndex
    from hashgnn.index.hierarchical import HierarchicalIndex
    from hashgnn.index.mih import MultiIndexHashing
    from hashgnn.index.milvus import MilvusIndex
    from hashgnn.index.weighted import WeightedHammingIndex

__all__ = [
    "AsymmetricIndex",
    "FloatIndex",
    "HammingIndex",
    "HierarchicalIndex",
    "MilvusIndex",
    "MultiIndexHashing",
    "WeightedHammingIndex",
]

_WHERE = {
    "AsymmetricIndex": "hashgnn.index.asymmetric",
    "HammingIndex": "hashgnn.index.hamming",
    "FloatIndex": "hashgnn.index.float_index",
    "HierarchicalIndex": "hashgnn.index.hierarchical",
    "MultiIndexHashing": "hashgnn.index.mih",
    "MilvusIndex": "hashgnn.index.milvus",
    "WeightedHammingIndex": "hashgnn.index.weighted",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'hashgnn.index' has no attribute {name!r}")
