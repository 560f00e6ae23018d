"""Evaluate a trained student on labelled cases: per-case metrics of its predictions (the student is loaded by
`nets.load_student`, predictions made by `inference`, results written by `results.write_results`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn
from tqdm import tqdm

from .checkpoints import find_checkpoint, read_run_record
from .data import Dataset, open_dataset
from .errors import UserError
from .inference import label_values, predict_mask
from .metrics import check_spacing, class_metrics
from .nets import load_student
from .results import check_result_outputs, write_results

__all__ = ["evaluate_cases", "evaluate_run"]


def evaluate_cases(net: nn.Module, config: dict, dataset: Dataset, case_ids: Sequence[str],
                   spacing: Sequence[float] | None = None, threshold: float = 0.5, device: str = "cpu",
                   progress: bool = True, keep_largest: bool = False,
                   save_masks: str | Path | None = None) -> list[dict]:
    """One row per case {"case", "spacing", *metrics.METRIC_KEYS} (dice, jaccard, precision, recall, hd95, asd, ...; see
    metrics.py for undefined distances; a multi-class student: these are the means over classes, each class's as
    `dice_<value>`, ... beside them, `metrics.class_metrics`): prediction = probability > threshold (several classes:
    the most probable), optionally reduced to its largest connected component (`inference.predict_mask`).
    Distances use `spacing` when given, else the case's own (a NIfTI header's, in mm), else voxels; the row's
    "spacing" says which ("voxel" for voxel units). `save_masks`: each scored prediction is also written there, in
    the data's own format (`Dataset.write_mask`)."""
    if not 0.0 <= float(threshold) < 1.0:
        raise UserError(f"threshold must be in [0, 1), got {threshold}")
    if not case_ids:
        raise UserError("no cases to evaluate")
    rows: list[dict] = []
    classes = label_values(config)  # binary: (1,), the metrics as ever; else per class and their mean
    for case_id in tqdm(list(case_ids), desc="evaluate", unit="case", disable=not progress, dynamic_ncols=True):
        case = dataset.load_labelled(case_id)
        pred = predict_mask(net, case.image, config, threshold, keep_largest, device)
        if save_masks is not None:
            dataset.write_mask(case_id, pred, Path(save_masks))
        used = (check_spacing(spacing, "--spacing") if spacing is not None else
                check_spacing(case.spacing, f"case {case_id}'s header") if case.spacing is not None else None)
        where = ",".join(f"{s:g}" for s in used) if used is not None else "voxel"
        rows.append({"case": case_id, "spacing": where, **class_metrics(pred, case.label, classes, used)})
    return rows


def _run_path(value: str | Path, run_dir: Path) -> Path:
    # run.json may hold paths relative to where training was launched; fall back to the run folder
    p = Path(value)
    if p.is_absolute() or p.exists() or not (run_dir / p).exists():
        return p
    return run_dir / p


def evaluate_run(run_dir: str | Path, data: str | Path | None = None, list_file: str | Path | None = None,
                 cases: Sequence[str] | None = None, spacing: Sequence[float] | None = None,
                 out: str | Path | None = None, weights: str = "student", threshold: float = 0.5,
                 keep_largest: bool = False, device: str = "cpu",
                 progress: bool = True, save_masks: str | Path | None = None
                 ) -> tuple[list[dict], dict[str, tuple[float, float]]]:
    """Evaluate a training run's newest checkpoint on its validation cases (or `cases`) and write
    `<run>/eval.json` + `eval.csv` (or `out`). `data` / `list_file` override the ones recorded in run.json."""
    run_dir = Path(run_dir)
    run = read_run_record(run_dir)
    run_json = run_dir / "run.json"

    if data is None:
        if not run.get("data"):
            raise UserError(f"{run_json} records no data folder; pass one")
        data = _run_path(run["data"], run_dir)
    if list_file is None and run.get("list"):
        list_file = _run_path(run["list"], run_dir)
    if cases is None:
        cases = run.get("val_cases")
        if not cases:
            raise UserError(f"{run_json} records no validation cases; pass the cases to evaluate")
    cases = [str(c) for c in cases]

    checkpoint = find_checkpoint(run_dir)
    net, config = load_student(checkpoint, weights=weights, device=device)
    dataset = open_dataset(data, list_file)
    out = Path(out) if out is not None else run_dir / "eval.json"
    check_result_outputs(out, dataset, cases, checkpoint, run_json, list_file)
    rows = evaluate_cases(net, config, dataset, cases, spacing=spacing, threshold=threshold, device=device,
                          progress=progress, keep_largest=keep_largest, save_masks=save_masks)
    meta = {"checkpoint": str(checkpoint), "weights": weights, "threshold": threshold, "keep_largest": keep_largest,
            "spacing": list(spacing) if spacing is not None else "per case (header, else voxel)", "data": str(data)}
    summary = write_results(rows, out, meta=meta)
    return rows, summary
