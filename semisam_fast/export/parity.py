"""The parity gate: an artefact is only as good as its agreement with the torch reference on real images."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..artefact import read_sidecar
from ..errors import UserError
from ..models import LoadedModel, load_model
from ..prompter import SamPrompter
from ..samples import Samples, load_samples

# bf16 keeps 8 bits of mantissa: it is gated as the other reduced precision, int8 (the design's 0.97)
DEFAULT_IOU = {"fp32": 0.99, "fp16": 0.99, "bf16": 0.97, "int8": 0.97}
BATCH_REL_L2 = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 1e-2, "int8": 1e-2}


class ParityError(UserError):
    """The artefact disagrees with the torch reference beyond the threshold."""


@dataclass
class ParityReport:
    part: str
    precision: str
    samples: str
    mask_iou: float
    mask_iou_min: float
    threshold: float
    figures: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.mask_iou >= self.threshold and self.figures.get("batch_consistent", True)

    def as_dict(self) -> dict:
        return {"part": self.part, "precision": self.precision, "samples": self.samples, "mask_iou": self.mask_iou,
                "mask_iou_min": self.mask_iou_min, "threshold": self.threshold, "passed": self.passed,
                **self.figures}

    def summary(self) -> str:
        extras = ", ".join(f"{k} {v:.3g}" for k, v in self.figures.items() if isinstance(v, float))
        return f"{self.part} {self.precision}: mask IoU {self.mask_iou:.4f} (min {self.mask_iou_min:.4f}), {extras}"


def _errors(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[float, float]:
    diff = (candidate.float() - reference.float())
    return float(diff.abs().max()), float(diff.norm() / reference.float().norm().clamp_min(1e-12))


def _ious(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Pooled IoU over all masks (logits > 0) and the worst single mask."""
    a, b = a > 0, b > 0
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    per_mask = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return float(inter.sum() / union.sum().clamp_min(1)), float(per_mask.min())


def _prompts(samples: Samples, model: LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples' label boxes as SAM's prompts (they carry their own margin: none is added)."""
    prompter = SamPrompter(model.spec.image_size, margin=0.0)
    return prompter.box_prompts(samples.boxes, prompter.frame(samples.slices.shape[1], samples.slices.shape[2]))


def check_encoder(backend, reference: LoadedModel, samples: Samples, precision: str,
                  threshold: float) -> ParityReport:
    # 1024-input ViTs hold ~1 GB of attention per image: keep their batch check at 2 images so export fits in RAM
    keep = 2 if reference.spec.image_size >= 1024 else len(samples.slices)
    images = reference.preprocess(samples.slices[:keep])
    coords, labels = _prompts(samples, reference)
    coords, labels = coords[:keep], labels[:keep]
    with torch.inference_mode():
        ref_emb = torch.cat([reference.encoder(image[None]) for image in images])
        side = reference.spec.low_res_side
        zeros = torch.zeros(len(images), 1, 1, side, side)
        ref_masks, _ = reference.decoder(ref_emb, coords, labels, zeros, torch.zeros(1))
        emb = backend.encode(images).cpu()
        masks, _ = reference.decoder(emb, coords, labels, zeros, torch.zeros(1))
    singles = torch.cat([backend.encode(images[i:i + 1]).cpu() for i in range(len(images))])
    max_abs, rel = _errors(ref_emb, emb)
    batch_abs, batch_rel = _errors(singles, emb)
    iou, iou_min = _ious(ref_masks, masks)
    figures = {"embedding_max_abs": max_abs, "embedding_rel_l2": rel, "batch_vs_single_max_abs": batch_abs,
               "batch_vs_single_rel_l2": batch_rel, "batch_size": len(images),
               "batch_consistent": batch_rel <= BATCH_REL_L2.get(precision, 1e-2)}
    return ParityReport("encoder", precision, samples.source, iou, iou_min, threshold, figures)


def check_decoder(backend, reference: LoadedModel, samples: Samples, precision: str,
                  threshold: float) -> ParityReport:
    images = reference.preprocess(samples.slices)
    coords, labels = _prompts(samples, reference)
    n = len(images)
    with torch.inference_mode():
        emb = torch.cat([reference.encoder(image[None]) for image in images])
        no_mask = torch.zeros(n, 1, 1, reference.spec.low_res_side, reference.spec.low_res_side)
        ref_masks, ref_iou = reference.decoder(emb, coords, labels, no_mask, torch.zeros(1))
    masks, iou_pred = (t.cpu() for t in backend.decode(emb, coords, labels))
    # the same prompts one at a time: batching must not change a mask
    looped = torch.cat([backend.decode(emb[i:i + 1], coords[i:i + 1], labels[i:i + 1])[0].cpu() for i in range(n)])
    max_abs, rel = _errors(ref_masks, masks)
    batch_abs, batch_rel = _errors(looped, masks)
    iou, iou_min = _ious(ref_masks.flatten(0, 2), masks.flatten(0, 2))
    figures = {"mask_logit_max_abs": max_abs, "mask_logit_rel_l2": rel, "iou_pred_max_abs": _errors(ref_iou, iou_pred)[0],
               "batch_vs_single_max_abs": batch_abs, "batch_vs_single_rel_l2": batch_rel, "batch_size": n,
               "batch_consistent": batch_rel <= BATCH_REL_L2.get(precision, 1e-2)}
    return ParityReport("decoder", precision, samples.source, iou, iou_min, threshold, figures)


def verify_artefact(artefact: str | Path, checkpoint: str | Path | None = None, threshold: float | None = None,
                    samples: Samples | None = None, reference: LoadedModel | None = None,
                    data: str | Path | None = None, runtime: str | None = None,
                    precision: str | None = None) -> ParityReport:
    """Run the gate on an exported artefact against the torch model it was exported from. `runtime`: a format of
    `formats.FORMATS` that runs this kind of file (`runtime="openvino"` gates the fp32 ONNX file as OpenVINO runs it,
    in `precision`, fp32 or bf16); by default the file's suffix decides."""
    from ..backends import open_artefact

    meta = read_sidecar(artefact)
    if reference is None:
        ckpt = checkpoint if checkpoint is not None else meta.get("checkpoint")
        reference = load_model(meta["model"], ckpt)
    if reference.checkpoint_sha256 != meta["checkpoint_sha256"]:
        raise UserError(f"{artefact} was exported from checkpoint sha256 {meta['checkpoint_sha256'][:12]}..., "
                        f"the reference is {reference.checkpoint_sha256[:12]}...")
    samples = samples or load_samples(4, data)
    backend = open_artefact(artefact, runtime=runtime, precision=precision)
    precision = backend.precision  # openvino's compute precision; the others run the file's own
    threshold = DEFAULT_IOU.get(precision, 0.99) if threshold is None else threshold
    check = check_encoder if meta["part"] == "encoder" else check_decoder
    return check(backend, reference, samples, precision, threshold)


def enforce(report: ParityReport) -> None:
    """Raise ParityError (exit code 2 in the CLI) saying by how much the gate was missed."""
    if report.passed:
        return
    if report.mask_iou < report.threshold:
        raise ParityError(f"parity gate failed for the {report.part}: mask IoU {report.mask_iou:.4f} < "
                          f"{report.threshold} (short by {report.threshold - report.mask_iou:.4f})")
    raise ParityError(f"parity gate failed for the {report.part}: batch of {report.figures['batch_size']} differs "
                      f"from single-image runs (rel L2 {report.figures['batch_vs_single_rel_l2']:.3g})")
