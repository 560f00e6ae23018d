"""`pseudo-label`: prompts from masks (labels, mask volumes) or from a trained run's teacher -> SAM's decoder on
cached embeddings (or, without a cache, on the encoder's embeddings of just the prompted slices, made there and then)
-> mask volumes in the input's format, with a report and overlays. The steps are others': slices are encoded by
`embed.encode_slices`, SAM is prompted in `sam_targets.py`, volumes read and masks written by the `Dataset`, the
report by `results.py`."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import choices
from .backends import Backend
from .cache import EmbeddingCache
from .data import Dataset
from .distributed import World, my_cases
from .embed import encode_slices
from .errors import UserError
from .metrics import binary_metrics, format_table
from .models import Frame, get_spec
from .models.preprocess import boxes_to_input
from .overlay import overlay
from .prompts import mask_to_box
from .results import write_results
from .sam_targets import TargetOptions, case_targets, decode_slices, score_targets

PROMPTS = tuple(p for p in choices.PROMPTS if p != "teacher")  # mask-made prompts; teacher: teacher_pseudo_label
log = logging.getLogger(__name__)


@dataclass
class PseudoLabelReport:
    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    overlays: list[str] = field(default_factory=list)

    def table(self) -> str:
        return format_table(self.rows, self.summary) if self.rows else "no labels: nothing to score"

    def merged(self, world: World, case_ids: list[str]) -> "PseudoLabelReport | None":
        """Every process's part in the order of `case_ids` on rank 0 (None elsewhere); itself in one process."""
        parts = world.gather(self)
        if parts is None:  # not rank 0
            return None
        if len(parts) == 1:
            return parts[0]
        order = {c: i for i, c in enumerate(case_ids)}
        merged = PseudoLabelReport()
        for part in parts:
            merged.rows += part.rows
            merged.outputs += part.outputs
            merged.overlays += part.overlays
        merged.rows.sort(key=lambda row: order[row["case"]])
        return merged


