"""`pseudo-label`: prompts from masks (labels, mask volumes) or from a trained run's teacher -> SAM's decoder on
cached embeddings (or, without a cache, on the encoder's embeddings of just the prompted slices, made there and then)
-> mask volumes in the input's format, with a report and overlays. The steps are others': slices are encoded by
`embed.encode_slices`, SAM is prompted through `prompter.SamPrompter` (from a teacher in `sam_targets.py`), volumes
read and masks written by the `Dataset`, the report by `results.py`."""
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
from .fsutil import check_outputs
from .metrics import class_metrics, format_table
from .models import get_spec
from .overlay import overlay
from .prompter import BOX_MARGIN, SamPrompter
from .prompts import mask_to_box
from .results import result_files, write_results
from .sam_targets import TargetOptions, case_targets, score_targets

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


def _check_outputs(dataset: Dataset, case_ids: list[str], out: Path, masks_dir: str | Path | None = None,
                   *files: Path) -> None:
    """No mask or report may land on a file this run reads (`--out DATA/images` would replace the images with
    masks): refused before the first mask is written."""
    outputs = [dataset.mask_file(c, out) for c in case_ids] + list(result_files(out / "report.json"))
    inputs = [p for c in dataset.case_ids for p in dataset.source_files(c)] + list(files)
    if masks_dir is not None:
        inputs += [dataset.mask_file(c, Path(masks_dir)) for c in case_ids]
    check_outputs(outputs, inputs)


