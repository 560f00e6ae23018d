#!/usr/bin/env bash
# sup / mt / uamt / semisam at 2 and 4 labelled LA cases on the la-cpu preset, scored on the validation split
# (the last 8 cases of train.list, never trained on), with and without the largest connected component; for
# semisam runs also the gated SAM targets of the run's teacher on its unlabelled cases (labels for scoring only).
# Usage: bash bench/la_experiment.sh [SEEDS] [OUT] [LABELS] [METHODS]
#   defaults: "0 1 2", runs/la-experiment, "2 4", "sup mt uamt semisam". Extra train options: $TRAIN_ARGS.
#   PROMPT_FROM=sup (or mt): semisam's rounds prompted by that method's finished run of the same setting and seed
#   (--sam-prompt-run; list the method before semisam in METHODS). METHODS may name `selftrain`: the control, a
#   semisam run whose targets are the prompting network's own masks (--sam-fusion teacher), SAM decoded but unused.
set -euo pipefail
SEEDS=${1:-"0 1 2"}
OUT=${2:-runs/la-experiment}
LABELS=${3:-"2 4"}
METHODS=${4:-"sup mt uamt semisam"}
DATA=${SEMISAM_LA_DIR:-../shared/data/la2018}
CACHE=${CACHE:-$OUT/cache}
mkdir -p "$OUT"
# one cache for every method and seed: the labelled cases (adapt trains SAM's decoder on them) and the first 16
# unlabelled cases of either setting (cases 1..20), every 2nd slice
sed -n '1,20p' "$DATA/train.list" > "$OUT/unlabelled.list"
[ -f engines/litemedsam_encoder_fp32.onnx ] || semisam-fast export --model litemedsam --out engines
semisam-fast embed --data "$DATA" --list "$OUT/unlabelled.list" --backend onnx --artefact engines/litemedsam_encoder_fp32.onnx \
  --every 2 --cache "$CACHE"
for labeled in $LABELS; do
  # SAM's mask decoder adapted on the labelled cases (once per label setting; the encoder and the cache are shared)
  ADAPTED="$OUT/adapted_l${labeled}"
  if [[ " $METHODS " == *" semisam "* || " $METHODS " == *" selftrain "* ]] && [ ! -f "$ADAPTED/adapted.pth" ]; then
    semisam-fast adapt --data "$DATA" --labelled "$labeled" --cache "$CACHE" --no-holdout --out "$ADAPTED"
  fi
  for seed in $SEEDS; do
    for method in $METHODS; do
      run="$OUT/l${labeled}_${method}_s${seed}"
      [ -f "$run/eval_largest.json" ] && continue
      sam=(--backend onnx --artefact engines/litemedsam_decoder_fp32.onnx)
      recipe=()
      train_method=$method
      if [ "$method" = semisam ] || [ "$method" = selftrain ]; then  # the adapted decoder in OpenVINO bf16, its recipe
        sam=(--backend openvino --precision bf16 --checkpoint "$ADAPTED/adapted.pth"
             --artefact "$ADAPTED/litemedsam_decoder_fp32.onnx")
        recipe=(--sam-recipe adapted)
        if [ -n "${PROMPT_FROM:-}" ]; then recipe+=(--sam-prompt-run "$OUT/l${labeled}_${PROMPT_FROM}_s${seed}"); fi
        if [ "$method" = selftrain ]; then train_method=semisam; recipe+=(--sam-fusion teacher); fi
      fi
      # shellcheck disable=SC2086
      semisam-fast train --data "$DATA" --labeled "$labeled" --method "$train_method" --preset la-cpu --seed "$seed" \
        --cache "$CACHE" "${sam[@]}" "${recipe[@]}" --out "$run" ${TRAIN_ARGS:-}
      semisam-fast evaluate --run "$run" > /dev/null
      if [ "$method" = semisam ]; then
        sed -n "$((labeled + 1)),$((labeled + 16))p" "$DATA/train.list" > "$run/unlabelled.list"
        semisam-fast pseudo-label --cache "$CACHE" --data "$DATA" --list "$run/unlabelled.list" --prompt teacher \
          --run "$run" "${sam[@]}" --out "$run/targets" > /dev/null
      fi
      semisam-fast evaluate --run "$run" --largest --out "$run/eval_largest.json" > /dev/null
    done
  done
done
python bench/la_table.py "$OUT" > "$OUT/table.md"
cat "$OUT/table.md"