def pseudo_label(dataset: Dataset, cache: EmbeddingCache | None, backend: Backend, out: str | Path,
                 case_ids: list[str] | None = None, prompt: str = "gt-box", masks_dir: str | Path | None = None,
                 margin: float = 4.0, batch: int = 32, n_overlays: int = 4, progress: bool = True,
                 world: World | None = None, encoder: Backend | None = None, encoder_batch: int = 8,
                 distances: bool = True) -> PseudoLabelReport | None:
    """SAM's masks from `cache`'s embeddings, or, with `encoder` instead of a cache, from that backend's embeddings
    of the prompted slices (`encoder_batch` per call; nothing is written but the masks and the report). Under
    torchrun (`world`) each process labels its share of the cases and rank 0 writes the merged report (and returns
    it; the other processes return None). `distances=False`: the report scores Dice and Jaccard only."""
    world = world or World()
    if prompt not in PROMPTS:
        raise UserError(f"--prompt must be one of {', '.join(PROMPTS)}, not {prompt!r}")
    if prompt == "mask-box" and masks_dir is None:
        raise UserError("--prompt mask-box needs --masks DIR (mask volumes laid out as pseudo-label writes them)")
    if (cache is None) == (encoder is None):
        raise UserError("pseudo-label takes its embeddings from a cache (--cache) or runs the encoder, one of them")
    if cache is not None:
        cache.check_decoder(backend)
    elif (encoder.model, encoder.checkpoint_sha256) != (backend.model, backend.checkpoint_sha256):
        raise UserError(f"the encoder ({encoder.model}) and the decoder ({backend.model}) come from different "
                        "models or checkpoints")
    spec = get_spec(backend.model)
    if prompt == "points" and spec.prompt == "box":
        log.warning("%s was trained on box prompts: from points it gives empty masks (LiteMedSAM on the phantom: "
                    "Dice 0.0 from an interior point vs 0.99 from the label box); use gt-box", spec.name)
    out = Path(out)
    if case_ids is None:  # default: the cases of the data set that are in the cache (without one: all)
        case_ids = [c for c in dataset.case_ids if cache is None or c in set(cache.case_ids)]
    report = PseudoLabelReport()
    n_overlays = -(-n_overlays // world.size)  # each process its share of the overlays
    mine = my_cases(case_ids, lambda c: len(cache.slices(c)) if cache is not None else dataset.num_slices(c), world)
    for case_id in tqdm(mine, desc="pseudo-label", unit="case", disable=not (progress and world.leader),
                        dynamic_ncols=True):
        case = dataset.load(case_id, with_label=dataset.has_labels)
        if cache is not None:
            cache.check_source(case_id, case.image)
        source = case.label if prompt in ("gt-box", "points") else dataset.read_mask(case_id, Path(masks_dir))
        if source is None:
            raise UserError(f"case {case_id} has no label to build --prompt {prompt} from; use mask-box --masks")
        frame = Frame(case.image.shape[0], case.image.shape[1], spec.image_size)
        depth = case.image.shape[2]
        cached = set(cache.slices(case_id)) if cache is not None else set(range(depth))
        prompted = [z for z in range(depth) if z in cached and source[:, :, z].any()]
        volume = np.zeros(case.image.shape, dtype=np.uint8)
        for start in range(0, len(prompted), batch):
            zs = prompted[start:start + batch]
            embeddings = cache.get(case_id, zs) if cache is not None else \
                encode_slices(encoder, case.image, zs, encoder_batch)
            logits = decode_slices(backend, embeddings, source[:, :, zs].transpose(2, 0, 1), frame,
                                   "points" if prompt == "points" else "box", margin)
            volume[:, :, zs] = (logits > 0).cpu().numpy().transpose(1, 2, 0)
        report.outputs.append(str(dataset.write_mask(case_id, volume, out)))
        if case.label is not None:
            scored = sorted(cached) if cached else list(range(case.image.shape[2]))
            row = {"case": case_id, **binary_metrics(volume[:, :, scored], case.label[:, :, scored],
                                                     distances=distances),
                   "slices": len(scored), "prompted": len(prompted)}
            report.rows.append(row)
            if len(report.overlays) < n_overlays and prompted:
                z = prompted[len(prompted) // 2]
                box = boxes_to_input(torch.from_numpy(mask_to_box(source[:, :, z])), frame, margin) / frame.scale
                report.overlays.append(str(overlay(case.image[:, :, z], out / "overlays" / f"{case_id}_z{z}.png",
                                                   volume[:, :, z], case.label[:, :, z], [box.tolist()])))
    report = report.merged(world, case_ids)
    if report is not None and report.rows:
        meta = {"prompt": prompt, "margin": margin, "model": backend.model, "overlays": report.overlays}
        report.summary = write_results(report.rows, out / "report.json", meta)
    return report


def teacher_pseudo_label(dataset: Dataset, cache: EmbeddingCache, backend: Backend, run: str | Path,
                         out: str | Path, case_ids: list[str] | None = None,
                         options: TargetOptions | dict | None = None, weights: str = "teacher",
                         n_overlays: int = 4, progress: bool = True,
                         world: World | None = None) -> PseudoLabelReport | None:
    """The SAM targets a training run's pseudo-label rounds make, for a person to inspect: a run's teacher (or
    student) predicts each case, SAM is prompted from it and gated (`sam_targets.case_targets`), the targets are
    written as mask volumes (zeros on slices without a target) with overlays; where labels exist they are read
    AFTER the targets are made, for the report only (teacher vs target Dice, precision, coverage).
    options: the run's own (from its config), with a dict's non-None entries overriding them.
    Under torchrun (`world`) the cases are shared out as in `pseudo_label`; rank 0 writes and returns the report."""
    world = world or World()
    from .checkpoints import find_checkpoint
    from .nets import load_student
    from .inference import predict_case

    cache.check_decoder(backend)
    run = Path(run)
    checkpoint = find_checkpoint(run) if run.is_dir() else run
    try:
        net, config = load_student(checkpoint, weights=weights)
    except UserError:
        if weights != "teacher":
            raise
        net, config = load_student(checkpoint, weights="student")  # a `sup` run has no teacher
        weights = "student"
    if not isinstance(options, TargetOptions):
        options = TargetOptions.from_config(config, **(options or {}))
    out = Path(out)
    if case_ids is None:
        case_ids = [c for c in dataset.case_ids if c in set(cache.case_ids)]
    report = PseudoLabelReport()
    n_overlays = -(-n_overlays // world.size)
    mine = my_cases(case_ids, lambda c: len(cache.slices(c)), world)
    for case_id in tqdm(mine, desc="pseudo-label", unit="case", disable=not (progress and world.leader),
                        dynamic_ncols=True):
        image = dataset.load(case_id, with_label=False).image
        cache.check_source(case_id, image)
        prob = predict_case(net, image, config, slices=cache.slices(case_id))  # SAM sees only the cached slices
        targets = case_targets(case_id, prob, cache, backend, options)
        volume = np.zeros(image.shape, dtype=np.uint8)
        volume[:, :, targets.slices] = targets.target()
        report.outputs.append(str(dataset.write_mask(case_id, volume, out)))
        label = dataset.load(case_id, with_label=True).label if dataset.has_labels else None
        if label is None:
            continue
        report.rows.append(score_targets(targets, label))
        kept = np.flatnonzero(targets.kept)
        if len(report.overlays) < n_overlays and kept.size:
            s = kept[kept.size // 2]
            z = targets.slices[s]
            report.overlays.append(str(overlay(image[:, :, z], out / "overlays" / f"{case_id}_z{z}.png",
                                               targets.sam[:, :, s], label[:, :, z])))
    report = report.merged(world, case_ids)
    if report is None:
        return None
    meta = {"prompt": "teacher", "run": str(run), "checkpoint": str(checkpoint), "weights": weights,
            "options": options.as_dict(), "model": backend.model, "overlays": report.overlays}
    report.summary = write_results(report.rows, out / "report.json", meta)  # (no labels: the targets' record)
    return report
