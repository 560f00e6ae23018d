"""Drawing training batches: 2D augmented crops of slices, or 3D patches of volumes. All randomness comes from
one torch.Generator whose state goes into every checkpoint, so a resumed run draws the same batches."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.student_input import StudentInput
from .augment import Geometry, random_geometry
from .slices import SliceStore


@dataclass
class Batch:
    images: torch.Tensor  # (B,1,...) student input
    labels: torch.Tensor | None  # (B,...) long, labelled batches only
    refs: list  # SliceRef per sample (2D) or (case_id, z0, y0, x0, H, W, Z) per sample (3D)
    geometries: list[Geometry] | None = None
    index: list[int] | None = None  # 2D: the store rows drawn (stored SAM targets are looked up by row)

    def take(self, rows: slice) -> "Batch":
        """The samples `rows` of this batch (a process's share of a global batch)."""
        return Batch(self.images[rows], None if self.labels is None else self.labels[rows], self.refs[rows],
                     None if self.geometries is None else self.geometries[rows],
                     None if self.index is None else self.index[rows])


def intensity_jitter(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random contrast (x0.8-1.2) and brightness (+-0.2 of the z-scored unit) per sample of a (B, 1, ...) batch:
    the student's input only (SAM's targets come from the original slice)."""
    shape = (images.shape[0],) + (1,) * (images.ndim - 1)
    contrast = 0.8 + 0.4 * torch.rand(shape, generator=generator)
    brightness = 0.4 * torch.rand(shape, generator=generator) - 0.2
    return images * contrast + brightness


def draw_2d(store: SliceStore, n: int, crop: int, generator: torch.Generator, intensity: bool = False) -> Batch:
    index = torch.randint(0, len(store), (n,), generator=generator).tolist()
    geometries = [random_geometry(store.size, crop, generator) for _ in index]
    images = torch.stack([g.apply(store.images[i]) for g, i in zip(geometries, index)])[:, None]
    if intensity:
        images = intensity_jitter(images, generator)
    labels = None
    if store.labels is not None:
        labels = torch.stack([g.apply(store.labels[i]) for g, i in zip(geometries, index)]).long()
    return Batch(images.contiguous(), labels, [store.refs[i] for i in index], geometries, index)


class VolumeStore:
    """Whole volumes (through the run's `StudentInput`; labels only when labelled) for 3D patch sampling."""

    def __init__(self, dataset, case_ids: list[str], student_input: StudentInput, labelled: bool) -> None:
        self.case_ids = list(case_ids)
        self.images, self.labels = [], []
        for case_id in case_ids:
            case = dataset.load_labelled(case_id) if labelled else dataset.load(case_id, with_label=False)
            self.images.append(student_input.volume(case.image))
            if labelled:
                self.labels.append(torch.from_numpy(case.label.astype(np.int64)))


def pad_to(volume: torch.Tensor, patch: list[int]) -> torch.Tensor:
    """Zero-pad the leading dims of (H, W, Z[, ...]) at their end up to `patch` (patches of small volumes)."""
    pads = []
    for size, want in zip(reversed(volume.shape), reversed(patch)):
        pads += [0, max(want - size, 0)]
    return F.pad(volume, pads) if any(pads) else volume


def draw_3d(store: VolumeStore, n: int, patch: list[int], generator: torch.Generator,
            intensity: bool = False) -> Batch:
    images, labels, refs = [], [], []
    for _ in range(n):
        i = int(torch.randint(0, len(store.images), (1,), generator=generator))
        image = pad_to(store.images[i], patch)
        y0, x0, z0 = (int(torch.randint(0, s - p + 1, (1,), generator=generator))
                      for s, p in zip(image.shape, patch))
        window = (slice(y0, y0 + patch[0]), slice(x0, x0 + patch[1]), slice(z0, z0 + patch[2]))
        images.append(image[window])
        if store.labels:
            labels.append(pad_to(store.labels[i], patch)[window])
        h, w = store.images[i].shape[:2]
        refs.append((store.case_ids[i], z0, y0, x0, h, w, store.images[i].shape[2]))
    images = torch.stack(images)[:, None]
    if intensity:
        images = intensity_jitter(images, generator)
    return Batch(images, torch.stack(labels) if labels else None, refs)

