"""Prompts from masks or probability maps, in SAM's convention.

Boxes are (x0, y0, x1, y1) = (column, row) corners in pixel coordinates of the 2D slice; numpy / torch masks are
indexed (row, column). Getting this the wrong way round is the classic SAM pipeline bug (docs/architecture.md:
Pitfalls).
"""
from __future__ import annotations

import numpy as np
import torch

BOX_LABELS = (2, 3)  # SAM's prompt-encoder labels for the top-left / bottom-right box corners


def mask_to_box(mask: np.ndarray, margin: float = 0.0) -> np.ndarray | None:
    """Bounding box (x0, y0, x1, y1) of a 2D mask's foreground, grown by `margin` px and clipped; None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return np.array([max(cols[0] - margin, 0), max(rows[0] - margin, 0),
                     min(cols[-1] + margin, w - 1), min(rows[-1] + margin, h - 1)], dtype=np.float32)


def masks_to_boxes(masks: torch.Tensor, margin: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched boxes of (N,H,W) boolean masks -> (boxes N×4 float (x0,y0,x1,y1), valid N bool).

    Vectorised (no Python loop over slices) because the training step calls it every iteration.
    """
    n, h, w = masks.shape
    masks = masks.bool()
    any_row, any_col = masks.any(dim=2), masks.any(dim=1)
    valid = any_row.any(dim=1)
    rows = torch.arange(h, device=masks.device).expand(n, h)
    cols = torch.arange(w, device=masks.device).expand(n, w)
    big = max(h, w) + 1
    y0 = torch.where(any_row, rows, big).min(dim=1).values
    y1 = torch.where(any_row, rows, -1).max(dim=1).values
    x0 = torch.where(any_col, cols, big).min(dim=1).values
    x1 = torch.where(any_col, cols, -1).max(dim=1).values
    boxes = torch.stack([(x0 - margin).clamp(min=0), (y0 - margin).clamp(min=0),
                         (x1 + margin).clamp(max=w - 1), (y1 + margin).clamp(max=h - 1)], dim=1).float()
    return torch.where(valid[:, None], boxes, torch.zeros_like(boxes)), valid


def box_prompts(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (B,N,4) -> point prompts coords (B,N,2,2), labels (B,N,2) with labels 2 and 3."""
    coords = boxes.reshape(*boxes.shape[:-1], 2, 2).float()
    labels = torch.tensor(BOX_LABELS, dtype=torch.int64).expand(*boxes.shape[:-1], 2).contiguous()
    return coords, labels


def point_prompts(points: torch.Tensor, point_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Points (B,N,P,2) with labels 1/0 -> SAM point prompts with the padding point (label -1) SamPredictor adds."""
    pad = torch.zeros(*points.shape[:-2], 1, 2, dtype=points.dtype)
    pad_label = -torch.ones(*point_labels.shape[:-1], 1, dtype=torch.int64)
    return torch.cat([points.float(), pad.float()], dim=-2), torch.cat([point_labels.long(), pad_label], dim=-1)


def mask_to_points(prob: torch.Tensor, n_positive: int = 1, n_negative: int = 1,
                   threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points for point-trained SAM from (N,H,W) probabilities: the most confident foreground pixels as positives
    and the most confident background pixels inside the foreground's box as negatives. Ties (every pixel of a
    binary mask) go to the pixel farthest from the foreground's edge, as SAM's own click simulation does: a
    positive on the rim of a structure is a poor prompt.

    Returns points (N, P, 2) as (x, y), labels (N, P: 1 positive, 0 negative, -1 none found) and valid (N,),
    P = n_positive + n_negative.
    """
    from scipy import ndimage

    n, h, w = prob.shape
    fg = prob > threshold
    boxes, valid = masks_to_boxes(fg)
    depth = torch.from_numpy(np.stack([ndimage.distance_transform_edt(m) for m in fg.cpu().numpy()]))
    depth = (depth / (depth.amax(dim=(1, 2), keepdim=True) + 1.0)).to(prob)  # in [0, 1): breaks ties only
    flat = (prob + 1e-3 * depth).reshape(n, -1)
    positives = flat.topk(n_positive, dim=1).indices
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    inside = ((cols >= boxes[:, 0, None, None]) & (cols <= boxes[:, 2, None, None])
              & (rows >= boxes[:, 1, None, None]) & (rows <= boxes[:, 3, None, None]))
    background_score = torch.where(inside & ~fg, 1 - prob, torch.full_like(prob, -1.0)).reshape(n, -1)
    best = background_score.topk(n_negative, dim=1)
    index = torch.cat([positives, best.indices], dim=1)
    points = torch.stack([index % w, index // w], dim=-1).float()
    # no background inside the box (a box-shaped mask): that negative becomes SAM's "not a point" (label -1)
    negative_labels = torch.where(best.values >= 0, 0, -1)
    labels = torch.cat([torch.ones(n, n_positive, dtype=torch.long), negative_labels.long()], dim=1)
    return points, labels, valid
