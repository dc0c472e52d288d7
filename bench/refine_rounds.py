"""Test Recall@20 of a trained run's codes after each round of discrete refinement (an exploration).

Takes a finished ``spectral_distill`` run, refines its served codes on the full training split
(hashgnn/codes/refine.py) one round at a time and prints the distillation loss and the test
Hamming Recall@20 after each. It looks at the test split on purpose, to see how rounds move the
served metric; the run's own protocol decides on validation (hashgnn/train/fitted.py).

    python bench/refine_rounds.py --run runs/ml-1m-codes --rounds 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from hashgnn.codes.distill import teacher_top_r
from hashgnn.codes.packing import pack_codes, unpack_codes
from hashgnn.codes.refine import refine_codes
from hashgnn.run import Run
from hashgnn.train.run import evaluate_codes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished spectral_distill run folder")
    ap.add_argument("--rounds", type=int, default=10, help="rounds of user and item flips")
    ap.add_argument("--mirror", default=None, help="data mirror (default: $HASHGNN_DATA_MIRROR)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Run.load(args.run, mirror=args.mirror)
    cfg, data, codes = run.config, run.data(), run.codes
    d = cfg.distill
    user, item = unpack_codes(codes.user_codes, codes.bits), unpack_codes(codes.item_codes, codes.bits)
    targets = teacher_top_r(codes.user_z, codes.item_z, data.train, d.top_r)

    def recall(u, i) -> float:  # type: ignore[no-untyped-def]
        c = dataclasses.replace(codes, user_codes=pack_codes(u), item_codes=pack_codes(i))
        return round(evaluate_codes(c, data.train, data.test, "hamming", [20], cfg.eval.candidates)["recall@20"], 4)

    print(json.dumps({"round": 0, "test_hamming_recall@20": recall(user, item)}), flush=True)
    for r in range(1, args.rounds + 1):
        user, item, st = refine_codes(
            user, item, targets, data.train, temperature=d.temperature, decay=d.decay, rounds=1
        )
        row = {
            "round": r,
            "loss": round(st.loss_after, 5),
            "user_flips": st.user_flips,
            "item_flips": st.item_flips,
            "seconds": round(st.seconds, 2),
            "test_hamming_recall@20": recall(user, item),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
