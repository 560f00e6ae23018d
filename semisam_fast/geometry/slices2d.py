"""The 2D geometry (`Slices2D`, the U-Net's): every slice resized in-plane to one square canvas, held in memory;
samples are augmented crops of it; a volume is predicted slice by slice; SAM's targets are stored per slice row.

Unlabelled cases are loaded with `with_label=False`: their labels never enter this process (the official SemiSAM
code built its prompts from them; tests/test_train.py proves ours cannot).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..data import Dataset, every_kth
from ..data.student_input import StudentInput
from ..errors import UserError
from .augment import random_transform
from .base import (Batch, StudentGeometry, agreement, check_image, class_probs, eval_mode, foreground_prob,
                   intensity_jitter, positive_ints, recorded)

if TYPE_CHECKING:
    from ..sam_targets import CaseTargets


@dataclass
class SliceRef:
    case_id: str
    z: int
    height: int  # original slice size (SAM's frame)
    width: int


class SliceStore:
    """Images (N, channels, size, size) and labels (N, size, size; labelled cases only) of many cases, with slice
    refs, made by the run's `StudentInput` (the same path inference takes)."""

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
        self.images = torch.cat(images) if images else torch.zeros(0, student_input.channels, size, size)
        self.labels = torch.cat(labels) if labelled and labels else None
        self.refs = refs
        self.size = size

    def __len__(self) -> int:
        return len(self.refs)

    def rows_of(self) -> dict[str, dict[int, int]]:
        """case -> slice -> row (rows of a case in store order)."""
        rows: dict[str, dict[int, int]] = {}
        for row, ref in enumerate(self.refs):
            rows.setdefault(ref.case_id, {})[ref.z] = row
        return rows


def draw_2d(store: SliceStore, n: int, crop: int, generator: torch.Generator, intensity: bool = False) -> Batch:
    index = torch.randint(0, len(store), (n,), generator=generator).tolist()
    transforms = [random_transform(store.size, crop, generator) for _ in index]
    images = torch.stack([t.apply(store.images[i]) for t, i in zip(transforms, index)])
    if intensity:
        images = intensity_jitter(images, generator)
    labels = None
    if store.labels is not None:
        labels = torch.stack([t.apply(store.labels[i]) for t, i in zip(transforms, index)]).long()
    return Batch(images.contiguous(), labels, [store.refs[i] for i in index], transforms, index)


EVAL_BATCH = 16  # slices per forward pass when a 2D student predicts a volume


def predict_volume_2d(net: nn.Module, image: np.ndarray, size: int, batch: int = EVAL_BATCH, device: str = "cpu",
                      classes: bool = False, context: int = 0, keep: list[int] | None = None) -> np.ndarray:
    """Foreground probability (H, W, Z) float32 of a 2D net applied to every slice `image[:, :, z]` of an already
    normalised volume (or to the slices `keep`: (H, W, len(keep))). Each slice is resized as in training, with its
    `context` neighbours as channels (`StudentInput.stack`), the logits resized back to (H, W) bilinearly, then
    softmaxed. `classes`: every class's probability, (C, H, W, Z)."""
    image = check_image(image)
    (size,) = positive_ints([size], 1, "in-plane size")
    (batch,) = positive_ints([batch], 1, "batch")
    H, W = image.shape[:2]
    out = None
    slices = StudentInput(in_plane=size, context=context).stack(image, keep)  # (Z, channels, size, size)
    Z = len(slices)
    with eval_mode(net, channels_last=torch.device(device).type == "cpu"):
        for start in range(0, Z, batch):
            x = slices[start:start + batch].to(device)
            logits = net(x).float()
            if logits.shape[-2:] != (H, W):
                logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
            if classes:  # (B, C, H, W) -> (C, H, W, B)
                probs = class_probs(logits).cpu().numpy().transpose(1, 2, 3, 0)
            else:
                probs = foreground_prob(logits).cpu().numpy().transpose(1, 2, 0)
            if out is None:
                out = np.empty(probs.shape[:-1] + (Z,), dtype=np.float32)
            out[..., start:start + batch] = probs
    return out


