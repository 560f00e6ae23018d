"""`semisam-fast bench`: side-by-side, interleaved timings, reported as ratios to the reference in the same run.

Speed targets live here, never in tests. Every result records the machine and the allocator setting. One module per
concern: `timing` (how anything is timed and summarised), `encoder`, `decoder`, `training` (a step, whole runs), and
`suite` (the command: what runs for `bench WHAT` and where the results go). Artefacts are found through the format
table (`formats.py`), exported when missing.
"""
from __future__ import annotations

from .decoder import bench_decoder
from .encoder import bench_encoder, exported_encoders
from .suite import run
from .timing import gflop, interleaved, machine, summarise
from .training import TRAIN_SHAPES, bench_run, bench_train

__all__ = ["TRAIN_SHAPES", "bench_decoder", "bench_encoder", "bench_run", "bench_train", "exported_encoders", "gflop",
           "interleaved", "machine", "run", "summarise"]
