"""The 3D geometry (`Volumes3D`, the V-Net's): whole volumes in memory; samples are random patches; a volume is
predicted by a sliding window (UA-MT's); SAM's targets are stored as whole volumes per case and cut per patch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import Dataset
from ..data.student_input import StudentInput
from ..errors import UserError
from .base import (Batch, StudentGeometry, agreement, check_image, class_probs, eval_mode, foreground_prob,
                   intensity_jitter, positive_ints, recorded)

if TYPE_CHECKING:
    from ..sam_targets import CaseTargets


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


def _starts(n: int, patch: int, stride: int) -> list[int]:
    # UA-MT's test_single_case: ceil((n - patch) / stride) + 1 windows, the last one clamped to end at n
    count = math.ceil((n - patch) / stride) + 1
    return sorted({min(stride * i, n - patch) for i in range(count)})


STRIDE = (18, 18, 4)  # the sliding window's step (UA-MT's test_all_case)


def predict_volume_3d(net: nn.Module, image: np.ndarray, patch: Sequence[int] = (112, 112, 80),
                      stride: Sequence[int] = STRIDE, device: str = "cpu", classes: bool = False) -> np.ndarray:
    """Foreground probability (H, W, Z) float32 by sliding-window inference as in UA-MT's test_all_case.

    The volume is zero-padded (centred) to at least `patch`, windows of `patch` slide by `stride` covering the
    end exactly, softmax probabilities are averaged over overlaps and the padding is cropped off. `classes`: every
    class's probability, (C, H, W, Z)."""
    image = check_image(image)
    patch = positive_ints(patch, 3, "patch")
    stride = positive_ints(stride, 3, "stride")
    shape = image.shape
    pads = [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for s, p in zip(shape, patch)]
    padded = np.pad(image, pads, mode="constant", constant_values=0) if any(sum(p) for p in pads) else image
    vol = torch.from_numpy(np.ascontiguousarray(padded)).to(device)
    prob_sum = None
    count = torch.zeros(vol.shape, dtype=torch.float32, device=device)
    px, py, pz = patch
    with eval_mode(net):
        for x in _starts(vol.shape[0], px, stride[0]):
            for y in _starts(vol.shape[1], py, stride[1]):
                for z in _starts(vol.shape[2], pz, stride[2]):
                    window = vol[x:x + px, y:y + py, z:z + pz][None, None]
                    # averaging the foreground channel alone equals taking it from the averaged score map
                    logits = net(window).float()
                    probs = class_probs(logits)[0] if classes else foreground_prob(logits)[0]
                    if prob_sum is None:
                        prob_sum = torch.zeros(probs.shape[:-3] + vol.shape, dtype=torch.float32, device=device)
                    prob_sum[..., x:x + px, y:y + py, z:z + pz] += probs
                    count[x:x + px, y:y + py, z:z + pz] += 1.0
    prob = (prob_sum / count).cpu().numpy()
    crop = (Ellipsis,) + tuple(slice(lo, lo + s) for (lo, _), s in zip(pads, shape))
    return np.ascontiguousarray(prob[crop], dtype=np.float32)


def per_slice(x: Tensor) -> Tensor:
    """(B, H, W, D) -> (B*D, H, W): the patches' axial slices, the layout SAM's per-slice terms take."""
    return x.permute(0, 3, 1, 2).reshape(-1, *x.shape[1:3])


class Volumes3D(StudentGeometry):
    config_key = "patch"

    def check(self, config: dict) -> None:
        if config.get("sam_mix", "none") != "none":  # its stored targets are per slice, its batches patches
            raise UserError("--sam-mix pastes between 2D crops: use it with a 2D student")

    def checkpoint_config(self, config: dict) -> dict:
        return {**config, "in_plane": None}  # a 3D student sees the volume at its own size

    def predict(self, net: nn.Module, image: np.ndarray, config: dict, keep: list[int] | None, device: str,
                classes: bool) -> np.ndarray:
        # the whole volume: the windows of the slices asked for need their neighbours
        prob = predict_volume_3d(net, image, recorded(config, "patch"), config.get("stride", STRIDE), device=device,
                                 classes=classes)
        return prob if keep is None else np.ascontiguousarray(prob[..., keep])

    def store(self, dataset: Dataset, case_ids: list[str], student_input: StudentInput, labelled: bool,
              every: int = 1, desc: str = "load") -> VolumeStore:
        return VolumeStore(dataset, case_ids, student_input, labelled=labelled)

    def draw(self, store: VolumeStore, n: int, config: dict, generator: torch.Generator) -> Batch:
        return draw_3d(store, n, config["patch"], generator, config["intensity_aug"])

    # ---- SAM's targets: whole volumes per case ---------------------------------------------------------------------
    def round_table(self, rounds: dict[str, CaseTargets], store: VolumeStore,
                    student_input: StudentInput) -> dict[str, dict[str, Tensor]]:
        """Targets as whole volumes per case (zeros, invalid, on slices that are not cached)."""
        table = {}
        for case_id, targets in rounds.items():
            shape = tuple(store.images[store.case_ids.index(case_id)].shape)
            masks = torch.zeros(shape, dtype=torch.uint8)
            agree = torch.zeros(shape, dtype=torch.uint8)
            valid = torch.zeros(shape[2], dtype=torch.bool)
            masks[:, :, targets.slices] = torch.from_numpy(targets.target())
            agree[:, :, targets.slices] = torch.from_numpy(agreement(targets))
            valid[targets.slices] = torch.from_numpy(targets.valid)
            table[case_id] = {"masks": masks, "agree": agree, "valid": valid}
        return table

    def table_parts(self, table: dict, store: VolumeStore) -> dict[str, dict[str, Tensor]]:
        return table

    def table_from_parts(self, parts: dict[str, dict[str, Tensor]], store: VolumeStore) -> dict:
        return {case_id: parts[case_id] for case_id in store.case_ids if case_id in parts}

    def stored_targets(self, table: dict, batch: Batch, prob: Tensor,
                       config: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The stored targets inside each sample's patch window, as the patches' slices."""
        patch = config["patch"]
        masks, agree, valid = [], [], []
        for case_id, z0, y0, x0, *_ in batch.refs:
            window = (slice(y0, y0 + patch[0]), slice(x0, x0 + patch[1]), slice(z0, z0 + patch[2]))
            masks.append(pad_to(table[case_id]["masks"], patch)[window])
            agree.append(pad_to(table[case_id]["agree"], patch)[window])
            v = table[case_id]["valid"]
            valid.append(torch.cat([v, v.new_zeros(max(0, z0 + patch[2] - len(v)))])[z0:z0 + patch[2]])
        return (per_slice(prob), per_slice(torch.stack(masks)), per_slice(torch.stack(agree)),
                torch.stack(valid).reshape(-1))

    def step_targets(self, sam, prob: Tensor, source: Tensor, batch: Batch,
                     config: dict) -> tuple[Tensor, Tensor, Tensor]:
        """SAM per axial slice of each patch (`SamTeacher.targets_3d`)."""
        masks, valid = sam.targets_3d(source, batch.refs)
        return per_slice(prob), per_slice(masks).to(prob.device), valid.reshape(-1)
