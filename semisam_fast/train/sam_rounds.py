"""Pseudo-label rounds: SAM's targets for the unlabelled data are made every R iterations, not in every step.

A round: the EMA teacher predicts the cached slices of every unlabelled volume (through the run's `StudentInput`,
as inference does; bf16 where the CPU has it), `sam_targets.case_targets` prompts SAM from that prediction on the
cached embeddings in large batches and gates the masks, and the targets are stored in the student's input frame.
A training step then only looks them up through the batch's recorded geometry (2D: crop/flip/rot90 of the canvas;
3D: the patch window): no decoder call. The stored targets go into every checkpoint, so a resumed run continues bit
for bit.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..backends import Backend
from ..cache import EmbeddingCache
from ..data.student_input import StudentInput
from ..inference import predict_case
from ..sam_targets import CaseTargets, TargetOptions, case_targets
from .batches import Batch, VolumeStore, pad_to
from .slices import SliceStore


def teacher_precision(setting: str, device: str) -> str:
    """The precision a round's teacher prediction runs in: `setting` (TrainConfig.sam_teacher_precision) with
    "auto" resolved to bf16 on a CPU that multiplies bf16 in hardware, fp32 elsewhere."""
    if setting != "auto":
        return setting
    from ..doctor import has_bf16_matmuls

    return "bf16" if torch.device(device).type == "cpu" and has_bf16_matmuls() else "fp32"


def make_round(teacher: nn.Module, volumes: dict[str, np.ndarray], config: dict, cache: EmbeddingCache,
               backend: Backend, options: TargetOptions, device: str = "cpu", progress: bool = True,
               precision: str = "fp32") -> dict[str, CaseTargets]:
    """Teacher prediction of each unlabelled volume's cached slices (the only ones SAM sees) -> gated SAM targets.
    `precision`: the teacher's (`teacher_precision`)."""
    out = {}
    for case_id, image in tqdm(volumes.items(), desc="SAM round", unit="case", leave=False, dynamic_ncols=True,
                               disable=not progress):
        slices = cache.slices(case_id)
        prob = predict_case(teacher, image, config, device=device, slices=slices, precision=precision)
        out[case_id] = case_targets(case_id, prob, cache, backend, options)
    return out


def _agree(targets: CaseTargets) -> np.ndarray:
    return (targets.target().astype(bool) == targets.teacher).astype(np.uint8)


def _rows_of(store: SliceStore) -> dict[str, dict[int, int]]:
    """case -> slice -> row of the unlabelled slice store (rows of a case in store order)."""
    rows: dict[str, dict[int, int]] = {}
    for row, ref in enumerate(store.refs):
        rows.setdefault(ref.case_id, {})[ref.z] = row
    return rows


def _empty_table_2d(store: SliceStore) -> dict[str, torch.Tensor]:
    n, size = len(store), store.size
    return {"masks": torch.zeros(n, size, size, dtype=torch.uint8), "valid": torch.zeros(n, dtype=torch.bool),
            "agree": torch.zeros(n, size, size, dtype=torch.uint8)}


def table_2d(rounds: dict[str, CaseTargets], store: SliceStore, student_input: StudentInput) -> dict[str, torch.Tensor]:
    """Targets per row of the unlabelled slice store, on the student's canvas (resized as labels are)."""
    table = _empty_table_2d(store)
    rows_of = _rows_of(store)
    for case_id, targets in rounds.items():
        where = rows_of.get(case_id, {})
        keep = [s for s, z in enumerate(targets.slices) if z in where]
        if not keep:
            continue
        rows = [where[targets.slices[s]] for s in keep]
        table["masks"][rows] = student_input.mask_slices(targets.target(), keep)
        table["agree"][rows] = student_input.mask_slices(_agree(targets), keep)
        table["valid"][rows] = torch.from_numpy(targets.valid[keep])
    return table