def pseudo_label(dataset: Dataset, cache: EmbeddingCache | None, backend: Backend, out: str | Path,
                 case_ids: list[str] | None = None, prompt: str = "gt-box", masks_dir: str | Path | None = None,
                 margin: float = BOX_MARGIN, batch: int = 32, n_overlays: int = 4, progress: bool = True,
                 world: World | None = None, encoder: Backend | None = None, encoder_batch: int = 8,
                 distances: bool = True, unseen: str = "ignore") -> PseudoLabelReport | None:
    """SAM's masks from `cache`'s embeddings, or, with `encoder` instead of a cache, from that backend's embeddings
    of the prompted slices (`encoder_batch` per call; nothing is written but the masks and the report). One prompt
    per label value per slice (the box of that value's voxels); a voxel takes the value whose mask claims it most
    (a binary data set: SAM's mask). Under torchrun (`world`) each process labels its share of the cases and rank 0
    writes the merged report (and returns it; the other processes return None). `distances=False`: the report
    scores Dice and Jaccard only.

    unseen: what prompted slices the cache lacks (a cache built with `embed --every K`) get: "ignore" (the data set's
    ignore value, which the report and nnU-Net leave out), "nearest" (the mask of the nearest slice SAM labelled) or
    "encode" (`encoder` runs on them there and then). The report scores exactly the written volume, against the
    whole label, with the case's spacing (its header's, in mm; else voxels, as the report says)."""
    world = world or World()
    if prompt not in PROMPTS:
        raise UserError(f"--prompt must be one of {', '.join(PROMPTS)}, not {prompt!r}")
    if unseen not in choices.UNSEEN:
        raise UserError(f"--unseen must be one of {', '.join(choices.UNSEEN)}, not {unseen!r}")
    if prompt == "mask-box" and masks_dir is None:
        raise UserError("--prompt mask-box needs --masks DIR (mask volumes laid out as pseudo-label writes them)")
    if cache is None and encoder is None or cache is not None and encoder is not None and unseen != "encode":
        raise UserError("pseudo-label takes its embeddings from a cache (--cache) or runs the encoder, one of them")
    if cache is not None and unseen == "encode" and encoder is None:
        raise UserError("--unseen encode runs the encoder on the slices the cache lacks: give it an encoder")
    if cache is not None:
        cache.check_decoder(backend)
    if encoder is not None and ((encoder.model, encoder.encoder_checkpoint_sha256)
                                != (backend.model, backend.encoder_checkpoint_sha256)):
        raise UserError(f"the encoder ({encoder.model}) and the decoder ({backend.model}) come from different "
                        "models or checkpoints")
    spec = get_spec(backend.model)
    prompter = SamPrompter.of(backend, margin)
    if prompt == "points" and spec.prompt == "box":
        log.warning("%s was trained on box prompts: from points it gives empty masks (LiteMedSAM on the phantom: "
                    "Dice 0.0 from an interior point vs 0.99 from the label box); use gt-box", spec.name)
    out = Path(out)
    if case_ids is None:  # default: the cases of the data set that are in the cache (without one: all)
        case_ids = [c for c in dataset.case_ids if cache is None or c in set(cache.case_ids)]
    _check_outputs(dataset, case_ids, out, masks_dir)
    unlabelled = [c for c in case_ids if not dataset.has_label(c)] if prompt != "mask-box" else []
    if unlabelled:  # name every case without one, not the first case of a data set where some lack labels
        more = f" and {len(unlabelled) - 5} more" if len(unlabelled) > 5 else ""
        raise UserError(f"--prompt {prompt} builds prompts from labels, and {len(unlabelled)} cases have none: "
                        f"{', '.join(unlabelled[:5])}{more}; leave them out (--list) or use mask-box --masks")
    ignore = dataset.ignore_value
    report = PseudoLabelReport()
    n_overlays = -(-n_overlays // world.size)  # each process its share of the overlays
    mine = my_cases(case_ids, lambda c: len(cache.slices(c)) if cache is not None else dataset.num_slices(c), world)
    for case_id in tqdm(mine, desc="pseudo-label", unit="case", disable=not (progress and world.leader),
                        dynamic_ncols=True):
        case = dataset.load(case_id, with_label=dataset.has_label(case_id))
        if cache is not None:
            cache.check_source(case_id, case.image)
        source = case.label if prompt in ("gt-box", "points") else dataset.read_mask(case_id, Path(masks_dir))
        if source is None:
            raise UserError(f"case {case_id} has no label to build --prompt {prompt} from; use mask-box --masks")
        if prompt == "mask-box":
            source = np.where(source == ignore, 0, source)  # a mask volume's own ignore voxels prompt nothing
        frame = prompter.frame(case.image.shape[0], case.image.shape[1])
        depth = case.image.shape[2]
        cached = set(cache.slices(case_id)) if cache is not None else set(range(depth))
        values = [int(v) for v in np.unique(source) if v != 0]
        present = {v: np.flatnonzero((source == v).any(axis=(0, 1))) for v in values}
        pairs = sorted((int(z), v) for v in values for z in present[v])  # one prompt per (slice, label value)
        seen = [(z, v) for z, v in pairs if z in cached]
        missing = sorted({z for z, _ in pairs if z not in cached})  # prompted slices SAM has no embedding of
        decoded = seen + ([(z, v) for z, v in pairs if z not in cached] if unseen == "encode" else [])
        decoded.sort()
        volume = np.zeros(case.image.shape, dtype=np.uint8)
        best = np.zeros(case.image.shape, dtype=np.float32) if len(values) > 1 else None
        for start in range(0, len(decoded), batch):
            chunk = decoded[start:start + batch]
            zs = [z for z, _ in chunk]
            embeddings = _embeddings(case_id, case.image, zs, cache, encoder, encoder_batch)
            masks = np.stack([source[:, :, z] == v for z, v in chunk]) if len(values) > 1 else \
                source[:, :, zs].transpose(2, 0, 1)
            logits = prompter.decode_from_masks(embeddings, masks, frame, "point" if prompt == "points" else "box")
            logits = logits.float().cpu().numpy()
            if best is None:  # one label value: SAM's mask as it is
                volume[:, :, zs] = (logits > 0).transpose(1, 2, 0).astype(np.uint8) * np.uint8(values[0])
                continue
            for (z, v), logit in zip(chunk, logits):  # each voxel: the value whose prompt claims it most
                claim = (logit > 0) & (logit > best[:, :, z])
                volume[:, :, z][claim] = v
                best[:, :, z][claim] = logit[claim]
        filled = missing if unseen != "encode" else []
        if filled and unseen == "ignore":
            volume[:, :, filled] = ignore
        elif filled:  # nearest: the mask of the nearest slice SAM labelled (the lower one on a tie)
            labelled_zs = np.array(sorted({z for z, _ in decoded}))
            for z in filled:
                if labelled_zs.size:
                    volume[:, :, z] = volume[:, :, labelled_zs[np.argmin(np.abs(labelled_zs - z))]]
        report.outputs.append(str(dataset.write_mask(case_id, volume, out)))
        if case.label is not None:
            ignored = volume == ignore if unseen == "ignore" and filled else None
            spacing = case.spacing
            row = {"case": case_id, "spacing": ",".join(f"{v:g}" for v in spacing) if spacing else "voxel",
                   **class_metrics(volume, case.label, dataset.label_values, spacing, distances, ignored),
                   "slices": depth, "prompted": len(decoded), "unseen": len(missing)}
            report.rows.append(row)
            prompted = sorted({z for z, _ in decoded})
            if len(report.overlays) < n_overlays and prompted:
                z = prompted[len(prompted) // 2]
                box = prompter.box_on_slice(torch.from_numpy(mask_to_box(source[:, :, z])), frame)
                report.overlays.append(str(overlay(case.image[:, :, z], out / "overlays" / f"{case_id}_z{z}.png",
                                                   volume[:, :, z], case.label[:, :, z], [box.tolist()])))
    report = report.merged(world, case_ids)
    if report is not None and report.rows:
        meta = {"prompt": prompt, "margin": margin, "model": backend.model, "overlays": report.overlays,
                **scoring_meta(report.rows, unseen, ignore, dataset.label_values)}
        report.summary = write_results(report.rows, out / "report.json", meta)
    return report


def scoring_meta(rows: list[dict], unseen: str, ignore: int, label_values: tuple[int, ...]) -> dict:
    """What a pseudo-label report's numbers mean: they score the written files; distances in mm (from the headers)
    or voxels; what slices without an embedding got."""
    units = {"voxel" if row.get("spacing", "voxel") == "voxel" else "mm" for row in rows}
    return {"scored": "the written mask volumes, every slice, against the whole label (ignore voxels left out)",
            "distance_unit": "/".join(sorted(units)), "unseen": unseen, "ignore_value": ignore,
            "labels": list(label_values)}


def _embeddings(case_id: str, image: np.ndarray, zs: list[int], cache: EmbeddingCache | None,
                encoder: Backend | None, encoder_batch: int) -> torch.Tensor:
    """Embeddings of slices `zs` (repeats allowed) in order: the cache's rows, and the encoder's for the slices the
    cache lacks (or for all, without a cache)."""
    have = set(cache.slices(case_id)) if cache is not None else set()
    fresh = sorted({z for z in zs if z not in have})
    if not fresh:
        return cache.get(case_id, zs)
    encoded = encode_slices(encoder, image, fresh, encoder_batch)
    if len(fresh) == len(zs) and fresh == list(zs):
        return encoded
    rows = {z: encoded[i] for i, z in enumerate(fresh)}
    old = sorted({z for z in zs if z in have})
    if old:
        rows.update({z: row for z, row in zip(old, cache.get(case_id, old))})
    return torch.stack([rows[z] for z in zs])


def teacher_pseudo_label(dataset: Dataset, cache: EmbeddingCache, backend: Backend, run: str | Path,
                         out: str | Path, case_ids: list[str] | None = None,
                         options: TargetOptions | dict | None = None, weights: str = "teacher",
                         n_overlays: int = 4, progress: bool = True,
                         world: World | None = None, unseen: str = "ignore") -> PseudoLabelReport | None:
    """The SAM targets a training run's pseudo-label rounds make, for a person to inspect: a run's teacher (or
    student; for a run trained with --sam-prompt-run, that run's network, as its rounds did) predicts each case, SAM
    is prompted from it and gated (`sam_targets.case_targets`), the targets are written as mask volumes (zeros on slices without a target) with overlays; where labels exist they are read
    AFTER the targets are made, for the report only (teacher vs target Dice, precision, coverage).
    options: the run's own (from its config), with a dict's non-None entries overriding them.
    Under torchrun (`world`) the cases are shared out as in `pseudo_label`; rank 0 writes and returns the report.
    unseen: what the slices the cache lacks get (the teacher's SAM never sees them): "ignore" (the data set's ignore
    value) or "nearest" (the nearest cached slice's target)."""
    world = world or World()
    if unseen not in ("ignore", "nearest"):
        raise UserError(f"--prompt teacher prompts SAM on the cached slices only: --unseen ignore or nearest, "
                        f"not {unseen!r}")
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
    prompted_by = config.get("sam_prompt_run") if run.is_dir() else None
    if prompted_by:  # the run's rounds were prompted by a finished run's network (--sam-prompt-run): so are these
        from .checkpoints import read_run_record
        from .train.sam_rounds import prompt_network

        net, config = prompt_network(prompted_by, read_run_record(run).get("labeled_cases", []))
        weights = f"student of {prompted_by}"
    out = Path(out)
    if case_ids is None:
        case_ids = [c for c in dataset.case_ids if c in set(cache.case_ids)]
    _check_outputs(dataset, case_ids, out, None, checkpoint)
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
        missing = sorted(set(range(image.shape[2])) - set(targets.slices))
        if missing and unseen == "ignore":
            volume[:, :, missing] = dataset.ignore_value
        elif missing and len(targets.slices):
            have = np.asarray(targets.slices)
            for z in missing:
                volume[:, :, z] = volume[:, :, have[np.argmin(np.abs(have - z))]]
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
            "options": options.as_dict(), "model": backend.model, "overlays": report.overlays,
            "unseen": unseen, "ignore_value": dataset.ignore_value}
    report.summary = write_results(report.rows, out / "report.json", meta)  # (no labels: the targets' record)
    return report
