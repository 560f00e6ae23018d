"""How many of a pseudo-label round's box prompts repeat the previous round's (a memo of decoded boxes could skip
only those): the teachers of consecutive checkpoints of a semisam run, on the first 16 cached unlabelled cases.
    python bench/round_box_reuse.py CHECKPOINTS_DIR CACHE DATA
e.g. python bench/round_box_reuse.py runs/dev/l2_semisamA_s0/checkpoints runs/la/cache ../shared/data/la2018
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from semisam_fast.cache import EmbeddingCache
from semisam_fast.data import open_dataset
from semisam_fast.inference import predict_case
from semisam_fast.nets import build_student
from semisam_fast.prompts import mask_to_box
from semisam_fast.sam_targets import TargetOptions, teacher_mask

checkpoints, cache_dir, data = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
cache = EmbeddingCache(cache_dir)
dataset = open_dataset(data)
cases = list(cache.case_ids)[:16]
boxes: dict[str, dict] = {}
for path in sorted(checkpoints.glob("iter_*.pt")):
    state = torch.load(path, weights_only=False, map_location="cpu")
    config = state["config"]
    teacher = build_student(config["student"], **config["student_kwargs"])
    teacher.load_state_dict(state["teacher"])
    found = {}
    for case_id in cases:
        mask = teacher_mask(predict_case(teacher, dataset.load(case_id, with_label=False).image, config),
                            TargetOptions())
        for z in cache.slices(case_id):
            if mask[:, :, z].any():
                found[(case_id, z)] = tuple(mask_to_box(mask[:, :, z]).tolist())
    boxes[path.stem] = found
names = list(boxes)
for before, after in zip(names, names[1:]):
    same = sum(1 for key, box in boxes[after].items() if boxes[before].get(key) == box)
    print(f"{before} -> {after}: {len(boxes[after])} prompted slices, {same} with the same box")
