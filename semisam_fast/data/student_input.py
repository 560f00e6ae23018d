"""How a volume becomes a student network's input: the one preprocessing contract.

Training stores (2D slices, 3D volumes), validation, `evaluate`, `predict_case`, pseudo-label rounds and the bench
scripts all go through `StudentInput`, built from the run's config (which every checkpoint records) by the student's
geometry (`nets.student_input`). A student fed
at test time anything else than what it was trained on is the most expensive bug this project has had: LA's h5
volumes were z-scored before cropping, so they are not unit-variance, and feeding them raw cost ~24 Dice points.

SAM's own preprocessing (min-max, resize longest side, pad) is a different contract: `models/preprocess.py`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from semisam_fast.choices import DEFAULT_NORMALIZATION, NORMALIZATIONS
from semisam_fast.errors import UserError



def resize_slices(volume: np.ndarray | torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """(H, W, Z) -> (Z, size, size) float32; bilinear for images, nearest for masks (aspect not kept)."""
    if isinstance(volume, np.ndarray):
        volume = torch.from_numpy(np.ascontiguousarray(volume.transpose(2, 0, 1)))
    else:
        volume = volume.permute(2, 0, 1)
    x = volume.float()[:, None]
    if tuple(x.shape[-2:]) == (size, size):
        return x[:, 0].contiguous()
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(x, size=(size, size), mode=mode, **kwargs)[:, 0]


@dataclass(frozen=True)
class StudentInput:
    """normalization: "zscore" (per volume, over the whole volume) or "none"; in_plane: 2D students see every slice
    resized to in_plane x in_plane, 3D students (in_plane None) the volume at its own size; context (2D only): the
    slices on each side of a slice that come with it as input channels (2.5D), repeated at the volume's ends."""

    normalization: str = DEFAULT_NORMALIZATION
    in_plane: int | None = None
    context: int = 0

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise UserError(f"unknown normalization {self.normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
        if int(self.context) < 0 or (self.context and not self.in_plane):
            raise UserError(f"--context {self.context}: neighbouring slices as channels need a 2D student (a 3D "
                            "one sees them already) and a count >= 0")

    @property
    def channels(self) -> int:
        """The student network's input channels."""
        return 1 + 2 * int(self.context)

    def normalize(self, volume: np.ndarray) -> np.ndarray:
        """Intensity normalisation of a whole (H, W, Z) volume, float32."""
        volume = np.asarray(volume, dtype=np.float32)
        if self.normalization == "none":
            return volume
        # statistics in float64: in float32 the squares of values ~1e20 and above overflow, and a volume scaled by
        # 1e30 z-scored to zeros
        mean, std = float(volume.mean(dtype=np.float64)), float(volume.std(dtype=np.float64))
        with np.errstate(over="ignore", invalid="ignore"):
            out = (volume - np.float32(mean)) / np.float32(max(std, 1e-6))
        if not np.isfinite(out).all():
            raise UserError(f"the volume's intensities (mean {mean:.3g}, sd {std:.3g}) do not normalise to finite "
                            "values; rescale the image")
        return out

    def slices(self, volume: np.ndarray, keep: Sequence[int] | None = None) -> torch.Tensor:
        """2D input: the normalised volume's slices `keep` (default all), each with its `context` neighbours on each
        side as channels, (Z, channels, in_plane, in_plane)."""
        return self.stack(self.normalize(volume), keep)

    def stack(self, normalised: np.ndarray, keep: Sequence[int] | None = None) -> torch.Tensor:
        """`slices` of a volume already normalised: only the slices the channels need are resized."""
        depth = normalised.shape[2]
        keep = np.arange(depth) if keep is None else np.asarray(list(keep), dtype=np.int64)
        if not len(keep):
            return torch.zeros(0, self.channels, self._size(), self._size())
        offsets = np.arange(-int(self.context), int(self.context) + 1)
        wanted = np.clip(keep[:, None] + offsets[None, :], 0, depth - 1)  # (K, channels)
        needed, where = np.unique(wanted, return_inverse=True)
        resized = resize_slices(normalised[:, :, needed], self._size())
        return resized[torch.from_numpy(where.reshape(wanted.shape))]

    def mask_slices(self, mask: np.ndarray, keep: Sequence[int] | None = None) -> torch.Tensor:
        """A label (or target) volume's slices on the same canvas as `slices`, nearest neighbour, uint8."""
        m = np.asarray(mask)
        if keep is not None:
            m = m[:, :, list(keep)]
        return resize_slices(m.astype(np.float32), self._size(), "nearest").to(torch.uint8)

    def volume(self, volume: np.ndarray) -> torch.Tensor:
        """3D input: the normalised volume (H, W, Z) as a float32 tensor."""
        return torch.from_numpy(np.ascontiguousarray(self.normalize(volume)))

    def _size(self) -> int:
        if not self.in_plane:
            raise ValueError("slices() is for 2D students (in_plane set)")
        return int(self.in_plane)
