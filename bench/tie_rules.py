"""How much the tie rule moves a run's Hamming Recall@20 / NDCG@20 on the test split (issue 10, goal 3).

64-bit Hamming similarity has 65 levels, so a top-20 list is cut from a group of tied items. This
bench scores the run's codes with the same Hamming score and breaks ties five ways, exactly
(:class:`hashgnn.eval.ties.TieBreakScorer`):

- ``id``: the lower item id (the evaluator's default order);
- ``popularity``: the item's training degree (the served rule, docs/EVALUATION.md);
- ``teacher_count``: how many users have the item among their top ``--top`` unseen items by the run's
  continuous vectors (one count per item, like popularity, but the continuous model's);
- ``teacher_mean``: the item's mean continuous score over all users (one float per item);
- ``continuous``: the user's own continuous score of each tied item (needs the float vectors; the
  hierarchical mode with every tied item a candidate).

Only the tie rule differs between rows; nothing is trained. Usage::

    python bench/tie_rules.py --run runs/gowalla-codes --dataset gowalla --out bench/results/tie_rules.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch


def item_ranks(score: np.ndarray) -> np.ndarray:
    """Each item's rank in ascending ``score`` (0 = lowest); equal scores: the lower id ranks higher."""
    n = len(score)
    order = np.lexsort((-np.arange(n), score))
    ranks = np.empty(n, np.int64)
    ranks[order] = np.arange(n)
    return ranks


def continuous_priors(
    user_z: np.ndarray, item_z: np.ndarray, train: sp.csr_matrix, top: int, batch: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Per item: users with it among their ``top`` unseen items by ``<z_u, z_i>``, and its mean score."""
    from hashgnn.eval.scorers import InnerProductScorer

    ip = InnerProductScorer(user_z, item_z)
    n_users, n_items = train.shape
    counts = np.zeros(n_items)
    total = np.zeros(n_items)
    for a in range(0, n_users, batch):
        users = np.arange(a, min(a + batch, n_users))
        block = ip(users)
        total += block.sum(0).numpy()
        seen = train[users].tocoo()
        block[seen.row, seen.col] = -np.inf
        counts += np.bincount(torch.topk(block, top, dim=1).indices.numpy().ravel(), minlength=n_items)
    return counts, total / n_users


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run folder with user/item codes and continuous vectors")
    p.add_argument("--dataset", required=True, help="the run's data set (name or table path)")
    p.add_argument("--top", type=int, default=100, help="list length of the teacher_count rule")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="append JSON rows to this file")
    args = p.parse_args()

    from hashgnn.data import load_interactions
    from hashgnn.environment import machine_info
    from hashgnn.eval.evaluator import evaluate
    from hashgnn.eval.scorers import HammingScorer, InnerProductScorer
    from hashgnn.eval.ties import TieBreakScorer, popularity_ranks

    torch.set_num_threads(args.threads)
    run = Path(args.run)
    meta = json.loads((run / "codes.json").read_text())
    bits = int(meta["bits"])
    data = load_interactions(args.dataset, progress=False)
    train, test = data.train, data.test
    user_codes, item_codes = np.load(run / "user_codes.npy"), np.load(run / "item_codes.npy")
    user_z, item_z = np.load(run / "user_z.npy"), np.load(run / "item_z.npy")
    n_items = item_codes.shape[0]
    cpu = machine_info()["cpu"]
    hamming = HammingScorer(user_codes, item_codes, bits)
    counts, mean = continuous_priors(user_z, item_z, train, args.top)
    degree = np.diff(sp.csc_matrix(train).indptr)
    rules: dict[str, object] = {
        "id": None,
        "popularity": popularity_ranks(train),
        # equal counts: the more popular item first, then the lower id
        "teacher_count": item_ranks(counts + degree / (degree.max() + 1.0)),
        "teacher_mean": item_ranks(mean),
        "continuous": InnerProductScorer(user_z, item_z),
    }
    for name, secondary in rules.items():
        t0 = time.perf_counter()
        scorer = hamming if secondary is None else TieBreakScorer(hamming, secondary, bits, n_items)
        m = evaluate(scorer, train, test, [20], progress=False)
        row = {
            "run": str(run),
            "dataset": args.dataset,
            "bits": bits,
            "tie_rule": name,
            "recall@20": round(m["recall@20"], 5),
            "ndcg@20": round(m["ndcg@20"], 5),
            "seconds": round(time.perf_counter() - t0, 1),
            "cpu": cpu,
        }
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
