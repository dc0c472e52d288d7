"""How close do folded-in users come to trained ones? (docs/SERVING.md, "Fold-in quality")

1. Load a data set (default lastfm) and hold out a random share of its users (default 10%, seed 0).
2. Write it twice in the one-line-per-user format, same user and item index spaces: ``full`` (every
   user's train items) and ``heldout`` (the held-out users' train lines left empty), with the same
   test lines.
3. Train the same config on both (``--set`` changes it; default a short run of
   configs/lastfm-hashgnn.yaml).
4. In the ``heldout`` run, fold every held-out user in from their train items
   (:func:`hashgnn.serve.foldin.fold_in_for`), put those codes and vectors in place of the untrained ones,
   and evaluate test Recall@20 / NDCG@20 of the held-out users and of the trained ones with the one
   retrieval path, in each mode. The ``full`` run gives the same held-out users' Recall@20 when trained.

    python bench/serve_foldin.py --out runs/foldin --set train.epochs=20 --set model.beta_epochs=10

Prints a Markdown table and writes ``foldin.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

# as the hashgnn command does: busy-waiting OpenMP threads make 2-thread torch many times slower on
# shared cores (docs/MODEL.md); only effective before torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _write_txt(path: Path, m: sp.csr_matrix) -> None:
    lines = []
    for u in range(m.shape[0]):  # a one-off file writer of a few thousand lines
        items = m.indices[m.indptr[u] : m.indptr[u + 1]]
        lines.append(" ".join([str(u), *map(str, np.sort(items))]))
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/lastfm-hashgnn.yaml")
    p.add_argument("--out", default="runs/foldin")
    p.add_argument("--share", type=float, default=0.1, help="share of users held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="config overrides, section.key=value")
    p.add_argument("--skip-train", action="store_true", help="reuse the runs already in --out")
    a = p.parse_args()

    from hashgnn.data import load_interactions
    from hashgnn.eval import evaluate_ranking
    from hashgnn.index.recommend import Retriever, modes_of
    from hashgnn.run import Run
    from hashgnn.serve.foldin import fold_in_for
    from hashgnn.train.run import train_run

    out = Path(a.out)
    import yaml

    from hashgnn.api import configure

    base = configure(a.config, **{kv.split("=", 1)[0]: yaml.safe_load(kv.split("=", 1)[1]) for kv in a.set})
    data = load_interactions(dataclasses.replace(base.data, valid_fraction=0.0), progress=False)
    train, test = data.train.tocsr(), data.test.tocsr()
    rng = np.random.default_rng(a.seed)
    eligible = np.flatnonzero((np.diff(train.indptr) > 0) & (np.diff(test.indptr) > 0))
    held = np.sort(rng.choice(eligible, size=round(a.share * len(eligible)), replace=False))
    keep = np.ones(train.shape[0], bool)
    keep[held] = False
    reduced = sp.diags(keep.astype(np.float32)) @ train
    reduced.eliminate_zeros()
    runs = {}
    for name, tr in (("full", train), ("heldout", sp.csr_matrix(reduced))):
        folder = out / f"data-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        _write_txt(folder / "train.txt", tr)
        _write_txt(folder / "test.txt", test)
        cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, dataset=str(folder.resolve())))
        runs[name] = out / f"run-{name}"
        if not a.skip_train:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                train_run(cfg, runs[name], progress=False, overwrite=True)
            print(f"trained {name} in {time.perf_counter() - t0:.0f} s", flush=True)

    ks = [20]
    full = Run.load(runs["full"])
    run = Run.load(runs["heldout"])
    folder = fold_in_for(run)
    t0 = time.perf_counter()
    codes = run.codes
    folded = [folder.fold_in(train.indices[train.indptr[u] : train.indptr[u + 1]]) for u in held]
    fold_ms = (time.perf_counter() - t0) * 1000 / len(held)
    uc, uz = codes.user_codes.copy(), codes.user_z.copy()
    uc[held] = np.stack([c for c, _ in folded])
    uz[held] = np.stack([z for _, z in folded])
    with_folded = dataclasses.replace(codes, user_codes=uc, user_z=uz)

    def rows(m: sp.csr_matrix, users: np.ndarray) -> sp.csr_matrix:
        mask = np.zeros(m.shape[0], np.float32)
        mask[users] = 1
        r = sp.csr_matrix(sp.diags(mask) @ m)
        r.eliminate_zeros()
        return r

    others = np.setdiff1d(np.flatnonzero(np.diff(test.indptr) > 0), held)
    table = {}
    for mode in modes_of(full.codes):  # weighted too for a run with query vectors
        folded_r = Retriever(with_folded, mode, base.eval.candidates).topk
        trained_r = Retriever(full.codes, mode, base.eval.candidates).topk
        table[mode] = {
            "held_out_folded_in": evaluate_ranking(folded_r, train, rows(test, held), ks),
            "trained_users_same_run": evaluate_ranking(folded_r, train, rows(test, others), ks),
            "held_out_when_trained": evaluate_ranking(trained_r, train, rows(test, held), ks),
        }
    result = {
        "data": base.data.dataset,
        "config": a.config,
        "overrides": a.set,
        "held_out_users": len(held),
        "trained_users_with_test": len(others),
        "fold_in_ms_per_user": round(fold_ms, 2),
        "metrics": table,
    }
    (out / "foldin.json").write_text(json.dumps(result, indent=2))
    print(f"{len(held)} held-out users, {len(others)} trained users with test items; fold-in {fold_ms:.1f} ms/user")
    print(
        "| mode | held-out users, folded in | trained users (same run) | held-out users, trained (full run) | folded / trained |"
    )
    print("|---|---:|---:|---:|---:|")
    for mode, t in table.items():
        f, o, h = (t[x]["recall@20"] for x in ("held_out_folded_in", "trained_users_same_run", "held_out_when_trained"))
        print(f"| {mode} | {f:.4f} | {o:.4f} | {h:.4f} | {f / h:.2f} |")


if __name__ == "__main__":
    main()
