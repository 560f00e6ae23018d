#!/usr/bin/env bash
# The GPU suite in one command, for a machine with an NVIDIA GPU:
#   bash bench/gpu.sh OUT_DIR
# Installs the GPU extra when missing, then: doctor, the GPU tests, encoder throughput vs batch for litemedsam and
# vit_b (random-init weights: timing only), torch fp32/fp16/bf16 vs onnxruntime CUDA (+ TensorRT when present),
# decoder prompts/s. JSON into OUT_DIR, named after the card.
set -euo pipefail
OUT=${1:?usage: bash bench/gpu.sh OUT_DIR}
mkdir -p "$OUT"
python -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" \
  || python -m pip install -q onnxruntime-gpu || true
CARD=$(python -c "import torch; print(torch.cuda.get_device_name().replace(' ', '_'))")
semisam-fast doctor | tee "$OUT/doctor_$CARD.txt"
python -m pytest -q -m gpu tests/test_gpu_paths.py | tee "$OUT/gpu_tests_$CARD.txt" || true
python bench/gpu_encoder.py --out "$OUT/gpu_$CARD.json"
