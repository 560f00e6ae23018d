"""Whole-volume inference for trained students, in the geometry of the student (`nets.student_geometry`: slice by
slice for the 2D U-Net, a sliding window for the 3D V-Net).

`predict_case` is the entry point for a raw volume: it applies the run's `StudentInput` (the same normalisation
and resizing training used, read from the checkpoint's config). `predict_volume_2d` / `predict_volume_3d` (the
geometries' kernels) run a net on a volume that is already normalised. All return the foreground probability volume,
float32 (H, W, Z), in the image's own geometry. The network must already be on `device`; it is run in eval mode and
its mode restored after.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .geometry.base import check_image, class_probs, foreground_prob
from .geometry.slices2d import predict_volume_2d
from .geometry.volumes3d import predict_volume_3d
from .nets import student_geometry

__all__ = ["predict_volume_2d", "predict_volume_3d", "predict_case", "predict_mask", "foreground_prob",
           "class_probs", "largest_component"]


def predict_case(net: nn.Module, image: np.ndarray, config: dict, device: str = "cpu",
                 slices: Sequence[int] | None = None, precision: str = "fp32", classes: bool = False) -> np.ndarray:
    """Foreground probability of one raw volume: the run's `StudentInput` (from `config`, as recorded in the
    checkpoint), then the prediction of the student's geometry.

    `slices`: only these z, returned as (H, W, len(slices)); a 2D student predicts just them (normalised with the
    whole volume's statistics, as always), a 3D student the whole volume its windows need. `precision` "bf16": the
    net runs under bf16 autocast (pseudo-label rounds on a CPU with bf16 matmuls), the output stays float32.
    `classes`: every class's probability, (C, H, W, Z), for a multi-class student."""
    geometry = student_geometry(config)
    if precision not in ("fp32", "bf16"):
        raise UserError(f"precision must be 'fp32' or 'bf16', not {precision!r}")
    image = geometry.student_input(config).normalize(check_image(image))
    keep = None if slices is None else list(slices)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with autocast:
        return geometry.predict(net, image, config, keep, device, classes)


def predict_mask(net: nn.Module, image: np.ndarray, config: dict, threshold: float = 0.5,
                 keep_largest: bool = False, device: str = "cpu") -> np.ndarray:
    """A student's mask of one raw volume, uint8 (H, W, Z): probability > threshold, optionally reduced to its largest
    connected component (what `evaluate` scores and `predict` writes). A multi-class student (`n_classes` > 2):
    each voxel's most probable class, as its label value; `keep_largest` keeps each class's largest component."""
    if not 0.0 <= float(threshold) < 1.0:
        raise UserError(f"threshold must be in [0, 1), got {threshold}")
    if n_classes(config) > 2:
        labels = predict_case(net, image, config, device=device, classes=True).argmax(axis=0).astype(np.uint8)
        if keep_largest:
            for value in range(1, n_classes(config)):
                labels[(labels == value) & ~largest_component(labels == value)] = 0
        return labels
    mask = predict_case(net, image, config, device=device) > threshold
    if keep_largest:
        mask = largest_component(mask)
    return mask.astype(np.uint8)


def n_classes(config: dict) -> int:
    """The number of output classes of a checkpoint's student, background included (2: a binary student)."""
    return int((config.get("student_kwargs") or {}).get("n_classes", 2))


def label_values(config: dict) -> tuple[int, ...]:
    """The foreground label values a checkpoint's student predicts: (1,) binary, (1, ..., C-1) multi-class."""
    return tuple(range(1, max(2, n_classes(config))))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a binary mask (full connectivity, as UA-MT's getLargestCC): the
    post-processing LA papers apply to a prediction."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())
