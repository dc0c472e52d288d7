"""hashgnn: learning to hash with graph neural networks for recommender systems.

The package reads like the pipeline: ``data`` -> ``graph`` -> ``model`` -> ``train`` -> ``codes`` ->
``index`` -> ``eval``; ``cli`` is a thin layer over them.
"""

__version__ = "0.1.0"
