"""Segment slices with box prompts through any backend: preprocess -> encode -> decode -> back to slice size."""
from __future__ import annotations

import torch

from .backends import Backend
from .models import Frame, get_spec, masks_to_original, preprocess
from .models.preprocess import boxes_to_input
from .prompts import box_prompts


def segment_with_boxes(backend: Backend, slices: torch.Tensor, boxes: torch.Tensor,
                       batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """slices (N,H,W), one box (x0,y0,x1,y1) per slice -> (logits (N,H,W) at slice size, IoU predictions (N,))."""
    spec = get_spec(backend.model)
    frame = Frame(slices.shape[1], slices.shape[2], spec.image_size)
    logits, scores = [], []
    for start in range(0, len(slices), batch):
        images = preprocess(slices[start:start + batch], spec.image_size, spec.normalization)
        embeddings = backend.encode(images)
        coords, labels = box_prompts(boxes_to_input(boxes[start:start + batch], frame)[:, None])
        low_res, iou = backend.decode(embeddings, coords, labels)
        logits.append(masks_to_original(low_res[:, 0, 0].cpu(), frame))
        scores.append(iou[:, 0, 0].cpu())
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
