"""2D geometric augmentation that records what it did, so SAM's prompts and masks can follow it.

A 2D sample lives in a `size`×`size` slice canvas; augmentation takes a crop of side `crop` at (y0, x0), then an
optional left-right flip, then `k` quarter turns. `apply` does this to any (..., size, size) map; `invert` takes a
crop-frame map back into the canvas (zeros outside the crop). SAM never sees augmented images: the student's
prediction is inverted into the canvas, prompted there, and SAM's mask is pushed through `apply`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Transform2D:
    y0: int
    x0: int
    crop: int
    flip: bool
    k: int  # quarter turns, torch.rot90 over the last two dims

    def apply(self, canvas: torch.Tensor) -> torch.Tensor:
        out = canvas[..., self.y0:self.y0 + self.crop, self.x0:self.x0 + self.crop]
        if self.flip:
            out = out.flip(-1)
        return torch.rot90(out, self.k, dims=(-2, -1)) if self.k else out

    def invert(self, cropped: torch.Tensor, size: int) -> torch.Tensor:
        out = torch.rot90(cropped, -self.k, dims=(-2, -1)) if self.k else cropped
        if self.flip:
            out = out.flip(-1)
        canvas = cropped.new_zeros(*cropped.shape[:-2], size, size)
        canvas[..., self.y0:self.y0 + self.crop, self.x0:self.x0 + self.crop] = out
        return canvas


def random_transform(size: int, crop: int, generator: torch.Generator, flip: bool = True,
                    rotate: bool = True) -> Transform2D:
    """Draws from `generator` only, so a resumed run replays the same augmentations."""
    y0, x0 = (int(v) for v in torch.randint(0, size - crop + 1, (2,), generator=generator))
    do_flip = bool(torch.randint(0, 2, (1,), generator=generator)) if flip else False
    k = int(torch.randint(0, 4, (1,), generator=generator)) if rotate else 0
    return Transform2D(y0, x0, crop, do_flip, k)
