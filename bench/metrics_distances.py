"""`metrics.binary_metrics` (the masks' union box, each surface distance once) against medpy's dc, jc, hd95 and asd
on the whole LA volume, case by case; the values must be identical. The prediction is the case's label moved 2
voxels in-plane and grown by one voxel: a near miss of the size a student makes (a prediction with islands far from
the atrium widens the box and narrows the gain).
One-off measurement for README:
    SEMISAM_LA_DIR=../shared/data/la2018 python bench/metrics_distances.py [CASES] [OUT.json]
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from medpy.metric import binary as mb
from scipy import ndimage

from semisam_fast.bench import machine
from semisam_fast.data import open_dataset
from semisam_fast.metrics import binary_metrics, union_box

cases = int(sys.argv[1]) if len(sys.argv) > 1 else 8
dataset = open_dataset(os.environ["SEMISAM_LA_DIR"])


def whole_volume(pred: np.ndarray, gt: np.ndarray, spacing) -> dict:
    return {"dice": mb.dc(pred, gt), "jaccard": mb.jc(pred, gt), "hd95": mb.hd95(pred, gt, voxelspacing=spacing),
            "asd": mb.asd(pred, gt, voxelspacing=spacing)}


rows = []
for case_id in dataset.case_ids[:cases]:
    case = dataset.load(case_id)
    gt = case.label.astype(bool)
    pred = ndimage.binary_dilation(np.roll(gt, (2, 2), axis=(0, 1)))
    start = time.perf_counter()
    medpy = whole_volume(pred, gt, case.spacing)
    medpy_s = time.perf_counter() - start
    start = time.perf_counter()
    boxed = binary_metrics(pred, gt, case.spacing)
    boxed_s = time.perf_counter() - start
    assert all(boxed[k] == v for k, v in medpy.items()), (case_id, boxed, medpy)
    box = union_box(pred, gt)
    rows.append({"case": case_id, "medpy_whole_s": medpy_s, "binary_metrics_s": boxed_s,
                 "box_fraction": float(np.prod([s.stop - s.start for s in box]) / gt.size)})

medpy_total = sum(r["medpy_whole_s"] for r in rows)
boxed_total = sum(r["binary_metrics_s"] for r in rows)
results = {"machine": machine(), "cases": cases, "rows": rows, "medpy_whole_s_per_case": medpy_total / cases,
           "binary_metrics_s_per_case": boxed_total / cases, "speedup": medpy_total / boxed_total,
           "identical_values": True}
print(json.dumps({k: v for k, v in results.items() if k not in ("machine", "rows")}, indent=1))
if len(sys.argv) > 2:
    Path(sys.argv[2]).write_text(json.dumps(results, indent=2))
