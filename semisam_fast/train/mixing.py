"""Copy-paste between labelled and unlabelled samples (BCP, Bai et al. 2023; CutMix): a rectangle of one sample is
pasted into the other, and the pair's target is pasted the same way - the label on the labelled part, SAM's stored
target on the unlabelled part. The student then learns the unlabelled targets next to real labels, in both
directions, instead of on unlabelled images alone."""
from __future__ import annotations

import torch
from torch import Tensor

MIX_SIDE = 2 / 3  # the rectangle's side, relative to the crop's (BCP's choice)


def random_boxes(shape: tuple[int, int, int], generator: torch.Generator, side: float = MIX_SIDE) -> Tensor:
    """(B, H, W) bool: per sample a rectangle with sides `side` of the crop's, at a random position."""
    n, h, w = shape
    bh, bw = max(1, round(h * side)), max(1, round(w * side))
    y0 = torch.randint(0, h - bh + 1, (n, 1, 1), generator=generator)
    x0 = torch.randint(0, w - bw + 1, (n, 1, 1), generator=generator)
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    return (rows >= y0) & (rows < y0 + bh) & (cols >= x0) & (cols < x0 + bw)


def copy_paste(images_u: Tensor, targets_u: Tensor, valid_u: Tensor, images_l: Tensor, labels_l: Tensor,
               box: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Both directions of the paste for n pairs: the unlabelled sample's box into the labelled one, and the labelled
    sample's box into the unlabelled one. images (n, 1, H, W); targets_u and labels_l (n, H, W) in {0, 1}; valid_u
    (n,) whether the unlabelled sample has a target; box (n, H, W) bool. Returns the 2n mixed images,
    their targets and the pixel weights (0 where the unlabelled part has no target)."""
    labels_l, targets_u = labels_l.to(images_l.dtype), targets_u.to(images_l.dtype)
    has_target = valid_u.to(torch.bool).view(-1, 1, 1)
    images = torch.cat([torch.where(box[:, None], images_u, images_l), torch.where(box[:, None], images_l, images_u)])
    targets = torch.cat([torch.where(box, targets_u, labels_l), torch.where(box, labels_l, targets_u)])
    weights = torch.cat([~box | has_target, box | has_target]).to(images_l.dtype)
    return images, targets, weights
