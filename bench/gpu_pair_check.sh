#!/usr/bin/env bash
# The GPU checks of issues 10 and 12 for the fitted recipes, one prepared run on a lent GPU machine
# (one NVIDIA H200, 16 CPU cores):
#
#   OUT=gpu-out bash bench/gpu_pair_check.sh [ARGS...]      # from the repository root
#
# ARGS go to the codes run (e.g. --set spectral.filter=bspm ...). Needs the gowalla files in
# $HASHGNN_DATA_MIRROR/gowalla (default ./shared/data, the folder that travels to the device machine)
# and, where the machine's Python lacks it, platformdirs (wheels in .whl/). Writes to $OUT:
#   env.txt              GPU, CPU count, Python and torch versions
#   tests.txt            the tests that need CUDA: distillation and refinement on cuda against the CPU
#   codes.json           `hashgnn train --config $CODES_CONFIG --device cuda --threads 16 --json`: the
#                        gowalla pair in one run (the continuous row is the spectral teacher; the teacher is
#                        fitted on the 16 CPU cores, its top items, the distillation and the bit-flip
#                        refinement run on the GPU); stopped at CODES_LIMIT s (default 330)
#   codes-metrics.jsonl  that run's metrics.jsonl (validation as it goes, then the whole history)
#   codes-config.yaml    that run's config.yaml
#   gpu-util.txt         nvidia-smi every 5 s during the codes run: utilisation, memory used
#   ddp.txt              `hashgnn train --nproc 2 --device cuda` on a machine with one GPU (must refuse clearly)
#   log.txt              everything else the commands printed, and each part's exit status and seconds
# A dry run anywhere (CPU, Last.fm instead of gowalla; about 3 minutes on 2 cores):
#   DEVICE=cpu CODES_CONFIG=configs/lastfm-codes.yaml PY=.venv/bin/python OUT=/tmp/gp bash bench/gpu_pair_check.sh
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HASHGNN_DATA_MIRROR=${HASHGNN_DATA_MIRROR:-$PWD/shared/data} HASHGNN_CACHE=${HASHGNN_CACHE:-/tmp/hashgnn-cache}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
CODES_CONFIG=${CODES_CONFIG:-configs/gowalla-codes.yaml}
CODES_LIMIT=${CODES_LIMIT:-330}
THREADS=${THREADS:-16}
LOG="$OUT/log.txt"
RUNS=${RUNS:-/tmp/hashgnn-gpu-pair}
rm -rf "$RUNS"; mkdir -p "$RUNS"
part() { echo "== $1: exit $2, $3 s" >>"$LOG"; }

{ nvidia-smi -L; nproc; $PY -c "import sys, torch, numpy, scipy; print(sys.version); print('torch', torch.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no cuda')"; } >"$OUT/env.txt" 2>&1

# 1. The CUDA tests (they skip without a GPU).
t=$SECONDS
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_fitted.py tests/test_codes_refine.py -k cuda -rs >"$OUT/tests.txt" 2>&1
part tests $? $((SECONDS - t))

# 2. The gowalla pair: the codes config trains its teacher (the continuous row) and the codes.
t=$SECONDS
(while :; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null; sleep 5; done) >"$OUT/gpu-util.txt" &
mon=$!
timeout "$CODES_LIMIT" $PY -m hashgnn train --config "$CODES_CONFIG" --device "$DEVICE" --threads "$THREADS" \
    --out "$RUNS/codes" -q --json "$@" >"$OUT/codes.json" 2>>"$LOG"
part codes $? $((SECONDS - t))
kill "$mon" 2>/dev/null
cp "$RUNS/codes/metrics.jsonl" "$OUT/codes-metrics.jsonl" 2>>"$LOG"
cp "$RUNS/codes/config.yaml" "$OUT/codes-config.yaml" 2>>"$LOG"

# 3. Data-parallel on one GPU: two processes would share it, which NCCL refuses; the run must say so.
t=$SECONDS
timeout 90 $PY -m hashgnn train --dataset music_toy --device "$DEVICE" --nproc 2 --epochs 1 -q \
    --out "$RUNS/ddp" >"$OUT/ddp.txt" 2>&1
part ddp $? $((SECONDS - t))
tail -n 40 "$LOG"
