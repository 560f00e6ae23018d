"""Copy-paste between labelled and unlabelled samples (BCP, Bai et al. 2023; CutMix): a rectangle of one sample is
pasted into the other, and the pair's target is pasted the same way - the label on the labelled part, SAM's stored
target on the unlabelled part. The student then learns the unlabelled targets next to real labels, in both
directions, instead of on unlabelled images alone."""
from __future__ import annotations

import torch
from torch import Tensor

MIX_SIDE = 2 / 3  # the rectangle's side, relative to the crop's (BCP's choice)


def random_boxes(shape: tuple[int, ...], generator: torch.Generator, side: float = MIX_SIDE) -> Tensor:
    """(B, *spatial) bool: per sample a rectangle over the last two spatial axes (every slice of a 3D patch), its
    sides `side` of the crop's, at a random position."""
    n, h, w = shape[0], shape[-2], shape[-1]
    bh, bw = max(1, round(h * side)), max(1, round(w * side))
    y0 = torch.randint(0, h - bh + 1, (n,), generator=generator)
    x0 = torch.randint(0, w - bw + 1, (n,), generator=generator)
    rows, cols = torch.arange(h), torch.arange(w)
    in_rows = (rows[None] >= y0[:, None]) & (rows[None] < (y0 + bh)[:, None])  # (B, H)
    in_cols = (cols[None] >= x0[:, None]) & (cols[None] < (x0 + bw)[:, None])  # (B, W)
    box = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
    return box.view(n, *([1] * (len(shape) - 3)), h, w).expand(shape)


def copy_paste(images_u: Tensor, targets_u: Tensor, valid_u: Tensor, images_l: Tensor, labels_l: Tensor,
               box: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Both directions of the paste for n pairs: the unlabelled sample's box into the labelled one, and the labelled
    sample's box into the unlabelled one. images (n, 1, *spatial); targets_u and labels_l (n, *spatial) in {0, 1};
    valid_u (n,) whether the unlabelled sample has a target; box (n, *spatial) bool. Returns the 2n mixed images,
    their targets and the pixel weights (0 where the unlabelled part has no target)."""
    labels_l, targets_u = labels_l.to(images_l.dtype), targets_u.to(images_l.dtype)
    has_target = valid_u.to(torch.bool).view(-1, *([1] * (targets_u.dim() - 1))).expand_as(box)
    images = torch.cat([torch.where(box[:, None], images_u, images_l), torch.where(box[:, None], images_l, images_u)])
    targets = torch.cat([torch.where(box, targets_u, labels_l), torch.where(box, labels_l, targets_u)])
    weights = torch.cat([~box | has_target, box | has_target]).to(images_l.dtype)
    return images, targets, weights
