#!/usr/bin/env bash
# Issue 14's GPU check, one prepared run on a lent GPU machine (estimated ~5 minutes on an H200, not yet run
# there; stops itself at LIMIT s, default 480):
#
#   OUT=gpu-out bash bench/gpu_kernel_check.sh            # from the repository root
#
# bench/retrieval_gpu.py at 10^6 and 10^7 items x 64 bits, 10,000 queries, k = 100: the fused Triton
# kernels (several tile plans, exactness against the CPU kernel on 200 queries with and without
# exclusions, seconds per pass), the torch path, the plain bf16 ±1 product, float32 matmul + topk, the
# hierarchical mode on the GPU, and the measured popcount limit. Writes to $OUT:
#   env.txt                GPU, Python, torch, triton versions
#   retrieval_kernel.jsonl one JSON object per size (copy it to bench/results/gpu-h200/)
#   log.txt                progress and errors
# A dry run anywhere (Triton's interpreter; minutes):
#   DEVICE=cpu ITEMS=1500 TRITON_INTERPRET=1 OUT=/tmp/gk bash bench/gpu_kernel_check.sh --queries 48 --k 10 \
#       --check 16 --seen 5 --plans '{"block_q": 16, "block_n": 64}'
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HASHGNN_CACHE=${HASHGNN_CACHE:-/tmp/hashgnn-cache}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda} ITEMS=${ITEMS:-"1000000 10000000"} LIMIT=${LIMIT:-480}
{ nvidia-smi -L; nproc; $PY -c "import sys, torch, numpy, triton; print(sys.version); print('torch', torch.__version__, 'numpy', numpy.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no cuda')"; } >"$OUT/env.txt" 2>&1
# shellcheck disable=SC2086  # ITEMS is a list
timeout "$LIMIT" $PY bench/retrieval_gpu.py --device "$DEVICE" --items $ITEMS "$@" >"$OUT/retrieval_kernel.jsonl" 2>>"$OUT/log.txt"
echo "exit $?" >>"$OUT/log.txt"
tail -n 20 "$OUT/log.txt"
