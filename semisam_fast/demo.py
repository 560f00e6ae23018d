"""`semisam-fast demo`: the whole job on the built-in default, in minutes on 2 cores.

export LiteMedSAM (parity gate) -> segment sample slices from boxes -> embed the labelled and unlabelled cases once
-> pseudo-label the unlabelled ones (the SAM ceiling, scored against their labels for the report only) -> adapt SAM's
mask decoder on the labelled cases -> a short `sup` run, then a `semisam` run whose targets the `sup` run's network
prompts (`--sam-prompt-run`) -> evaluate both on the validation cases -> a table, report.json and overlay PNGs.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .choices import DEFAULT_MODEL
from .adapt import AdaptOptions, adapt
from .backends import OnnxBackend
from .cache import EmbeddingCache
from .data import open_dataset, split_cases
from .embed import build_cache
from .evaluate import evaluate_cases
from .results import write_report, write_results
from .export import export
from .formats import DEFAULT_FOLDER
from .metrics import binary_metrics
from .overlay import overlay
from .pseudo_label import pseudo_label
from .samples import load_samples, phantom_dir
from .segment import box_as_mask_dice, segment_with_boxes


def run_export_and_segment(out: Path, data: str | Path | None, log=print) -> tuple[dict, dict]:
    """Export LiteMedSAM to ONNX (gate included), then segment sample slices from label boxes through onnxruntime."""
    samples = load_samples(4, data)
    results = export(DEFAULT_MODEL, part="all", out=out / DEFAULT_FOLDER, data=data, progress=log)
    for result in results:
        log(f"  {result.path.name}: {result.report.summary()}")
    parts = {r.report.part: r.path for r in results}
    backend = OnnxBackend(parts["encoder"], parts["decoder"])
    logits, _ = segment_with_boxes(backend, samples.slices, samples.boxes)
    masks = (logits > 0).numpy()
    dice = [binary_metrics(m, l)["dice"] for m, l in zip(masks, samples.labels)]
    pictures = [str(overlay(s.numpy(), out / "overlays" / f"box_prompt_{i}.png", prediction=m, label=l,
                            boxes=[b.tolist()]))
                for i, (s, m, l, b) in enumerate(zip(samples.slices, masks, samples.labels, samples.boxes))]
    summary = {"sample": samples.source, "provider": backend.describe()["encoder"]["provider"],
               "slice_dice_sam": float(np.mean(dice)), "slice_dice_box_as_mask": box_as_mask_dice(samples.boxes, samples.labels),
               "overlays": pictures}
    log(f"LiteMedSAM from label boxes: slice Dice {summary['slice_dice_sam']:.3f} "
        f"(the box itself as a mask: {summary['slice_dice_box_as_mask']:.3f}) on {summary['provider']}")
    return summary, parts


def run_demo(out: str | Path = "runs/demo", data: str | Path | None = None, labeled: int = 2, val: int = 2,
             unlabelled: int = 4, iterations: int = 150, adapt_steps: int = 40, log=print) -> dict:
    from .train import build_trainer, preset

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(data) if data else phantom_dir()
    if data is None:
        log(f"data: the built-in SYNTHETIC phantom at {root} (real LA data may not be redistributed; "
            "--data PATH for yours)")
    report: dict = {"data": str(root)}
    report["box_prompts"], parts = run_export_and_segment(out, data, log)

    dataset = open_dataset(root)
    split = split_cases(dataset.case_ids, labeled, val)
    unlabelled_ids = split.unlabeled[:unlabelled]
    encoder = OnnxBackend(encoder=parts["encoder"])
    log(f"embedding {len(split.labeled)} labelled and {len(unlabelled_ids)} unlabelled cases (every 2nd slice) "
        "with onnxruntime")
    summary = build_cache(dataset, encoder, out / "cache", case_ids=split.labeled + unlabelled_ids, batch=8, every=2)
    log(f"  {summary.line()}")
    decoder = OnnxBackend(decoder=parts["decoder"])
    cache = EmbeddingCache(out / "cache")
    if dataset.has_labels:
        ceiling = pseudo_label(dataset, cache, decoder, out / "pseudo_labels", unlabelled_ids, progress=False)
        report["sam_from_label_boxes_dice"] = ceiling.summary["dice"]
        log(f"SAM from label boxes on the unlabelled cases (quality ceiling, report only): 3D Dice "
            f"{ceiling.summary['dice'][0]:.3f} ± {ceiling.summary['dice'][1]:.3f}")

    log(f"adapting SAM's mask decoder on the {len(split.labeled)} labelled cases' cached slices")
    adapted = adapt(dataset, cache, split.labeled, out / "adapted", options=AdaptOptions(steps=adapt_steps),
                    holdout=False, progress=False)
    report["adapt"] = {k: adapted[k] for k in ("slices", "loss_first_last", "checkpoint")}
    results = {}
    for method in ("sup", "semisam"):
        # semisam: SAM prompted by the finished sup run's network, whose errors owe nothing to SAM's targets
        prompt_run = str(out / "run_sup") if method == "semisam" else None
        config = replace(preset("la-cpu", method=method, iterations=iterations, unlabelled_cases=unlabelled,
                                unlabelled_every=2, sam_prompt_run=prompt_run, sam_recipe="adapted"),
                         val_every=iterations, save_every=iterations)
        log(f"training {method} for {iterations} iterations")
        trainer = build_trainer(config, root, None, labeled, val, out / f"run_{method}", cache=out / "cache",
                                checkpoint=adapted["checkpoint"])  # semisam: the adapted decoder, in torch
        trainer.run()
        rows = evaluate_cases(trainer.student, trainer.checkpoint_config(), dataset, split.val, progress=False)
        results[method] = write_results(rows, out / f"run_{method}" / "eval.json")
    report["validation"] = {m: {k: list(v) for k, v in s.items()} for m, s in results.items()}
    lines = ["method    Dice            Jaccard         95HD (vox)      ASD (vox)"]
    for method, summary in results.items():
        lines.append(f"{method:9s} " + "  ".join(f"{summary[k][0]:.3f} ± {summary[k][1]:.3f}"
                                                 for k in ("dice", "jaccard", "hd95", "asd")))
    table = "\n".join(lines)
    report["table"] = table
    write_report(out / "report.json", report)
    log(f"validation cases {split.val}:\n{table}")
    log(f"report: {out / 'report.json'}; overlays: {out / 'overlays'}; TensorBoard: {out}/run_*/tensorboard")
    return report
