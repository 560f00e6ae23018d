"""Where one pseudo-label round of a la-cpu SemiSAM run spends its time (cProfile, cumulative): the teacher's
prediction of the unlabelled volumes, cache reads, the SAM decoder. One-off measurement for README:
    python bench/profile_round.py DATA CACHE [BACKEND [PRECISION [ARTEFACT [CHECKPOINT]]]]
e.g. python bench/profile_round.py ../shared/data/la2018 runs/la/cache openvino bf16 \
         engines/litemedsam_decoder_fp32.onnx runs/dev/l2_semisamA_s0/checkpoints/iter_000500.pt
The round runs on a fresh run folder in /tmp, with an untrained teacher (iteration 0) or CHECKPOINT's teacher.
"""
from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import time

from semisam_fast.nets import load_student
from semisam_fast.train import build_trainer, preset

data, cache, *rest = sys.argv[1:]
backend, precision, artefact, checkpoint = (rest + ["torch", None, None, None][len(rest):])[:4]
trainer = build_trainer(preset("la-cpu", method="semisam"), data, None, 2, 8, tempfile.mkdtemp(), cache=cache,
                        backend=backend, artefact=artefact, precision=precision, tensorboard=False)
if checkpoint:
    trainer.teacher.load_state_dict(load_student(checkpoint, weights="teacher")[0].state_dict())
profile = cProfile.Profile()
start = time.perf_counter()
profile.enable()
trainer.method.sam_round(trainer)
profile.disable()
print(f"round {time.perf_counter() - start:.1f} s", trainer.round_logs)
pstats.Stats(profile).sort_stats("cumulative").print_stats(20)
