"""Binary segmentation metrics (Dice, Jaccard, precision, recall, HD95, ASD) with medpy semantics, plus summaries.
Precision and recall say which way a prediction errs (Dice is their harmonic mean): over-segmenting lowers precision.

Conventions for empty masks (medpy raises on them, or returns 0 for precision and recall):
  * pred and gt both empty -> dice, jaccard, precision, recall 1, hd95 0, asd 0 (a perfect "nothing there" answer);
  * exactly one empty      -> dice, jaccard, precision, recall 0, hd95 nan, asd nan (a distance to nothing is
    undefined).
A mean over the defined distances alone would make a student that misses a structure look better, so every row also
has `hd95_diag` / `asd_diag`: the same distance, with an undefined one scored as the volume's diagonal (the largest
distance inside it, as several challenges do), and `undefined_counts` says how many rows each mean left out.
Distances are in voxel units when spacing is None, else in the units of spacing (one value per axis).
`asd` is medpy's one-sided average surface distance from pred's surface to gt's surface, as in UA-MT/SemiSAM.
The values are exactly medpy's (`dc`, `jc`, `hd95`, `asd` on the whole volume; tests/test_metrics.py compares them)
at a fraction of the cost: both masks are cropped to their union's bounding box (`union_box`), and each direction's
surface distances are computed once, where medpy's `hd95` and `asd` compute pred's direction twice.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from .errors import UserError

__all__ = ["METRIC_KEYS", "binary_metrics", "class_metrics", "surface", "union_box", "summarize", "undefined_counts",
           "format_table"]

METRIC_KEYS = ("dice", "jaccard", "precision", "recall", "hd95", "asd", "hd95_diag", "asd_diag")


def check_spacing(spacing: Sequence[float], source: str) -> tuple[float, ...]:
    """Voxel sizes must be finite and positive: a zero spacing makes every distance 0 (a perfect HD95 for any
    prediction) and nan or inf make them meaningless, so they are refused wherever they come from."""
    values = tuple(float(s) for s in spacing)
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise UserError(f"{source} gives spacing {values}: voxel sizes must be finite and positive; fix it or give "
                        "--spacing x,y,z")
    return values


def binary_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None,
                   distances: bool = True) -> dict[str, float]:
    """Dice, Jaccard, precision, recall, HD95 and ASD of a binary prediction against a binary ground truth (any
    non-zero is foreground). `distances=False`: the overlaps only (they cost milliseconds, the distances a distance
    transform)."""
    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in shape")
    if spacing is not None and len(spacing) != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} entries for a {pred.ndim}-D mask")
    if not distances:
        return _overlaps(pred, gt)
    p_any, g_any = bool(pred.any()), bool(gt.any())
    if not p_any and not g_any:
        return {**_overlaps(pred, gt), "hd95": 0.0, "asd": 0.0, "hd95_diag": 0.0, "asd_diag": 0.0}
    if not p_any or not g_any:
        diagonal = volume_diagonal(pred.shape, spacing)
        return {**_overlaps(pred, gt), "hd95": math.nan, "asd": math.nan, "hd95_diag": diagonal,
                "asd_diag": diagonal}
    box = union_box(pred, gt)
    pred, gt = pred[box], gt[box]
    pred_surface, gt_surface = surface(pred), surface(gt)
    # the distance from each surface voxel of one mask to the nearest surface voxel of the other
    pred_to_gt = ndimage.distance_transform_edt(~gt_surface, sampling=spacing)[pred_surface]
    gt_to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[gt_surface]
    hd95 = float(np.percentile(np.hstack((pred_to_gt, gt_to_pred)), 95))
    asd = float(pred_to_gt.mean())
    return {**_overlaps(pred, gt), "hd95": hd95, "asd": asd, "hd95_diag": hd95, "asd_diag": asd}


def class_metrics(pred: np.ndarray, gt: np.ndarray, classes: Sequence[int] = (1,),
                  spacing: Sequence[float] | None = None, distances: bool = True,
                  ignore: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of a label-valued prediction against a label-valued ground truth. One class (a binary data set):
    exactly `binary_metrics` (any non-zero is foreground). Several: each class's metrics as `<metric>_<value>`
    (class value v against v) and their mean as `<metric>`, as nnU-Net and MONAI report them (a class that is
    undefined in a case, e.g. a distance to an empty mask, is left out of that case's mean). `ignore`: a bool mask
    of voxels that count for neither (nnU-Net's ignore label)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if ignore is not None and ignore.any():
        pred, gt = np.where(ignore, 0, pred), np.where(ignore, 0, gt)
    classes = [int(c) for c in classes]
    if len(classes) == 1:
        return binary_metrics(pred if classes[0] == 1 else pred == classes[0],
                              gt if classes[0] == 1 else gt == classes[0], spacing, distances)
    per = {c: binary_metrics(pred == c, gt == c, spacing, distances) for c in classes}
    out: dict[str, float] = {}
    for key in per[classes[0]]:
        values = np.array([per[c][key] for c in classes], dtype=float)
        out[key] = float(np.nanmean(values)) if not np.isnan(values).all() else math.nan
    for c in classes:
        out.update({f"{key}_{c}": value for key, value in per[c].items()})
    return out


def _overlaps(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    overlap, predicted, actual = int(np.logical_and(pred, gt).sum()), int(pred.sum()), int(gt.sum())
    union = predicted + actual - overlap
    both_empty = float(union == 0)  # the conventions above: 1 when both are empty, else 0 where undefined
    return {"dice": 2 * overlap / (predicted + actual) if union else 1.0, "jaccard": overlap / union if union else 1.0,
            "precision": overlap / predicted if predicted else both_empty,
            "recall": overlap / actual if actual else both_empty}


def surface(mask: np.ndarray) -> np.ndarray:
    """A bool mask's surface voxels, medpy's definition: the foreground voxels that a one-voxel erosion with the
    face-connected structure removes."""
    return mask ^ ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def union_box(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of two bool masks' union (at least one of them non-empty), as slices.

    Why the metrics are exact on it: outside the box both masks are background, so the overlaps are unchanged, and
    the erosion that finds each surface (it treats beyond the array as background) finds the same surface voxels.
    Every surface voxel lies inside, and a distance transform measures the same Euclidean distance to the nearest
    one whatever array surrounds them.
    """
    return ndimage.find_objects((pred | gt).view(np.uint8))[0]


