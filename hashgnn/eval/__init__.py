"""Stage 7: the full-ranking evaluator, its metrics, scorers and the Most-Popular baseline.

``evaluate(scorer, train, test, ks)`` ranks all items for every test user with the user's training
items masked and ties broken by the lower item index, and returns ``recall@K``, ``ndcg@K``,
``ndcg_legacy@K``, ``precision@K``, ``hit@K`` and ``n_users``. See docs/EVALUATION.md.
"""

from __future__ import annotations

from hashgnn.eval.evaluator import Scorer, check_cutoffs, evaluate, evaluate_ranking, topk_items
from hashgnn.eval.metrics import METRICS, mean_metrics, metric_keys, per_user_metrics
from hashgnn.eval.popular import PopularScorer
from hashgnn.eval.scorers import HammingScorer, HierarchicalScorer, InnerProductScorer
from hashgnn.index.topk import topk_desc

__all__ = [
    "METRICS",
    "HammingScorer",
    "HierarchicalScorer",
    "InnerProductScorer",
    "PopularScorer",
    "Scorer",
    "check_cutoffs",
    "evaluate",
    "evaluate_ranking",
    "mean_metrics",
    "metric_keys",
    "per_user_metrics",
    "topk_desc",
    "topk_items",
]
