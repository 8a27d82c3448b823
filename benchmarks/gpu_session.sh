#!/usr/bin/env bash
# The README's GPU measurements in one call of a lent GPU machine, every phase cut off at one deadline.
#
#   bash benchmarks/gpu_session.sh [SECONDS]     # default 540: leaves a 600 s device call time to copy back
#
# Phases, in order, each given what is left of SECONDS:
#   1. env.txt: GPU, driver, python, jax/flax/torch versions and jax's devices;
#   2. throughput.jsonl: benchmarks/throughput.py, all nine rows, bfloat16, batch 64, 150 px, torch eager
#      with AMP and channels_last (rows never timed on a GPU first);
#   3. study_time.jsonl: benchmarks/study_time.py, all nine rows, one epoch each, scaled to 30, on the study's
#      2,550 training tiles of 150 px (TILES and SIZE scale it down);
#   4. compile.jsonl: throughput.py with torch.compile for ResNet-50 and ViT patch 15, if 150 s are left;
#   5. placement.jsonl: benchmarks/placement.py (tiles on device against batches fed from host memory) for
#      ResNet-50 and ConvModel, if 90 s are left;
#   6. predict_stream.jsonl: benchmarks/predict_stream.py (predict's decoding, forward pass, and the two
#      streamed together) for ResNet-50 and ConvModel on 4,096 packbits TIFF tiles (as Kather 2016's), if 60 s
#      are left.
# Phases 1-3 need 30 s. A phase cut off by the deadline keeps the rows it finished (one JSON line per row,
# flushed); a phase skipped for lack of time prints '== NAME: skipped, N s left, needs M s'. Either, or a
# phase that failed, makes the exit status 1; an OUT that cannot be written, 2.
# Everything printed also goes to log.txt. Results go to $OUT (the device tool's output folder) or to
# ./gpu_session_out. MODELS, ROWS, COMPILE_MODELS, PLACEMENT_MODELS, PREDICT_MODELS, BATCH, SIZE and TILES
# (study_time's training tiles; it trains each spec's own batch of 64, so at least 64) override the defaults
# (a quick trial on CPU: MODELS=convmodel ROWS=convmodel COMPILE_MODELS= PLACEMENT_MODELS=convmodel
# PREDICT_MODELS= BATCH=4 SIZE=32 TILES=64).
#
# The device image has jax, flax, optax, orbax and torch but not ml-collections; put its wheel in .whl
# beforehand and carry .whl (benchmarks/README.md, "On a lent GPU machine").
set -u
budget=${1:-540}
case $budget in '' | *[!0-9]*) echo "gpu_session.sh: SECONDS must be a whole number, got '$budget'" >&2; exit 2 ;; esac
out=${OUT:-gpu_session_out}
# Checked first: tee would otherwise fail on every phase while the device time runs out and nothing is kept.
if ! mkdir -p "$out" 2> /dev/null || ! : 2> /dev/null >> "$out/log.txt"; then
  echo "gpu_session.sh: cannot create or write the output folder OUT='$out'; set OUT to a writable folder" >&2
  exit 2
fi
start=$(date +%s)
models=${MODELS-googlenet,densenet121,efficientnet_b4,resnet50,resnet18,convmodel,vit_p15,alexnet,vit_p10}
rows=${ROWS-convmodel,vit_p15,alexnet,resnet18,googlenet,vit_p10,densenet121,resnet50,efficientnet_b4}
compile_models=${COMPILE_MODELS-resnet50,vit_p15}
placement_models=${PLACEMENT_MODELS-resnet50,convmodel}
predict_models=${PREDICT_MODELS-resnet50,convmodel}
batch=${BATCH:-64}
size=${SIZE:-150}
tiles=${TILES:-2550}
export PYTHONUNBUFFERED=1
exec > >(tee -a "$out/log.txt") 2>&1

left() { echo $((budget - ($(date +%s) - start))); }

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_session_site .whl/*.whl \
    || { echo "gpu_session.sh: installing the wheels in .whl failed (see above)"; exit 2; }
  export PYTHONPATH=/tmp/gpu_session_site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! import_error=$(python3 -c "import ml_collections" 2>&1); then
  echo "gpu_session.sh: cannot import ml_collections (${import_error##*$'\n'}); put its wheel in .whl and carry .whl" \
    "(benchmarks/README.md)"
  exit 2
fi

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2> /dev/null || echo "no nvidia-smi"
  python3 - << 'EOF'
import sys

import flax
import jax
import torch

print(f"python {sys.version.split()[0]}, jax {jax.__version__}, flax {flax.__version__}, torch {torch.__version__}")
print(f"jax devices: {jax.devices()}")
EOF
} | tee "$out/env.txt"

run_phase() {  # run_phase NAME FILE NEEDS COMMAND...: COMMAND with what is left of the budget, its stdout to FILE
  local name=$1 file=$2 needs=$3 seconds statuses
  shift 3
  seconds=$(left)
  if [ "$seconds" -lt "$needs" ]; then
    echo "== $name: skipped, $seconds s left, needs $needs s"
    failed="$failed $name"
    return
  fi
  echo "== $name ($(date -u +%H:%M:%S), ${seconds}s left): $*"
  timeout --kill-after=10 "$seconds" "$@" | tee "$out/$file"
  statuses=("${PIPESTATUS[@]}")
  echo "== $name: exit ${statuses[0]} ($(left)s left)"
  [ "${statuses[0]}" -eq 0 ] || failed="$failed $name"
  [ "${statuses[1]}" -eq 0 ] || { echo "== $name: writing $out/$file failed"; failed="$failed $name"; }
}
failed=""

if [ -n "$models" ]; then
  run_phase throughput throughput.jsonl 30 python3 benchmarks/throughput.py --models "$models" --batch "$batch" \
    --size "$size" --steps 10 --repeats 4 --dtype bfloat16 --no-compile --json
fi
if [ -n "$rows" ]; then
  run_phase study_time study_time.jsonl 30 python3 benchmarks/study_time.py --rows "$rows" --epochs 1 \
    --extrapolate 30 --tiles "$tiles" --size "$size" --json
fi
if [ -n "$compile_models" ]; then
  run_phase torch_compile compile.jsonl 150 python3 benchmarks/throughput.py --models "$compile_models" \
    --batch "$batch" --size "$size" --steps 10 --repeats 4 --dtype bfloat16 --json
fi
if [ -n "$placement_models" ]; then
  run_phase placement placement.jsonl 90 python3 benchmarks/placement.py --models "$placement_models" \
    --batch "$batch" --size "$size" --steps 10 --repeats 3 --dtype bfloat16 --json
fi
if [ -n "$predict_models" ]; then
  run_phase predict_stream predict_stream.jsonl 60 python3 benchmarks/predict_stream.py --models "$predict_models" \
    --tiles 4096 --size "$size" --format tif --batch "$batch" --repeats 3 --dtype bfloat16 --json
fi
echo "== done in $(($(date +%s) - start))s; results in $out${failed:+; failed or cut off:$failed}"
[ -z "$failed" ]
