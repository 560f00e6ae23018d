"""Segment slices with box prompts through any backend: preprocess -> encode -> decode -> back to slice size."""
from __future__ import annotations

import torch

from .backends import Backend
from .models import get_spec, preprocess
from .prompter import SamPrompter


def segment_with_boxes(backend: Backend, slices: torch.Tensor, boxes: torch.Tensor,
                       batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """slices (N,H,W), one box (x0,y0,x1,y1) per slice, taken as given (no margin) -> (logits (N,H,W) at slice
    size, IoU predictions (N,)), on the CPU."""
    spec = get_spec(backend.model)
    prompter = SamPrompter.of(backend, margin=0.0)
    frame = prompter.frame(slices.shape[1], slices.shape[2])
    logits, scores = [], []
    for start in range(0, len(slices), batch):
        images = preprocess(slices[start:start + batch], spec.image_size, spec.normalization)
        embeddings = backend.encode(images)
        prompts = prompter.box_prompts(boxes[start:start + batch], frame)
        masks, iou = prompter.decode(embeddings, prompts, frame, device="cpu")
        logits.append(masks)
        scores.append(iou.cpu())
    return torch.cat(logits), torch.cat(scores)


def box_as_mask_dice(boxes: torch.Tensor, labels) -> float:
    """The baseline SAM must beat: each box (x0, y0, x1, y1) filled in as the mask, mean 2D Dice vs the labels."""
    import numpy as np

    from .metrics import binary_metrics

    scores = []
    for box, label in zip(boxes.numpy().astype(int), labels):
        mask = np.zeros_like(label)
        mask[box[1]:box[3] + 1, box[0]:box[2] + 1] = 1
        scores.append(binary_metrics(mask, label)["dice"])
    return float(np.mean(scores))
