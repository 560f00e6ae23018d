"""Training slices for the 2D student: volumes resized in-plane once, held in memory.

Unlabelled cases are loaded with `with_label=False`: their labels never enter this process (the official SemiSAM
code built its prompts from them; tests/test_train.py proves ours cannot).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import Dataset


def resize_slices(volume: np.ndarray, size: int, mode: str = "bilinear") -> torch.Tensor:
    """(H,W,Z) -> (Z,size,size)."""
    x = torch.from_numpy(np.ascontiguousarray(volume.transpose(2, 0, 1))).float()[:, None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(x, size=(size, size), mode=mode, **kwargs)[:, 0]


@dataclass
class SliceRef:
    case_id: str
    z: int
    height: int  # original slice size (SAM's frame)
    width: int


class SliceStore:
    """Images (and labels, for labelled cases only) of many cases as (N, size, size) tensors with slice refs."""

    def __init__(self, dataset: Dataset, case_ids: list[str], size: int, labelled: bool,
                 slices: dict[str, list[int]] | None = None, desc: str = "load") -> None:
        images, labels, refs = [], [], []
        for case_id in tqdm(case_ids, desc=desc, unit="case", leave=False, dynamic_ncols=True):
            case = dataset.load(case_id, with_label=labelled)
            keep = slices[case_id] if slices is not None else list(range(case.image.shape[2]))
            # z-score per volume (LA already is; NIfTI / PNG intensities are not)
            image = (case.image[:, :, keep] - case.image.mean()) / max(float(case.image.std()), 1e-6)
            images.append(resize_slices(image, size))
            if labelled:
                labels.append(resize_slices(case.label[:, :, keep].astype(np.float32), size, "nearest").to(torch.uint8))
            refs += [SliceRef(case_id, z, case.image.shape[0], case.image.shape[1]) for z in keep]
        self.images = torch.cat(images) if images else torch.zeros(0, size, size)
        self.labels = torch.cat(labels) if labelled and labels else None
        self.refs = refs
        self.size = size

    def __len__(self) -> int:
        return len(self.refs)