def table_3d(rounds: dict[str, CaseTargets], store: VolumeStore) -> dict[str, dict[str, torch.Tensor]]:
    """Targets as whole volumes per case (zeros, invalid, on slices that are not cached):
    {case: {"masks", "agree", "valid"}}."""
    table = {}
    for case_id, targets in rounds.items():
        shape = tuple(store.images[store.case_ids.index(case_id)].shape)
        masks = torch.zeros(shape, dtype=torch.uint8)
        agree = torch.zeros(shape, dtype=torch.uint8)
        valid = torch.zeros(shape[2], dtype=torch.bool)
        masks[:, :, targets.slices] = torch.from_numpy(targets.target())
        agree[:, :, targets.slices] = torch.from_numpy(_agree(targets))
        valid[targets.slices] = torch.from_numpy(targets.valid)
        table[case_id] = {"masks": masks, "agree": agree, "valid": valid}
    return table


def table_parts(table: dict, store: SliceStore | VolumeStore) -> dict[str, dict[str, torch.Tensor]]:
    """A round's table as {case: its targets}: what checkpoints keep, so a run resumes under any number of
    processes (each takes its own cases' parts; the rows of a case do not depend on who holds it)."""
    if isinstance(store, VolumeStore):
        return table
    return {case_id: {key: value[list(rows.values())].clone() for key, value in table.items()}
            for case_id, rows in _rows_of(store).items()}


def table_from_checkpoint(state: dict, store: SliceStore | VolumeStore) -> dict | None:
    """This process's table from a checkpoint: its cases' per-case parts (`table_parts`), or, from a checkpoint
    written before those, the one-process table (3D then keyed "masks/<case>", regrouped here)."""
    parts = state.get("sam_targets")
    if parts is None:
        old = state.get("sam_table")
        if old is None or not isinstance(store, VolumeStore):
            return old
        return {case: {kind: old[f"{kind}/{case}"] for kind in ("masks", "agree", "valid")}
                for case in {key.split("/", 1)[1] for key in old}}
    if isinstance(store, VolumeStore):
        return {case_id: parts[case_id] for case_id in store.case_ids if case_id in parts}
    table = _empty_table_2d(store)
    for case_id, rows in _rows_of(store).items():
        if case_id in parts:
            for key in table:
                table[key][list(rows.values())] = parts[case_id][key]
    return table


def step_targets_2d(table: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The stored targets of the batch's rows, pushed through each sample's crop/flip/rot90: (B,c,c) x2 and (B,)."""
    masks = torch.stack([g.apply(table["masks"][i]) for g, i in zip(batch.geometries, batch.index)])
    agree = torch.stack([g.apply(table["agree"][i]) for g, i in zip(batch.geometries, batch.index)])
    return masks, table["valid"][batch.index], agree


def step_targets_3d(table: dict[str, torch.Tensor], batch: Batch,
                    patch: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The stored targets inside each sample's patch window: masks and agreement (B,H,W,D), valid (B, D)."""
    masks, agree, valid = [], [], []
    for case_id, z0, y0, x0, *_ in batch.refs:
        window = (slice(y0, y0 + patch[0]), slice(x0, x0 + patch[1]), slice(z0, z0 + patch[2]))
        masks.append(pad_to(table[case_id]["masks"], patch)[window])
        agree.append(pad_to(table[case_id]["agree"], patch)[window])
        v = table[case_id]["valid"]
        valid.append(torch.cat([v, v.new_zeros(max(0, z0 + patch[2] - len(v)))])[z0:z0 + patch[2]])
    return torch.stack(masks), torch.stack(valid), torch.stack(agree)


def round_summary(rounds: dict[str, CaseTargets]) -> dict[str, float]:
    """What a round produced, for the logs: share of slices with a target, kept SAM masks, negatives."""
    slices = sum(len(t.slices) for t in rounds.values()) or 1
    return {"sam_coverage": sum(int(t.valid.sum()) for t in rounds.values()) / slices,
            "sam_kept": sum(int(t.kept.sum()) for t in rounds.values()) / slices,
            "sam_negative": sum(int(t.negative.sum()) for t in rounds.values()) / slices}
