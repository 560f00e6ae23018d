"""Training slices for the 2D student: volumes resized in-plane once, held in memory.

Unlabelled cases are loaded with `with_label=False`: their labels never enter this process (the official SemiSAM
code built its prompts from them; tests/test_train.py proves ours cannot).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from ..data import Dataset
from ..data.student_input import StudentInput


@dataclass
class SliceRef:
    case_id: str
    z: int
    height: int  # original slice size (SAM's frame)
    width: int


class SliceStore:
    """Images (and labels, for labelled cases only) of many cases as (N, size, size) tensors with slice refs, made
    by the run's `StudentInput` (the same path inference takes)."""

    def __init__(self, dataset: Dataset, case_ids: list[str], student_input: StudentInput, labelled: bool,
                 slices: dict[str, list[int]] | None = None, desc: str = "load") -> None:
        size = int(student_input.in_plane)
        images, labels, refs = [], [], []
        for case_id in tqdm(case_ids, desc=desc, unit="case", leave=False, dynamic_ncols=True):
            case = dataset.load_labelled(case_id) if labelled else dataset.load(case_id, with_label=False)
            keep = slices[case_id] if slices is not None else list(range(case.image.shape[2]))
            images.append(student_input.slices(case.image, keep))
            if labelled:
                labels.append(student_input.mask_slices(case.label, keep))
            refs += [SliceRef(case_id, z, case.image.shape[0], case.image.shape[1]) for z in keep]
        self.images = torch.cat(images) if images else torch.zeros(0, size, size)
        self.labels = torch.cat(labels) if labelled and labels else None
        self.refs = refs
        self.size = size

    def __len__(self) -> int:
        return len(self.refs)
