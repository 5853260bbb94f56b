#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Every GPU check of the project (at most 11.5 minutes on one H100/H200), logs under $OUT:
#   1. build the CUDA ops and run the CUDA tests (ops against their references, networks in fp16/bf16);
#   2. benchmarks: bias_act and upfirdn3d cuda vs ref, G/D memory at batch 2, training iterations, generation.
# It needs neither nibabel nor SimpleITK. To run other tests there too, carry them as wheels in .whl/ (installed
# below when present):  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl nibabel SimpleITK
# Usage: bash benchmarks/device_check.sh [all|tests|bench]     (results in $OUT, default ./device-out)
# 'tests' takes at most 3.5 minutes and 'bench' at most 8; as two device calls each stays inside one call's limit.
set -uo pipefail
OUT=${OUT:-device-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_EXTENSIONS_DIR=/tmp/torch_extensions DNNLIB_CACHE_DIR=/tmp/dnnlib
PY=${PYTHON:-python3}
if ls .whl/*.whl > /dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'; } > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, show the tail.
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "=== $name: exit $? after $((SECONDS - start)) s"
    tail -n 12 "$OUT/$name.log"
}

PHASE=${1:-all}
if [ "$PHASE" = all ] || [ "$PHASE" = tests ]; then
    step cuda_tests 200 $PY -m pytest -q -p no:cacheprovider --maxfail=10 tests/torch_utils/ops tests/training/test_networks.py
fi
if [ "$PHASE" = all ] || [ "$PHASE" = bench ]; then
    step ops 60 $PY benchmarks/ops.py
    step network_memory 60 $PY benchmarks/network_memory.py
    # fp16-cl-cuda and tf32-cf-cuda are further variants; add them once the first run shows what one costs.
    step train_speed 280 $PY benchmarks/train_speed.py --variants=bf16-cl-cuda,bf16-cl-ref --profile=4
    step generate_speed 60 $PY benchmarks/generate_speed.py --precisions=bf16
fi
