"""What node attributes add: Recall@20 of two finished runs (with / without attributes), overall and for
cold items and light users.

    hashgnn train --config C.yaml --out runs/attrs                     # .inter with .user/.item beside it
    hashgnn train --config C.yaml --out runs/ids --no-atomic-features  # the same, ID embeddings only
    python bench/attributes.py runs/attrs runs/ids --cold 5

Cold items: test interactions whose item has at most ``--cold`` train interactions (Recall over those
pairs: hits / pairs). Light users: the tenth of test users with the fewest train interactions.
Both runs must share the data and split (same config but the attributes).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import hashgnn as hg
from hashgnn.index.recommend import Recommender


def group_recalls(run_dir: str, mode: str, k: int, cold: int) -> dict[str, float]:
    run = hg.Run.load(run_dir)
    data = run.data()
    train, test = data.train.tocsr(), data.test.tocsr()
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    rec = Recommender(run, mode)
    items = rec.topk(users, k).items  # (n_users, k) item indices
    hit = np.zeros_like(test[users].toarray(), dtype=bool)
    rows = np.repeat(np.arange(len(users)), k)
    hit[rows, items.ravel()] = True
    truth = test[users].toarray() > 0
    hits = hit & truth
    per_user = hits.sum(1) / truth.sum(1)
    item_train = np.asarray(train.sum(0)).ravel()
    cold_cols = item_train <= cold
    user_train = np.diff(train.indptr)[users]
    light = user_train <= np.quantile(user_train, 0.1)
    return {
        "recall@20": float(per_user.mean()),
        "cold_item_pairs": int(truth[:, cold_cols].sum()),
        "cold_item_recall@20": float(hits[:, cold_cols].sum() / max(truth[:, cold_cols].sum(), 1)),
        "light_users": int(light.sum()),
        "light_user_recall@20": float(per_user[light].mean()),
        "reported_test_recall@20": float(run.metrics["test"][mode]["recall@20"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders")
    ap.add_argument("--mode", default="hamming")
    ap.add_argument("--cold", type=int, default=5, help="an item with at most this many train interactions is cold")
    args = ap.parse_args()
    out = {r: group_recalls(r, args.mode, 20, args.cold) for r in args.runs}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
