"""Evaluate a trained student on labelled cases: checkpoint loading, per-case metrics, JSON + CSV results."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from torch import nn
from tqdm import tqdm

from .checkpoints import find_checkpoint, read_checkpoint
from .data import Dataset, open_dataset
from .errors import UserError
from .fsutil import atomic_write, write_json
from .inference import predict_case
from .metrics import binary_metrics, summarize, undefined_counts
from .nets import build_student

__all__ = ["load_student", "evaluate_cases", "write_results", "evaluate_run", "largest_component"]

_GEOMETRY_KEY = {"unet2d": "in_plane", "vnet": "patch"}
# prefixes that torch.compile / DataParallel put in front of every parameter name
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def _strip_prefixes(state: dict) -> dict:
    for prefix in _WRAPPER_PREFIXES:
        if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_student(checkpoint: str | Path, weights: str = "student", device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the student (or, with weights="teacher", its EMA teacher) from a training checkpoint.

    Returns the network on `device` in eval mode and the checkpoint's config. Any problem raises UserError."""
    path = Path(checkpoint)
    if weights not in ("student", "teacher"):
        raise UserError(f"weights must be 'student' or 'teacher', not {weights!r}")
    ckpt = read_checkpoint(path, device)
    missing = [k for k in ("config", weights) if k not in ckpt]
    if missing:
        raise UserError(f"checkpoint {path} lacks {', '.join(repr(k) for k in missing)}")
    config = ckpt["config"]
    if not isinstance(config, dict) or "student" not in config:
        raise UserError(f"checkpoint {path}: 'config' must be a dict naming the 'student' network")
    state = ckpt[weights]
    if state is None:
        raise UserError(f"checkpoint {path} holds no {weights} weights (trained without an EMA teacher?)")
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path}: {weights!r} is not a state_dict")
    geometry = _GEOMETRY_KEY.get(str(config["student"]).lower())
    if geometry is not None and geometry not in config:
        raise UserError(f"checkpoint {path}: config of a {config['student']} student lacks {geometry!r}")
    kwargs = config.get("student_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise UserError(f"checkpoint {path}: 'student_kwargs' must be a dict, got {type(kwargs).__name__}")
    try:
        net = build_student(str(config["student"]), **kwargs)
    except TypeError as exc:
        raise UserError(f"checkpoint {path}: bad student_kwargs {kwargs}: {exc}") from exc
    try:
        net.load_state_dict(_strip_prefixes(state))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise UserError(f"checkpoint {path}: {weights} weights do not fit a {config['student']} with {kwargs}: "
                        f"{' '.join(first[:3])}") from exc
    return net.to(device).eval(), config


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a binary mask (full connectivity, as UA-MT's getLargestCC)."""
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def evaluate_cases(net: nn.Module, config: dict, dataset: Dataset, case_ids: Sequence[str],
                   spacing: Sequence[float] | None = None, threshold: float = 0.5, device: str = "cpu",
                   progress: bool = True, keep_largest: bool = False) -> list[dict]:
    """One row per case {"case", "spacing", "dice", "jaccard", "hd95", "asd", "hd95_diag", "asd_diag"} (see
    metrics.py for undefined distances): prediction = probability > threshold, optionally reduced to its largest
    connected component. Distances use `spacing` when given, else the case's own (a NIfTI header's, in mm), else
    voxels; the row's "spacing" says which ("voxel" for voxel units)."""
    if not 0.0 <= float(threshold) < 1.0:
        raise UserError(f"threshold must be in [0, 1), got {threshold}")
    if not case_ids:
        raise UserError("no cases to evaluate")
    rows: list[dict] = []
    for case_id in tqdm(list(case_ids), desc="evaluate", unit="case", disable=not progress, dynamic_ncols=True):
        case = dataset.load_labelled(case_id)
        pred = predict_case(net, case.image, config, device=device) > threshold
        if keep_largest:
            pred = largest_component(pred)
        used = tuple(spacing) if spacing is not None else case.spacing
        where = ",".join(f"{s:g}" for s in used) if used is not None else "voxel"
        rows.append({"case": case_id, "spacing": where, **binary_metrics(pred, case.label, used)})
    return rows


def write_results(rows: list[dict], out: str | Path, meta: dict | None = None) -> dict[str, tuple[float, float]]:
    """Write `out` (JSON {"cases": rows, "summary": {metric: {"mean", "sd"}}, **meta}) and `out` with suffix .csv
    (one line per case), both atomically. Returns `metrics.summarize(rows)` ({metric: (mean, sd)}),
    the form `metrics.format_table` takes."""
    out = Path(out)
    summary = summarize(rows)
    undefined = undefined_counts(rows)
    doc = {"cases": rows, **(meta or {}),
           "summary": {k: {"mean": m, "sd": s, "cases": len(rows), "undefined": undefined[k]}
                       for k, (m, s) in summary.items()}}
    write_json(out, doc)

    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = out.with_suffix(".csv")
    atomic_write(csv_path, lambda tmp: tmp.write_text(buf.getvalue(), encoding="utf-8"))
    return summary


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
                 progress: bool = True) -> tuple[list[dict], dict[str, tuple[float, float]]]:
    """Evaluate a training run's newest checkpoint on its validation cases (or `cases`) and write
    `<run>/eval.json` + `eval.csv` (or `out`). `data` / `list_file` override the ones recorded in run.json."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    run_json = run_dir / "run.json"
    if not run_json.is_file():
        raise UserError(f"{run_dir} is not a training run (no run.json)")
    try:
        run = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {run_json}: {exc}") from exc
    if not isinstance(run, dict):
        raise UserError(f"{run_json} does not hold a JSON object")

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
    rows = evaluate_cases(net, config, dataset, cases, spacing=spacing, threshold=threshold, device=device,
                          progress=progress, keep_largest=keep_largest)
    meta = {"checkpoint": str(checkpoint), "weights": weights, "threshold": threshold, "keep_largest": keep_largest,
            "spacing": list(spacing) if spacing is not None else "per case (header, else voxel)", "data": str(data)}
    summary = write_results(rows, Path(out) if out is not None else run_dir / "eval.json", meta=meta)
    return rows, summary
