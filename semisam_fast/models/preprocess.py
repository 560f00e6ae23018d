"""Per-model image preprocessing, batched in torch: normalise, resize the longest side, pad bottom/right.

Coordinates follow segment-anything: prompts are (x, y) = (column, row) in the resized frame; numpy slices are
(row, column). `Frame` carries what is needed to map prompts in and masks back out (`prompter.SamPrompter`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError

# segment-anything's ImageNet statistics, applied to a 0-255 image.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Frame:
    """Geometry of one original slice inside the model's square input."""

    height: int
    width: int
    image_size: int

    @property
    def scale(self) -> float:
        return self.image_size / max(self.height, self.width)

    @property
    def resized(self) -> tuple[int, int]:
        return int(round(self.height * self.scale)), int(round(self.width * self.scale))


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Scale each image (N,H,W) to [0, 1]; a constant image becomes zeros. In float64: for finite float32 voxels of
    +-3e38 the range overflows float32 and made NaN embeddings."""
    x = x.double()
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(dim=1).values[:, None, None]
    hi = flat.max(dim=1).values[:, None, None]
    out = ((x - lo) / (hi - lo).clamp_min(1e-8)).float()
    if not torch.isfinite(out).all():
        raise UserError("an image does not normalise to finite values (NaN or infinite voxels); fix the image")
    return out


def preprocess(slices: torch.Tensor, image_size: int, normalization: str) -> torch.Tensor:
    """(N,H,W) float slices -> (N,3,S,S) model input.

    normalization: "minmax" (LiteMedSAM, MedSAM: [0,1] per image) or "sam" (0-255 per image, then ImageNet mean/std).
    """
    if slices.ndim != 3:
        raise ValueError(f"expected slices of shape (N, H, W), got {tuple(slices.shape)}")
    frame = Frame(int(slices.shape[1]), int(slices.shape[2]), image_size)
    x = _minmax(slices.float())
    if normalization == "sam":
        x = x * 255.0
    x = x[:, None].expand(-1, 3, -1, -1)
    if normalization == "sam":
        mean = torch.tensor(SAM_PIXEL_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(SAM_PIXEL_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    elif normalization != "minmax":
        raise ValueError(f"unknown normalization {normalization!r}")
    rh, rw = frame.resized
    if (rh, rw) != (frame.height, frame.width):
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
    return F.pad(x, (0, image_size - rw, 0, image_size - rh))
