"""Are a trained 2D student's BatchNorm running statistics what costs it Dice? Re-estimate them on the labelled, then
on the unlabelled training slices only (cumulative average, train-mode forwards over 80x80 centre crops), and
evaluate on the run's validation cases each time. Usage: python bench/bn_statistics.py RUN"""
import json
import sys

import numpy as np
import torch

from semisam_fast.data import open_dataset
from semisam_fast.evaluate import evaluate_cases
from semisam_fast.nets import load_student, student_input
from semisam_fast.checkpoints import find_checkpoint
from semisam_fast.geometry.slices2d import SliceStore

run = sys.argv[1]
meta = json.load(open(f"{run}/run.json"))
ds = open_dataset(meta["data"], meta["list"])
net, cfg = load_student(find_checkpoint(run))
si = student_input(cfg)
base = np.mean([r["dice"] for r in evaluate_cases(net, cfg, ds, meta["val_cases"], progress=False)])
for name, cases in (("labelled", meta["labeled_cases"]), ("unlabelled", meta["unlabeled_cases"][:16])):
    store = SliceStore(ds, cases, si, labelled=False)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats(); m.momentum = None
    net.train()
    with torch.no_grad():
        for i in range(0, len(store), 16):
            net(store.images[i:i+16, :, 8:88, 8:88])
    net.eval()
    d = np.mean([r["dice"] for r in evaluate_cases(net, cfg, ds, meta["val_cases"], progress=False)])
    print(run, "as trained", round(base, 3), f"BN stats re-estimated on {name} slices", round(d, 3))
