#!/usr/bin/env bash
# sup / mt / semisam at 2 and 4 labelled LA cases on the la-cpu preset, scored on the validation split
# (the last 8 cases of train.list, never trained on). Usage: bash bench/la_experiment.sh [SEEDS] [OUT]
#   SEEDS: space-separated list, default "0"; OUT: default runs/la-experiment
set -euo pipefail
SEEDS=${1:-0}
OUT=${2:-runs/la-experiment}
DATA=${SEMISAM_LA_DIR:-../shared/data/la2018}
mkdir -p "$OUT"
# one cache for every method and seed: the first 16 unlabelled cases of either setting (cases 3..20), every 2nd slice
sed -n '3,20p' "$DATA/train.list" > "$OUT/unlabelled.list"
[ -f engines/litemedsam_encoder_fp32.onnx ] || semisam-fast export --model litemedsam --out engines
semisam-fast embed --data "$DATA" --list "$OUT/unlabelled.list" --backend onnx --artefact engines/litemedsam_encoder_fp32.onnx \
  --every 2 --cache "$OUT/cache"
for labeled in 2 4; do
  for seed in $SEEDS; do
    for method in sup mt semisam; do
      run="$OUT/l${labeled}_${method}_s${seed}"
      semisam-fast train --data "$DATA" --labeled "$labeled" --method "$method" --preset la-cpu --seed "$seed" \
        --cache "$OUT/cache" --backend onnx --artefact engines/litemedsam_decoder_fp32.onnx --out "$run"
      semisam-fast evaluate --run "$run" > /dev/null
    done
  done
done
python bench/la_table.py "$OUT" > "$OUT/table.md"
cat "$OUT/table.md"