def volume_diagonal(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """The largest distance between two voxels of a volume, in the units of `spacing` (voxels when None)."""
    steps = spacing if spacing is not None else (1.0,) * len(shape)
    return float(math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, steps))))


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def summarize(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """Mean and population SD (np.std, ddof=0) of every numeric key over rows, ignoring nan.

    ddof=0 because the cases are the whole evaluated set, not a sample, matching the published
    SemiSAM/UA-MT tables. A key whose values are all nan gives (nan, nan).
    """
    keys: list[str] = []
    for row in rows:
        keys += [k for k, v in row.items() if _is_number(v) and k not in keys]
    out: dict[str, tuple[float, float]] = {}
    for k in keys:
        vals = np.array([float(r[k]) for r in rows if k in r and _is_number(r[k])], dtype=float)
        vals = vals[~np.isnan(vals)]
        out[k] = (float(vals.mean()), float(vals.std(ddof=0))) if vals.size else (math.nan, math.nan)
    return out


def undefined_counts(rows: list[dict]) -> dict[str, int]:
    """How many rows have an undefined (nan) value, per numeric key: the rows each mean of `summarize` leaves out."""
    keys = summarize(rows)
    return {k: sum(1 for r in rows if _is_number(r.get(k)) and math.isnan(float(r[k]))) for k in keys}


def format_table(rows: list[dict], summary: dict[str, tuple[float, float]]) -> str:
    """Plain-text table: one line per row (non-numeric fields such as a case id first), then mean ± sd, then, when
    any value is undefined, how many rows each mean left out."""
    metric_cols = list(summary)
    label_cols: list[str] = []
    for row in rows:
        label_cols += [k for k, v in row.items() if not _is_number(v) and k not in label_cols]

    def fmt(v: object) -> str:
        return f"{float(v):.4f}" if _is_number(v) else str(v)

    if not label_cols:
        # no case id given: number the rows so the table stays readable
        rows = [{"#": str(i), **r} for i, r in enumerate(rows)]
        label_cols = ["#"]
    header = label_cols + metric_cols
    body = [[str(r.get(k, "")) for k in label_cols] + [fmt(r[k]) if k in r else "" for k in metric_cols] for r in rows]
    foot = ["mean ± sd"] + [""] * (len(label_cols) - 1) + [f"{m:.4f} ± {s:.4f}" for m, s in summary.values()]
    undefined = undefined_counts(rows)
    feet = [foot]
    if any(undefined.get(k, 0) for k in metric_cols):
        feet.append(["left out (undefined)"] + [""] * (len(label_cols) - 1)
                    + [f"{undefined.get(k, 0)} of {len(rows)}" for k in metric_cols])
    table = [header] + body + feet
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - len(feet), "-" * len(lines[0]))
    return "\n".join(lines)
