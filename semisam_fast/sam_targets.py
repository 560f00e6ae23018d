"""SAM targets for an unlabelled volume, prompted from a teacher's prediction and gated: the pseudo-label rounds of
training, `pseudo-label --prompt teacher` and the offline target-quality bench all call `case_targets`.

teacher probability (H, W, Z) -> mask (> threshold; optionally its largest 3D connected component) -> per cached
slice the box of that mask (+ margin in SAM-input pixels) -> SAM's decoder on the cached embeddings, in large
batches -> gates: SAM's own IoU prediction, and SAM's agreement (IoU) with the teacher's mask -> a target per slice.
Cached slices outside the z-range of the teacher's mask get an EMPTY target (negatives): without them nothing ever
tells the student that a slice holds no atrium, and a spurious blob, boxed, is filled by SAM and reinforced.

No label is read here: the teacher's prediction is the only source of prompts. SAM's frame (boxes, margin, masks back
at slice size) is `prompter.SamPrompter`'s, which also serves `pseudo-label`'s label- and mask-made prompts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .backends import Backend
from .cache import EmbeddingCache
from .prompts import masks_to_boxes
from .prompter import SamPrompter
from .target_options import FUSIONS, TargetOptions


@dataclass
class CaseTargets:
    """Per cached slice s of one case (arrays are (H, W, S) or (S,))."""

    case_id: str
    slices: list[int]
    teacher: np.ndarray  # bool, the teacher's mask that prompts came from
    sam: np.ndarray  # bool, SAM's mask (fused with the teacher's per `TargetOptions.fusion`) where prompted
    prompted: np.ndarray  # bool, slice got a prompt
    iou_pred: np.ndarray  # SAM's predicted IoU (nan where not prompted)
    agreement: np.ndarray  # IoU(SAM, teacher) on the slice (nan where not prompted)
    kept: np.ndarray  # bool, prompted and passed both gates
    negative: np.ndarray  # bool, outside the teacher's z-range (empty target)

    @property
    def valid(self) -> np.ndarray:
        """Slices that carry a target: a kept SAM mask, or a negative."""
        return self.kept | self.negative

    def target(self) -> np.ndarray:
        """(H, W, S) uint8: SAM's mask on kept slices, zeros elsewhere (use with `valid`)."""
        return (self.sam & self.kept[None, None, :]).astype(np.uint8)


def teacher_mask(prob: np.ndarray, options: TargetOptions) -> np.ndarray:
    from .inference import largest_component

    mask = prob > options.threshold
    return largest_component(mask) if options.largest_3d else mask


def on_cached_slices(prob: np.ndarray, slices: list[int]) -> np.ndarray:
    """A teacher probability given on the cached slices (H, W, S) as it is, or on the whole volume (H, W, Z) cut
    down to them."""
    if prob.ndim != 3:
        raise ValueError(f"expected an (H, W, Z) probability, got shape {prob.shape}")
    if prob.shape[2] == len(slices):
        return prob
    if prob.shape[2] > max(slices, default=-1):
        return prob[:, :, slices]
    raise ValueError(f"probability has {prob.shape[2]} slices: neither the {len(slices)} cached slices nor a "
                     f"volume holding slice {max(slices)}")


@dataclass
class DecodedCase:
    """SAM decoded once from a teacher's boxes on one case's cached slices; the gates and the fusion are applied to
    it afterwards (`gate_case`), so variants that differ only there share one decode."""

    case_id: str
    slices: list[int]
    prob: np.ndarray  # the teacher's probability on the cached slices (H, W, S)
    teacher: np.ndarray  # bool, the teacher's mask that prompts came from
    sam_logits: np.ndarray  # SAM's mask logits where prompted (zeros elsewhere), float32 (H, W, S)
    iou_pred: np.ndarray  # SAM's predicted IoU (nan where not prompted)
    in_box: np.ndarray  # bool (H, W, S): inside the slice's prompt box (margin included)

    @property
    def prompted(self) -> np.ndarray:
        return self.teacher.any(axis=(0, 1))


def decode_case(case_id: str, prob: np.ndarray, cache: EmbeddingCache, backend: Backend,
                options: TargetOptions = TargetOptions(), batch: int = 64) -> DecodedCase:
    """SAM prompted with the box of the teacher's mask on every cached slice the mask reaches (`options`: its
    threshold, largest component and margin)."""
    prompter = SamPrompter.of(backend, options.margin)
    slices = cache.slices(case_id)
    prob = on_cached_slices(prob, slices)
    frame = prompter.frame(prob.shape[0], prob.shape[1])
    teacher = teacher_mask(prob, options)
    sam_logits = np.zeros(teacher.shape, dtype=np.float32)
    iou_pred = np.full(len(slices), np.nan, dtype=np.float32)
    in_box = np.zeros(teacher.shape, dtype=bool)
    prompted = np.flatnonzero(teacher.any(axis=(0, 1)))
    for start in range(0, len(prompted), batch):
        rows = prompted[start:start + batch]
        boxes = masks_to_boxes(torch.from_numpy(teacher[:, :, rows].transpose(2, 0, 1)))[0]
        for r, (x0, y0, x1, y1) in zip(rows, prompter.box_on_slice(boxes, frame).round().int().tolist()):
            in_box[y0:y1 + 1, x0:x1 + 1, r] = True
        embeddings = cache.gather([(case_id, slices[r]) for r in rows], backend.device)
        logits, iou = prompter.decode(embeddings, prompter.box_prompts(boxes, frame), frame)
        sam_logits[:, :, rows] = logits.cpu().numpy().transpose(1, 2, 0)
        iou_pred[rows] = iou.cpu().numpy()
    return DecodedCase(case_id, list(slices), prob, teacher, sam_logits, iou_pred, in_box)


