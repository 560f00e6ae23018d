"""Diagnosis for the experiment: how good are SAM's masks when prompted from a trained student's own boxes?

For each run given, on unlabelled cases in the cache (their labels are read HERE, offline, for scoring only — never
in training): the student's prediction, and SAM prompted with the box of that prediction, are both scored against the
label (Dice over the cached slices). If SAM from student boxes is not better than the student itself, the SAM term
has little to teach. Usage: python bench/sam_from_student.py CACHE RUN [RUN ...] [--cases K]
"""
import argparse
import json

import numpy as np
import torch

from semisam_fast.backends import create_backend
from semisam_fast.cache import EmbeddingCache
from semisam_fast.data import open_dataset
from semisam_fast.evaluate import largest_component, load_student
from semisam_fast.inference import predict_case
from semisam_fast.metrics import binary_metrics
from semisam_fast.train.sam_term import SamTeacher
from semisam_fast.train.slices import SliceRef

parser = argparse.ArgumentParser()
parser.add_argument("cache")
parser.add_argument("runs", nargs="+")
parser.add_argument("--cases", type=int, default=4)
parser.add_argument("--margin", type=float, default=5.0)
parser.add_argument("--largest", action="store_true", help="prompt from each slice's largest predicted component")
args = parser.parse_args()
cache = EmbeddingCache(args.cache)
sam = SamTeacher(create_backend("engines", cache.fingerprint["model"]), cache, margin=args.margin)
results = {}
for run in args.runs:
    meta = json.load(open(f"{run}/run.json"))
    dataset = open_dataset(meta["data"], meta["list"])
    net, config = load_student(f"{run}/checkpoints/final.pt")
    cases = [c for c in meta["unlabeled_cases"] if c in set(cache.case_ids)][: args.cases]
    rows = []
    for case_id in cases:
        case = dataset.load(case_id)
        zs = cache.slices(case_id)
        prob = predict_case(net, case.image, config)[:, :, zs]
        student = prob.copy()
        if args.largest:  # drop scattered false positives that stretch the box
            for k in range(prob.shape[2]):
                prob[:, :, k] *= largest_component(prob[:, :, k] > 0.5)
        canvas = torch.from_numpy(np.ascontiguousarray(prob.transpose(2, 0, 1)))
        refs = [SliceRef(case_id, z, case.image.shape[0], case.image.shape[1]) for z in zs]
        masks, valid = sam.canvas_masks(canvas, refs)
        label = case.label[:, :, zs]
        rows.append({"case": case_id, "student": binary_metrics(student > 0.5, label)["dice"],
                     "sam_from_student_box": binary_metrics(masks.numpy().transpose(1, 2, 0) > 0, label)["dice"],
                     "prompted_slices": int(valid.sum()), "label_slices": int(label.any(axis=(0, 1)).sum())})
    results[run] = {"cases": rows, **{k: float(np.mean([r[k] for r in rows]))
                                      for k in ("student", "sam_from_student_box")}}
    print(run, {k: round(v, 3) for k, v in results[run].items() if k != "cases"})
print(json.dumps(results, indent=2))
