"""Where one pseudo-label round of a la-cpu SemiSAM run spends its time (cProfile, cumulative): the teacher's
prediction of the unlabelled volumes, cache reads, the SAM decoder. One-off measurement for README:
    python bench/profile_round.py DATA CACHE [BACKEND [PRECISION [ARTEFACT]]]
e.g. python bench/profile_round.py ../shared/data/la2018 runs/la/cache openvino bf16 \
         engines/litemedsam_decoder_fp32.onnx
The round runs at iteration 0 (untrained teacher), on a fresh run folder in /tmp.
"""
from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import time

from semisam_fast.train import build_trainer, preset

data, cache, *rest = sys.argv[1:]
backend, precision, artefact = (rest + ["torch", None, None])[:3]
trainer = build_trainer(preset("la-cpu", method="semisam"), data, None, 2, 8, tempfile.mkdtemp(), cache=cache,
                        backend=backend, artefact=artefact, precision=precision, tensorboard=False)
profile = cProfile.Profile()
start = time.perf_counter()
profile.enable()
trainer.sam_round()
profile.disable()
print(f"round {time.perf_counter() - start:.1f} s", trainer.round_logs)
pstats.Stats(profile).sort_stats("cumulative").print_stats(20)
