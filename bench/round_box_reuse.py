"""How many of a pseudo-label round's box prompts repeat the previous round's (a memo of decoded boxes could skip
only those): the teachers of consecutive checkpoints of a semisam run, on the first 16 cached unlabelled cases.
    python bench/round_box_reuse.py RUN CACHE DATA
e.g. python bench/round_box_reuse.py runs/dev/l2_semisamA_s0 runs/la/cache ../shared/data/la2018
"""
from __future__ import annotations

import sys

from semisam_fast.cache import EmbeddingCache
from semisam_fast.checkpoints import iteration_checkpoints
from semisam_fast.data import open_dataset
from semisam_fast.inference import predict_case
from semisam_fast.nets import load_student
from semisam_fast.prompts import mask_to_box
from semisam_fast.sam_targets import TargetOptions, teacher_mask

run_dir, cache_dir, data = sys.argv[1:4]
cache = EmbeddingCache(cache_dir)
dataset = open_dataset(data)
cases = list(cache.case_ids)[:16]
boxes: dict[str, dict] = {}
for _, path in iteration_checkpoints(run_dir):
    teacher, config = load_student(path, weights="teacher")
    found = {}
    for case_id in cases:
        slices = cache.slices(case_id)  # as a round: the teacher's mask over the cached slices' stack
        mask = teacher_mask(predict_case(teacher, dataset.load(case_id, with_label=False).image, config,
                                         slices=slices), TargetOptions())
        for s, z in enumerate(slices):
            if mask[:, :, s].any():
                found[(case_id, z)] = tuple(mask_to_box(mask[:, :, s]).tolist())
    boxes[path.stem] = found
names = list(boxes)
for before, after in zip(names, names[1:]):
    same = sum(1 for key, box in boxes[after].items() if boxes[before].get(key) == box)
    print(f"{before} -> {after}: {len(boxes[after])} prompted slices, {same} with the same box")