def gate_case(decoded: DecodedCase, options: TargetOptions = TargetOptions()) -> CaseTargets:
    """The fusion with the teacher, the gates and the negatives, on a decoded case."""
    teacher, has_fg = decoded.teacher, decoded.prompted
    if options.fusion == "mean":
        from scipy.special import expit

        sam = (expit(decoded.sam_logits) + np.where(decoded.in_box, decoded.prob, 0.0)) / 2 > 0.5
    elif options.fusion == "sam":
        sam = decoded.sam_logits > 0
    elif options.fusion == "teacher":
        sam = teacher.copy()
    else:
        raise ValueError(f"unknown fusion {options.fusion!r}")
    sam &= has_fg[None, None, :]
    inter = np.logical_and(sam, teacher).sum(axis=(0, 1))
    union = np.logical_or(sam, teacher).sum(axis=(0, 1))
    agreement = np.where(has_fg, np.divide(inter, union, out=np.zeros(len(union)), where=union > 0), np.nan)
    agreement = agreement.astype(np.float32)
    kept = has_fg & (decoded.iou_pred >= options.min_iou_pred) & (agreement >= options.min_agreement)
    negative = np.zeros(len(decoded.slices), dtype=bool)
    if options.negatives and has_fg.any():
        zs = np.asarray(decoded.slices)
        negative = (zs < zs[has_fg].min()) | (zs > zs[has_fg].max())
    # a volume where the teacher sees nothing: no negatives either (an unconfident teacher is no evidence)
    return CaseTargets(decoded.case_id, list(decoded.slices), teacher, sam, has_fg, decoded.iou_pred, agreement,
                       kept, negative)


def case_targets(case_id: str, prob: np.ndarray, cache: EmbeddingCache, backend: Backend,
                 options: TargetOptions = TargetOptions(), batch: int = 64) -> CaseTargets:
    """SAM targets for the cached slices of one case from the teacher's foreground probability on those slices
    (H, W, S; what a round predicts) or on the whole volume (H, W, Z). The teacher's mask, and its largest 3D
    component, are formed over the stack of cached slices either way, so both give the same targets: a round need
    not predict slices SAM never sees (half of la-cpu's; bench/round_teacher.py measured what that changes)."""
    if options.fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {options.fusion!r}")
    return gate_case(decode_case(case_id, prob, cache, backend, options, batch), options)


def score_targets(targets: CaseTargets, label: np.ndarray) -> dict:
    """Offline quality of one case's targets against its label (labels read for scoring only, never in training):
    Dice of the teacher's mask and of the target over the slices that carry one, and how many slices carry one."""
    from .metrics import binary_metrics

    label = np.asarray(label)[:, :, targets.slices] > 0
    valid = targets.valid

    def dice(pred: np.ndarray, gt: np.ndarray) -> float:  # overlaps only: no distance transforms
        return binary_metrics(pred, gt, distances=False)["dice"]

    def on_valid(volume: np.ndarray) -> float:
        return dice(volume[:, :, valid], label[:, :, valid]) if valid.any() else float("nan")

    target = targets.target().astype(bool)
    kept_target, kept_label = target[:, :, targets.kept], label[:, :, targets.kept]
    # undefined (nan, left out of a table's mean) where no target pixel was kept, not metrics' 1-when-both-empty
    precision = (binary_metrics(kept_target, kept_label, distances=False)["precision"] if kept_target.any()
                 else float("nan"))
    # what the student is pulled towards over ALL cached slices: the target where there is one, the teacher's mask
    # elsewhere (where the teacher is all the student has); better than the teacher alone or SAM does not help
    composite = np.where(valid[None, None, :], target, targets.teacher)
    return {"case": targets.case_id,
            "teacher_dice": dice(targets.teacher, label),
            "composite_dice": dice(composite, label),
            "teacher_dice_on_valid": on_valid(targets.teacher),
            "target_dice_on_valid": on_valid(target),
            "target_precision": precision,
            "coverage": float(valid.mean()), "kept": int(targets.kept.sum()), "negative": int(targets.negative.sum()),
            "prompted": int(targets.prompted.sum()), "slices": len(targets.slices),
            "label_slices": int(label.any(axis=(0, 1)).sum()),
            "negatives_wrong": int((targets.negative & label.any(axis=(0, 1))).sum())}

