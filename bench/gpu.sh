#!/usr/bin/env bash
# The GPU suite in one command, for a machine with an NVIDIA GPU:
#   bash bench/gpu.sh OUT_DIR
# doctor, the GPU tests, then bench/gpu_suite.py: encoder throughput vs batch for litemedsam and vit_b (random-init
# weights unless SEMISAM_VIT_B_CHECKPOINT: timing only) over torch fp32/fp16/bf16 eager, with SDPA attention and
# compiled with CUDA graphs, onnxruntime CUDA and TensorRT where they are really there; all of LA pseudo-labelled end
# to end (SEMISAM_LA_DIR, default ../shared/data/la2018 when it is there); decoder prompts/s; the training iteration.
# Files go into OUT_DIR, named after the card.
# Runs from a checkout without installing (PYTHONPATH), as long as the dependencies are importable.
set -uo pipefail
OUT=${1:?usage: bash bench/gpu.sh OUT_DIR}
mkdir -p "$OUT"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
BESIDE="$(pwd)/../shared/data/la2018"
if [ -z "${SEMISAM_LA_DIR:-}" ] && [ -f "$BESIDE/train.list" ]; then export SEMISAM_LA_DIR="$BESIDE"; fi
CARD=$($PY -c "import torch; print(torch.cuda.get_device_name().replace(' ', '_'))") || exit 1
$PY -m semisam_fast.cli doctor > "$OUT/doctor_$CARD.txt" 2>&1; cat "$OUT/doctor_$CARD.txt"
timeout 240 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_paths.py > "$OUT/gpu_tests_$CARD.txt" 2>&1
tail -5 "$OUT/gpu_tests_$CARD.txt"
$PY bench/gpu_suite.py --out "$OUT/gpu_$CARD.json" 2>&1 | grep -v '^ \|^{\|^}' 
