"""pseudo-label's two paths over the same LA cases, alternated: through a cache (`embed` every slice, then
`pseudo-label --cache`) against without one (the encoder on just the labelled slices, `label_pass.time_label_pass`);
both score Dice only.
OpenVINO, bf16 where the CPU has it, from engines/. One-off measurement for README:
    SEMISAM_LA_DIR=../shared/data/la2018 python bench/label_pass_paths.py [CASES] [OUT.json]
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from semisam_fast.backends import create_backend
from semisam_fast.bench import machine
from semisam_fast.cache import EmbeddingCache
from semisam_fast.data import open_dataset
from semisam_fast.doctor import has_bf16_matmuls
from semisam_fast.embed import build_cache
from semisam_fast.formats import DEFAULT_FOLDER
from semisam_fast.label_pass import time_label_pass
from semisam_fast.pseudo_label import pseudo_label

cases = int(sys.argv[1]) if len(sys.argv) > 1 else 4
data = os.environ["SEMISAM_LA_DIR"]
backend = create_backend("openvino", "litemedsam", artefact=Path(DEFAULT_FOLDER),
                         precision="bf16" if has_bf16_matmuls() else "fp32")
dataset = open_dataset(data)
case_ids = dataset.case_ids[:cases]


def through_cache() -> dict:
    with tempfile.TemporaryDirectory(prefix="semisam-paths-") as work:  # ~180 MiB of embeddings a case
        return _through_cache(Path(work))


def _through_cache(work: Path) -> dict:
    start = time.perf_counter()
    build_cache(dataset, backend, work / "cache", case_ids=case_ids, batch=8, progress=False)
    embed_s = time.perf_counter() - start
    report = pseudo_label(dataset, EmbeddingCache(work / "cache"), backend, work / "masks", case_ids, n_overlays=0,
                          progress=False, distances=False)
    total = time.perf_counter() - start
    return {"total_s": total, "embed_s": embed_s, "cache_bytes": EmbeddingCache(work / "cache").size_bytes(),
            "mean_dice_vs_label": report.summary["dice"][0]}


results: dict = {"machine": machine(), "cases": cases, "backend": backend.describe(), "runs": []}
for _ in range(2):
    results["runs"].append({"through_cache": through_cache(),
                            "without_cache": time_label_pass(data, backend, cases=cases, progress=False)})
cached = sorted(r["through_cache"]["total_s"] for r in results["runs"])
live = sorted(r["without_cache"]["total_s"] for r in results["runs"])
results["without_over_through_cache_speedup"] = [c / v for c, v in zip(cached, live)]
print(json.dumps({k: v for k, v in results.items() if k not in ("machine", "backend")}, indent=1, default=str))
if len(sys.argv) > 2:
    Path(sys.argv[2]).write_text(json.dumps(results, indent=2, default=str))
