#!/usr/bin/env bash
# Every GPU check of the model and retrieval issues, as one prepared run on a lent GPU machine.
#
#   OUT=gpu-out bash bench/gpu_check.sh [MINUTES]      # from the repository root
#
# Needs the gowalla files in $HASHGNN_DATA_MIRROR/gowalla (default ../shared/data) and, where the
# machine's Python lacks them, platformdirs (wheels in .whl/). Writes at most five files to $OUT:
#   env.txt              GPU, Python and torch versions
#   speed.jsonl          bench/train_speed.py on cuda: LightGCN (plain, reference settings) for a whole
#                        epoch, and hashgnn with the sage encoder (authors' defaults) over 300 batches
#   retrieval_gpu.jsonl  bench/retrieval_gpu.py --device cuda (10^6 and 10^7 items x 64 bits)
#   runs.jsonl           one row per training run below: final metrics, config and per-epoch history
#   log.txt              everything the commands printed
# Training runs (gowalla, 64 bits, seed 12345), side by side on the one GPU, each stopped after the
# epoch whose training time passes MINUTES (default 3): lightgcn continuous / hashgnn / hashgnn with
# continuous_weight 1 / hash_ste / plain (LightGCN itself), continuous and hashgnn at 32 bits, mf, and
# sage hashgnn / continuous.
set -u
OUT=${OUT:-gpu-out}
MIN=${1:-3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HASHGNN_DATA_MIRROR=${HASHGNN_DATA_MIRROR:-$PWD/../shared/data} HASHGNN_CACHE=${HASHGNN_CACHE:-/tmp/hashgnn-cache}
PY=${PY:-python3}
# A dry run anywhere: DEVICE=cpu DATASET=music_toy ITEMS=100000 bash bench/gpu_check.sh 0.001
DEVICE=${DEVICE:-cuda} DATASET=${DATASET:-gowalla} ITEMS=${ITEMS:-"1000000 10000000"}
LOG="$OUT/log.txt"
RUNS=${RUNS:-/tmp/hashgnn-gpu-runs}
rm -rf "$RUNS"; mkdir -p "$RUNS"

{ nvidia-smi -L; nproc; $PY -c "import sys, torch, numpy; print(sys.version); print('torch', torch.__version__, 'numpy', numpy.__version__, torch.cuda.get_device_name(0))"; } >"$OUT/env.txt" 2>&1

# 1. Speed, alone on the GPU (SKIP_SPEED=1 skips this part and the retrieval check).
if [ -z "${SKIP_SPEED:-}" ]; then
{
  $PY bench/train_speed.py --dataset "$DATASET" --encoder lightgcn --method plain --batch-size 2048 --negatives 1 \
      --weight-decay 1e-4 --batches 0 --device "$DEVICE" --threads 4 --embed
  $PY bench/train_speed.py --dataset "$DATASET" --encoder sage --method hashgnn --bits 64 --epoch 200 --batches 300 \
      --device "$DEVICE" --threads 4
} >"$OUT/speed.jsonl" 2>>"$LOG"
$PY bench/retrieval_gpu.py --device "$DEVICE" --items $ITEMS >"$OUT/retrieval_gpu.jsonl" 2>>"$LOG"
fi

# 2. Accuracy runs side by side, each with a training-time budget.
common=(--dataset "$DATASET" --device "$DEVICE" --threads 2 --max-minutes "$MIN" -q --json)
lgcn=(--config configs/gowalla-lightgcn-hashgnn.yaml --epochs 1000 --beta-epochs "${BETA_EPOCHS:-20}" --eval-every 10)
# ONLY="name ..." runs a subset of the runs below.
run() { local name=$1; shift; [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]] && return; $PY -m hashgnn train "$@" "${common[@]}" --out "$RUNS/$name" >"$RUNS/$name.json" 2>>"$LOG" & }
run lightgcn-continuous "${lgcn[@]}" --method continuous
run lightgcn-hashgnn "${lgcn[@]}" --method hashgnn
run lightgcn-hashgnn-cw1 "${lgcn[@]}" --method hashgnn --continuous-weight 1
run lightgcn-hash_ste "${lgcn[@]}" --method hash_ste
run lightgcn-plain --config configs/gowalla-lightgcn.yaml
run lightgcn-continuous-32 "${lgcn[@]}" --method continuous --bits 32
run lightgcn-hashgnn-32 "${lgcn[@]}" --method hashgnn --bits 32
run mf --config configs/gowalla-lightgcn.yaml --method mf
run sage-hashgnn --encoder sage --method hashgnn --bits 64 --epochs 100 --beta-epochs 4 --eval-every 2
run sage-continuous --encoder sage --method continuous --bits 64 --epochs 100 --eval-every 2
wait

$PY - "$RUNS" >"$OUT/runs.jsonl" 2>>"$LOG" <<'PYEOF'
import json, sys
from pathlib import Path
for d in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    row = {"name": d.name}
    for key, name in (("final", "final_metrics.json"),):
        if (d / name).exists():
            row[key] = json.loads((d / name).read_text())
    if (d / "config.yaml").exists():
        row["config"] = (d / "config.yaml").read_text()
    if (d / "metrics.jsonl").exists():
        row["history"] = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    print(json.dumps(row))
PYEOF
tail -n 30 "$LOG"
