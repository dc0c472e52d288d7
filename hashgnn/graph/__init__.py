"""Stage 2: the user-item bipartite graph in CSR, its normalised adjacency, vectorised samplers."""

from __future__ import annotations

from hashgnn.graph.bipartite import BipartiteGraph
from hashgnn.graph.sampling import sample_negatives, sample_neighbors

__all__ = ["BipartiteGraph", "sample_negatives", "sample_neighbors"]
