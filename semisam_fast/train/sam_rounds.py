"""Pseudo-label rounds: SAM's targets for the unlabelled data are made every R iterations, not in every step.

A round: the EMA teacher (or a finished run's network, `--sam-prompt-run`: one round only, its prediction never
changes) predicts the cached slices of every unlabelled volume (through the run's `StudentInput`,
as inference does; bf16 where the CPU has it), `sam_targets.case_targets` prompts SAM from that prediction on the
cached embeddings in large batches and gates the masks, and the student's geometry stores the targets in its input
frame (`StudentGeometry.round_table`). A training step then only looks them up through the batch's recorded
transforms (2D: crop/flip/rot90 of the canvas; 3D: the patch window): no decoder call. The stored targets go into
every checkpoint, so a resumed run continues bit for bit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..backends import Backend
from ..cache import EmbeddingCache
from ..checkpoints import find_checkpoint, read_run_record
from ..errors import UserError
from ..inference import predict_case
from ..sam_targets import CaseTargets, TargetOptions, case_targets


def teacher_precision(setting: str, device: str) -> str:
    """The precision a round's teacher prediction runs in: `setting` (TrainConfig.sam_teacher_precision) with
    "auto" resolved to bf16 on a CPU that multiplies bf16 in hardware, fp32 elsewhere."""
    if setting != "auto":
        return setting
    from ..doctor import has_bf16_matmuls

    return "bf16" if torch.device(device).type == "cpu" and has_bf16_matmuls() else "fp32"


def prompt_network(run: str | Path, labelled: list[str], device: str = "cpu") -> tuple[nn.Module, dict]:
    """The network of a finished run (`--sam-prompt-run`; its student's weights, as `evaluate` scores them) and its
    config, to prompt the rounds instead of the EMA teacher. It must have been trained on labels of this run's
    labelled cases only: any other case's label in its weights would reach this run's unlabelled or validation
    cases through its prompts."""
    from ..nets import load_student

    record = read_run_record(run)
    trained_on = record.get("labeled_cases")
    if not isinstance(trained_on, list):
        raise UserError(f"--sam-prompt-run {run}: its run.json records no labelled cases")
    foreign = sorted(set(map(str, trained_on)) - set(labelled))
    if foreign:
        raise UserError(f"--sam-prompt-run {run} was trained on the labels of {', '.join(foreign[:4])}"
                        f"{' ...' if len(foreign) > 4 else ''}, which this run does not hold as labelled")
    return load_student(find_checkpoint(run), device=device)  # in eval mode; rounds predict under inference_mode


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


def round_summary(rounds: dict[str, CaseTargets]) -> dict[str, float]:
    """What a round produced, for the logs: share of slices with a target, kept SAM masks, negatives."""
    slices = sum(len(t.slices) for t in rounds.values()) or 1
    return {"sam_coverage": sum(int(t.valid.sum()) for t in rounds.values()) / slices,
            "sam_kept": sum(int(t.kept.sum()) for t in rounds.values()) / slices,
            "sam_negative": sum(int(t.negative.sum()) for t in rounds.values()) / slices}
