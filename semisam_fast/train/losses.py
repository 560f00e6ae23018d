"""Losses and schedules for supervised, UA-MT consistency and SAM-guided training (2D and 3D)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..distributed import global_sum

__all__ = [
    "dice_loss",
    "supervised_loss",
    "softmax_mse",
    "uncertainty_mask",
    "uamt_threshold",
    "sam_loss",
    "sigmoid_rampup",
]


def sigmoid_rampup(current: float, length: float) -> float:
    """Laine & Aila ramp exp(-5 (1 - t)^2), t = clip(current/length, 0, 1); 1.0 when length == 0."""
    if length == 0:
        return 1.0
    t = float(np.clip(current, 0.0, length)) / length
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def dice_loss(probs: Tensor, target_onehot: Tensor, eps: float = 1e-5, include_background: bool = False) -> Tensor:
    """1 - soft Dice, per class over the whole batch and all spatial dims, then averaged over classes. Under torchrun
    the batch is the global one (`global_sum`), so the loss does not depend on the number of processes.

    probs and target_onehot are (B, C, ...). By default class 0 (background) is left out; with a
    single channel that channel is used. include_background=True averages over all classes.
    """
    if probs.shape != target_onehot.shape:
        raise ValueError(f"shape mismatch: probs {tuple(probs.shape)} vs target {tuple(target_onehot.shape)}")
    target_onehot = target_onehot.to(probs.dtype)
    dims = [0] + list(range(2, probs.ndim))
    inter = global_sum((probs * target_onehot).sum(dims))
    denom = global_sum(probs.sum(dims) + target_onehot.sum(dims))
    dice = (2 * inter + eps) / (denom + eps)
    if not include_background and dice.numel() > 1:
        dice = dice[1:]
    return 1.0 - dice.mean()


def _as_label(target: Tensor, logits: Tensor) -> Tensor:
    # accept (B, 1, ...) label maps as well as (B, ...)
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    return target.long()


def supervised_loss(logits: Tensor, target_long: Tensor) -> Tensor:
    """0.5 * cross-entropy + 0.5 * foreground soft Dice; logits (B, C, ...), integer labels (B, ...)."""
    target = _as_label(target_long, logits)
    ce = F.cross_entropy(logits, target)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1)
    return 0.5 * ce + 0.5 * dice_loss(torch.softmax(logits, dim=1), onehot)


def softmax_mse(student_logits: Tensor, teacher_logits: Tensor, reduction: str = "mean") -> Tensor:
    """Squared difference of class softmaxes; the teacher is a target, so it is detached.

    reduction="none" returns the per-element map (B, C, ...) (UA-MT masks it per voxel); "mean" its mean.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"shape mismatch: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}")
    diff = (torch.softmax(student_logits, dim=1) - torch.softmax(teacher_logits.detach(), dim=1)) ** 2
    if reduction == "none":
        return diff
    if reduction == "mean":
        return diff.mean()
    raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")


def uamt_threshold(iteration: float, max_iterations: float) -> float:
    """UA-MT uncertainty threshold (0.75 + 0.25 * sigmoid_rampup(it, max_it)) * ln 2."""
    return (0.75 + 0.25 * sigmoid_rampup(iteration, max_iterations)) * math.log(2)


def uncertainty_mask(teacher_probs_samples: Tensor, threshold: float = math.log(2)) -> tuple[Tensor, Tensor]:
    """UA-MT certainty mask from T stochastic teacher passes of class probabilities (T, B, C, ...).

    Uncertainty is the predictive entropy -sum_c p log p of the mean probability, shape (B, 1, ...);
    mask is float (B, 1, ...) with 1 where uncertainty < threshold (see `uamt_threshold`).
    """
    mean = teacher_probs_samples.detach().mean(dim=0)
    uncertainty = -(mean * torch.log(mean + 1e-6)).sum(dim=1, keepdim=True)
    mask = (uncertainty < threshold).to(mean.dtype)
    return mask, uncertainty


def sam_loss(student_fg_prob: Tensor, sam_mask: Tensor, valid: Tensor, kind: str = "mse",
             weight: Tensor | None = None) -> Tensor:
    """Student foreground probability (B, ...) vs SAM binary mask (B, ...), over samples with valid[b] True.

    kind="mse": mean squared error; kind="dicece": 0.5 * BCE + 0.5 * (1 - soft Dice) over the valid samples.
    weight (B, ...) in {0, 1}, optional: only those pixels count (e.g. where SAM and the teacher agree).
    With no valid sample returns a zero that is still attached to the graph, so backward() works.
    Sums are over the global batch under torchrun (`global_sum`; every process takes the same branch).
    """
    if sam_mask.shape != student_fg_prob.shape:
        raise ValueError(f"shape mismatch: prob {tuple(student_fg_prob.shape)} vs SAM mask {tuple(sam_mask.shape)}")
    valid = valid.to(device=student_fg_prob.device, dtype=torch.bool).reshape(-1)
    if valid.numel() != student_fg_prob.shape[0]:
        raise ValueError(f"valid has {valid.numel()} entries for a batch of {student_fg_prob.shape[0]}")
    if kind not in ("mse", "dicece"):
        raise ValueError(f"kind must be 'mse' or 'dicece', got {kind!r}")
    p = student_fg_prob[valid]
    if float(global_sum(valid.sum().float())) == 0:
        # sum of an empty selection: exactly 0, keeps the grad graph, never NaN
        return p.sum()
    m = sam_mask[valid.to(sam_mask.device)].to(p)
    w = torch.ones_like(p) if weight is None else weight[valid.to(weight.device)].to(p)
    total = global_sum(w.sum()).clamp_min(1.0)
    if kind == "mse":
        return global_sum((w * (p - m) ** 2).sum()) / total
    # BCE on probabilities is autocast-unsafe; compute it in float32
    bce = F.binary_cross_entropy(p.float().clamp(1e-6, 1 - 1e-6), m.float(), reduction="none")
    bce = global_sum((w.float() * bce).sum()) / total
    dice = (2 * global_sum((w * p * m).sum()) + 1e-5) / (global_sum((w * p).sum() + (w * m).sum()) + 1e-5)
    return 0.5 * bce + 0.5 * (1 - dice)
