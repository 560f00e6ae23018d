"""Offline quality of SemiSAM's pseudo-label targets, before any training uses them.

A trained run's teacher predicts each case; `sam_targets.case_targets` makes SAM targets under several variants
(prompt source, margin, gates, negatives); each is scored against the case's label — read HERE, offline, for
scoring only, never in training. A variant whose targets are not better than the teacher on the slices they
cover cannot help the student. Run it on development cases (neither labelled, unlabelled-for-training nor
validation) to choose the defaults:

  python bench/target_quality.py --run runs/dev/l2_mt_s0 --cache runs/la/cache --list runs/la/dev_cases.list \
      --out bench/results/target_quality.json
"""
import argparse
import json
import platform
from pathlib import Path

import numpy as np
from tqdm import tqdm

from semisam_fast.backends import create_backend
from semisam_fast.cache import EmbeddingCache
from semisam_fast.data import open_dataset, read_list
from semisam_fast.nets import load_student
from semisam_fast.fsutil import write_json
from semisam_fast.checkpoints import find_checkpoint
from semisam_fast.inference import predict_case
from semisam_fast.sam_targets import TargetOptions, case_targets, score_targets

VARIANTS = {  # name -> TargetOptions; "plain" is the old per-step term's prompt (every predicted pixel, no gates)
    "plain (no LCC, no negatives)": TargetOptions(largest_3d=False, negatives=False),
    "LCC": TargetOptions(negatives=False),
    "LCC + negatives": TargetOptions(),
    "LCC + negatives, margin 2": TargetOptions(margin=2.0),
    "LCC + negatives, margin 8": TargetOptions(margin=8.0),
    "LCC + negatives, SAM IoU >= 0.85": TargetOptions(min_iou_pred=0.85),
    "LCC + negatives, agreement >= 0.5": TargetOptions(min_agreement=0.5),
    "LCC + negatives, agreement >= 0.7": TargetOptions(min_agreement=0.7),
    "LCC + negatives, IoU >= 0.85 + agreement >= 0.5": TargetOptions(min_iou_pred=0.85, min_agreement=0.5),
}

parser = argparse.ArgumentParser()
parser.add_argument("--run", required=True, help="training run whose teacher prompts SAM")
parser.add_argument("--cache", required=True)
parser.add_argument("--list", required=True, help="cases to score (cached, with labels)")
parser.add_argument("--data", default=None, help="default: the run's data folder")
parser.add_argument("--weights", default="teacher")
parser.add_argument("--artefact", default="engines/litemedsam_decoder_fp32.onnx")
parser.add_argument("--out", default="bench/results/target_quality.json")
args = parser.parse_args()

run = json.loads((Path(args.run) / "run.json").read_text())
dataset = open_dataset(args.data or run["data"], args.list)
cache = EmbeddingCache(args.cache)
backend = create_backend("onnx", cache.fingerprint["model"], artefact=args.artefact)
net, config = load_student(find_checkpoint(args.run), weights=args.weights)
rows: dict[str, list[dict]] = {name: [] for name in VARIANTS}
for case_id in tqdm(read_list(args.list), desc="cases"):
    prob = predict_case(net, dataset.load(case_id, with_label=False).image, config)
    label = dataset.load(case_id, with_label=True).label  # scoring only
    for name, options in VARIANTS.items():
        rows[name].append(score_targets(case_targets(case_id, prob, cache, backend, options), label))

summary = {}
print("| variant | teacher Dice (all cached slices) | teacher Dice on covered slices | target Dice on covered "
      "slices | target precision | coverage | wrong negatives |")
print("|---|---|---|---|---|---|---|")
for name, case_rows in rows.items():
    mean = {k: float(np.nanmean([r[k] for r in case_rows])) for k in case_rows[0] if k != "case"}
    summary[name] = mean
    print(f"| {name} | {mean['teacher_dice']:.3f} | {mean['teacher_dice_on_valid']:.3f} | "
          f"{mean['target_dice_on_valid']:.3f} | {mean['target_precision']:.3f} | {mean['coverage']:.2f} | "
          f"{sum(r['negatives_wrong'] for r in case_rows)} of {sum(r['negative'] for r in case_rows)} |")
write_json(args.out, {
    "command": "python bench/target_quality.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v),
    "machine": platform.processor() or platform.machine(), "checkpoint": str(find_checkpoint(args.run)),
    "options": {name: o.as_dict() for name, o in VARIANTS.items()}, "summary": summary, "cases": rows})
