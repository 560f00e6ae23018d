"""The whole pseudo-label pass timed end to end: every case read, its labelled slices through SAM's encoder and
decoder (prompted with each slice's label box; `pseudo-label --prompt gt-box` without a cache), masks written.
Nothing is cached before or during it. `bench pseudo-label` and the GPU suite call it (issue 10's "all of LA
pseudo-labelled").
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .backends import Backend
from .data import open_dataset
from .pseudo_label import pseudo_label


def time_label_pass(data: str | Path, backend: Backend, cases: int | None = None, batch: int = 32,
                    encoder_batch: int = 8, workdir: str | Path | None = None, progress: bool = True) -> dict:
    """Seconds for the pass, with slices, prompts (= slices encoded) and the masks' mean Dice against the labels (a
    check that the pass did its work, not a quality claim: the prompts come from those labels; no surface distances,
    which on a GPU would cost more than the labelling). `cases`: the data set's first N (default all); `batch`:
    prompts per decoder call, `encoder_batch`: slices per encoder call."""
    dataset = open_dataset(data)
    case_ids = dataset.case_ids[:cases] if cases else dataset.case_ids
    with tempfile.TemporaryDirectory(prefix="semisam-label-pass-") as scratch:  # the masks, unless kept in workdir
        start = time.perf_counter()
        report = pseudo_label(dataset, None, backend, Path(workdir or scratch) / "masks", case_ids=case_ids,
                              batch=batch, n_overlays=0, progress=progress, encoder=backend,
                              encoder_batch=encoder_batch, distances=False)
        seconds = time.perf_counter() - start
    rows = report.rows if report is not None else []
    prompts = sum(r["prompted"] for r in rows)
    return {"cases": len(case_ids), "slices": sum(dataset.num_slices(c) for c in case_ids), "prompts": prompts,
            "total_s": seconds, "prompts_per_s": prompts / seconds,
            "mean_dice_vs_label": sum(r["dice"] for r in rows) / len(rows) if rows else float("nan"),
            "backend": backend.describe(), "decoder_batch": batch, "encoder_batch": encoder_batch}
