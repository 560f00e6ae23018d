"""What a pseudo-label round's cheaper teacher prediction changes in its targets, before it becomes the default.

A round used to predict every slice of each unlabelled volume in fp32 and take the teacher's largest 3D component
over the whole volume; SAM only ever sees the cached slices (every 2nd in la-cpu). Variants, each timed (the
teacher's prediction alone) and scored against the labels, read HERE for scoring only:
  whole fp32     the old round: all slices, fp32, largest component over the whole volume
  cached fp32    only the cached slices, largest component over their stack (`sam_targets.case_targets` now)
  cached bf16    the same under bf16 autocast (the default on a CPU with bf16 matmuls)
Run on development checkpoints and cases only (not the validation split the LA tables report):

  python bench/round_teacher.py --cache runs/la/cache --data ../shared/data/la2018 \
      --checkpoints runs/dev/l2_semisamA_s0/checkpoints/iter_000250.pt,... --out bench/results/round_teacher_dev.json
"""
import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from semisam_fast.backends import create_backend
from semisam_fast.cache import EmbeddingCache
from semisam_fast.data import open_dataset
from semisam_fast.doctor import cpu_isa, cpu_name
from semisam_fast.formats import DEFAULT_FOLDER, artefact_path
from semisam_fast.fsutil import write_json
from semisam_fast.inference import predict_case
from semisam_fast.nets import load_student
from semisam_fast.sam_targets import TargetOptions, case_targets, score_targets, teacher_mask

VARIANTS = {"whole fp32": (False, "fp32"), "cached fp32": (True, "fp32"), "cached bf16": (True, "bf16")}


def _number(value) -> float:
    return float("nan") if value is None else float(value)  # JSON keeps NaN as null


def summarise(rows: dict[str, list[dict]]) -> dict[str, dict]:
    """Per variant: the teacher's time, target quality (and its per-case difference to the old round where both
    cover slices: a case that gains or loses its only covered slices moves the plain mean by itself), coverage,
    negatives and wrong negatives (negatives on slices the label covers), agreement with the old round."""
    summary = {}
    for name, case_rows in rows.items():
        def mean(key):
            return float(np.nanmean([_number(r[key]) for r in case_rows]))
        paired = [_number(r["target_dice_on_valid"]) - _number(o["target_dice_on_valid"])
                  for r, o in zip(case_rows, rows["whole fp32"])]
        paired = [d for d in paired if not np.isnan(d)]
        summary[name] = {"teacher_seconds": float(sum(r["seconds"] for r in case_rows)),
                         "target_dice_on_valid": mean("target_dice_on_valid"),
                         "target_dice_paired_diff": float(np.mean(paired)), "paired_cases": len(paired),
                         "coverage": mean("coverage"), "teacher_dice": mean("teacher_dice"),
                         "kept": sum(r["kept"] for r in case_rows), "negatives": sum(r["negative"] for r in case_rows),
                         "negatives_wrong": sum(r["negatives_wrong"] for r in case_rows),
                         "pixels_as_old": mean("pixels_as_old"),
                         "pixels_as_old_min": float(min(r["pixels_as_old"] for r in case_rows)),
                         "cases_as_old": sum(r["same_as_old"] for r in case_rows), "cases": len(case_rows)}
    return summary


def print_table(checkpoint: str, summary: dict[str, dict]) -> None:
    print(f"\n{checkpoint}")
    print("| variant | teacher s (all cases) | target Dice on covered | - old, per case | coverage | kept | negatives "
          "(wrong) | pixels as old (min) | cases as old |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in summary.items():
        print(f"| {name} | {m['teacher_seconds']:.1f} | {m['target_dice_on_valid']:.3f} | "
              f"{m['target_dice_paired_diff']:+.4f} ({m['paired_cases']}) | {m['coverage']:.3f} | {m['kept']} | "
              f"{m['negatives']} ({m['negatives_wrong']}) | {m['pixels_as_old']:.5f} ({m['pixels_as_old_min']:.5f}) | "
              f"{m['cases_as_old']} of {m['cases']} |")


parser = argparse.ArgumentParser()
parser.add_argument("--cache")
parser.add_argument("--data")
parser.add_argument("--checkpoints", help="comma-separated training checkpoints (their teachers)")
parser.add_argument("--artefact", default=str(artefact_path(DEFAULT_FOLDER, "litemedsam", "decoder", "fp32")))
parser.add_argument("--out", default="bench/results/round_teacher_dev.json")
parser.add_argument("--summarise", help="only re-summarise and print the per-case rows of this earlier output")
args = parser.parse_args()
if args.summarise:
    report = json.loads(Path(args.summarise).read_text())
    for checkpoint, result in report["checkpoints"].items():
        result["summary"] = summarise(result["cases"])
        print_table(checkpoint, result["summary"])
    write_json(args.summarise, report)
    raise SystemExit
if not (args.cache and args.data and args.checkpoints):
    parser.error("--cache, --data and --checkpoints are required (or --summarise)")

torch.set_num_threads(2)
cache = EmbeddingCache(args.cache)
dataset = open_dataset(args.data)
backend = create_backend("onnx", cache.fingerprint["model"], artefact=args.artefact)
options = TargetOptions(min_agreement=0.7)  # the la-cpu rounds' gates
report = {"command": "python bench/round_teacher.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v),
          "cpu": cpu_name(), "cpu_isa": cpu_isa(), "machine": platform.machine(), "checkpoints": {}}
for checkpoint in args.checkpoints.split(","):
    net, config = load_student(checkpoint, weights="teacher")
    rows: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for case_id in tqdm(cache.case_ids, desc=checkpoint.split("/")[-3] + "/" + checkpoint.split("/")[-1]):
        image = dataset.load(case_id, with_label=False).image
        label = dataset.load(case_id, with_label=True).label  # scoring only
        slices = cache.slices(case_id)
        reference = None
        for name, (cached_only, precision) in VARIANTS.items():
            start = time.perf_counter()
            prob = predict_case(net, image, config, slices=slices if cached_only else None, precision=precision)
            seconds = time.perf_counter() - start
            if cached_only:
                targets = case_targets(case_id, prob, cache, backend, options)
            else:  # the old rule: the largest component over the whole volume, then its cached slices
                mask = teacher_mask(prob, options)[:, :, slices].astype(np.float32)
                targets = case_targets(case_id, mask, cache, backend, TargetOptions(**{**options.as_dict(),
                                                                                       "largest_3d": False}))
            if reference is None:
                reference = targets
            row = score_targets(targets, label)
            row.update(seconds=seconds,
                       pixels_as_old=float((targets.target() == reference.target()).mean()),
                       valid_as_old=float((targets.valid == reference.valid).mean()),
                       same_as_old=bool(np.array_equal(targets.target(), reference.target())
                                        and np.array_equal(targets.valid, reference.valid)))
            rows[name].append(row)
    summary = summarise(rows)
    report["checkpoints"][checkpoint] = {"summary": summary, "cases": rows}
    print_table(checkpoint, summary)
write_json(args.out, report)