class Slices2D(StudentGeometry):
    config_key = "in_plane"

    def check(self, config: dict) -> None:
        if config["crop"] % 16 or config["crop"] > config["in_plane"]:
            raise UserError(f"crop {config['crop']} must be a multiple of 16 and at most in_plane "
                            f"{config['in_plane']}")

    def canvas_size(self, config: dict) -> int:
        return int(recorded(config, "in_plane"))

    def predict(self, net: nn.Module, image: np.ndarray, config: dict, keep: list[int] | None, device: str,
                classes: bool) -> np.ndarray:
        # a 2D student predicts just the slices asked for (normalised with the whole volume's statistics)
        return predict_volume_2d(net, image, int(config["in_plane"]), batch=int(config.get("eval_batch", EVAL_BATCH)),
                                 device=device, classes=classes, context=self.student_input(config).context, keep=keep)

    def store(self, dataset: Dataset, case_ids: list[str], student_input: StudentInput, labelled: bool,
              every: int = 1, desc: str = "load") -> SliceStore:
        slices = None if every == 1 else {cid: every_kth(dataset.num_slices(cid), every) for cid in case_ids}
        return SliceStore(dataset, case_ids, student_input, labelled=labelled, slices=slices, desc=desc)

    def draw(self, store: SliceStore, n: int, config: dict, generator: torch.Generator) -> Batch:
        return draw_2d(store, n, config["crop"], generator, config["intensity_aug"])

    def uncached(self, cached: list[int], wanted: list[int]) -> list[int]:
        have = set(cached)
        return [z for z in wanted if z not in have]

    # ---- SAM's targets: one row per store row, on the student's canvas ---------------------------------------------
    @staticmethod
    def _empty_table(store: SliceStore) -> dict[str, Tensor]:
        n, size = len(store), store.size
        return {"masks": torch.zeros(n, size, size, dtype=torch.uint8), "valid": torch.zeros(n, dtype=torch.bool),
                "agree": torch.zeros(n, size, size, dtype=torch.uint8)}

    def round_table(self, rounds: dict[str, CaseTargets], store: SliceStore,
                    student_input: StudentInput) -> dict[str, Tensor]:
        """Targets per row of the unlabelled slice store, on the student's canvas (resized as labels are)."""
        table = self._empty_table(store)
        rows_of = store.rows_of()
        for case_id, targets in rounds.items():
            where = rows_of.get(case_id, {})
            keep = [s for s, z in enumerate(targets.slices) if z in where]
            if not keep:
                continue
            rows = [where[targets.slices[s]] for s in keep]
            table["masks"][rows] = student_input.mask_slices(targets.target(), keep)
            table["agree"][rows] = student_input.mask_slices(agreement(targets), keep)
            table["valid"][rows] = torch.from_numpy(targets.valid[keep])
        return table

    def table_parts(self, table: dict[str, Tensor], store: SliceStore) -> dict[str, dict[str, Tensor]]:
        return {case_id: {key: value[list(rows.values())].clone() for key, value in table.items()}
                for case_id, rows in store.rows_of().items()}

    def table_from_parts(self, parts: dict[str, dict[str, Tensor]], store: SliceStore) -> dict[str, Tensor]:
        table = self._empty_table(store)
        for case_id, rows in store.rows_of().items():
            if case_id in parts:
                for key in table:
                    table[key][list(rows.values())] = parts[case_id][key]
        return table

    def stored_targets(self, table: dict[str, Tensor], batch: Batch, prob: Tensor,
                       config: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The stored targets of the batch's rows, pushed through each sample's crop/flip/rot90."""
        masks = torch.stack([t.apply(table["masks"][i]) for t, i in zip(batch.transforms, batch.index)])
        agree = torch.stack([t.apply(table["agree"][i]) for t, i in zip(batch.transforms, batch.index)])
        return prob, masks, agree, table["valid"][batch.index]

    def step_targets(self, sam, prob: Tensor, source: Tensor, batch: Batch,
                     config: dict) -> tuple[Tensor, Tensor, Tensor]:
        result = sam.targets(source, batch.transforms, batch.refs, config["in_plane"])
        return prob, result.masks.to(prob.device), result.valid
