"""The whole pseudo-label pass timed end to end: every slice of every case through the encoder into a fresh cache,
then SAM's decoder prompted with each labelled slice's box (`pseudo-label --prompt gt-box`), masks written. Volumes
are read from disk in both stages, as the two commands do; nothing is cached beforehand. `bench pseudo-label` and the
GPU suite call it (issue 10's "all of LA pseudo-labelled").
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .backends import Backend
from .cache import EmbeddingCache
from .data import open_dataset
from .embed import build_cache
from .pseudo_label import pseudo_label


def time_label_pass(data: str | Path, backend: Backend, cases: int | None = None, batch: int = 16,
                    workdir: str | Path | None = None, progress: bool = True) -> dict:
    """Seconds of the embed stage, the decode stage and both, with slices, prompts and the masks' mean Dice against
    the labels (a check that the pass did its work, not a quality claim: the prompts come from those labels).
    `cases`: the first N of the data set (default all)."""
    dataset = open_dataset(data)
    case_ids = dataset.case_ids[:cases] if cases else dataset.case_ids
    work = Path(workdir or tempfile.mkdtemp(prefix="semisam-label-pass-"))
    start = time.perf_counter()
    embedded = build_cache(dataset, backend, work / "cache", case_ids=case_ids, batch=batch, progress=progress)
    embed_s = time.perf_counter() - start
    cache = EmbeddingCache(work / "cache")
    start = time.perf_counter()
    report = pseudo_label(dataset, cache, backend, work / "masks", case_ids=case_ids, n_overlays=0,
                          progress=progress)
    decode_s = time.perf_counter() - start
    rows = report.rows if report is not None else []
    return {"cases": len(case_ids), "slices": embedded.slices_total, "prompts": sum(r["prompted"] for r in rows),
            "embed_s": embed_s, "decode_s": decode_s, "total_s": embed_s + decode_s,
            "slices_per_s": embedded.slices_total / (embed_s + decode_s),
            "mean_dice_vs_label": sum(r["dice"] for r in rows) / len(rows) if rows else float("nan"),
            "backend": backend.describe(), "encoder_batch": batch}
