"""`semisam-fast demo`: the main job on the built-in default, end to end, in minutes on 2 cores."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .backends import OnnxBackend
from .export import export
from .metrics import binary_metrics
from .overlay import overlay
from .samples import load_samples
from .segment import segment_with_boxes


def run_export_and_segment(out: Path, data: str | Path | None = None, log=print) -> dict:
    """Export LiteMedSAM to ONNX (gate included), then segment sample slices from label boxes through onnxruntime."""
    out = Path(out)
    samples = load_samples(4, data)
    if data is None and "phantom" in samples.source:
        log("sample: the built-in SYNTHETIC phantom (real LA data may not be redistributed; use --data for yours)")
    else:
        log(f"sample: {samples.source}")
    results = export("litemedsam", part="all", out=out / "engines", data=data, progress=log)
    for result in results:
        log(f"  {result.path.name}: {result.report.summary()}")
    parts = {r.report.part: r.path for r in results}
    backend = OnnxBackend(parts["encoder"], parts["decoder"])
    logits, _ = segment_with_boxes(backend, samples.slices, samples.boxes)
    masks = (logits > 0).numpy()
    dice = [binary_metrics(m, l)["dice"] for m, l in zip(masks, samples.labels)]
    box_dice = []
    for box, label in zip(samples.boxes.numpy().astype(int), samples.labels):
        as_mask = np.zeros_like(label)
        as_mask[box[1]:box[3] + 1, box[0]:box[2] + 1] = 1
        box_dice.append(binary_metrics(as_mask, label)["dice"])
    pictures = [overlay(s.numpy(), out / f"overlay_{i}.png", prediction=m, label=l, boxes=[b.tolist()])
                for i, (s, m, l, b) in enumerate(zip(samples.slices, masks, samples.labels, samples.boxes))]
    summary = {"sample": samples.source, "provider": backend.describe()["encoder"]["provider"],
               "slice_dice_sam": float(np.mean(dice)), "slice_dice_box_as_mask": float(np.mean(box_dice)),
               "overlays": [str(p) for p in pictures]}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    log(f"LiteMedSAM with label boxes: slice Dice {summary['slice_dice_sam']:.3f} "
        f"(box itself as mask: {summary['slice_dice_box_as_mask']:.3f}) on {summary['provider']}")
    log(f"overlays: {out}/overlay_*.png (green: label, red: SAM, yellow: box prompt)")
    return summary
