"""SAM's mask decoder adapted to the task on the LABELLED cases' cached embeddings (`semisam-fast adapt`).

The image encoder stays frozen, so nothing is re-encoded: the cache already holds every embedding the decoder needs.
Each step draws cached slices of the labelled cases that hold foreground, prompts SAM with the label's box perturbed
the way a teacher's box is wrong (its sides scaled by 0.8-1.4, its centre shifted by up to 10 px), and trains the
mask decoder (prompt encoder and image encoder frozen) with 0.5 BCE + 0.5 soft Dice against the label in SAM's
low-res frame. Only the cases passed as `labelled` are ever read with their labels.

The result is a whole SAM checkpoint (`adapted.pth`: the model's weights with the new mask decoder, plus
`adapted_from`: the checkpoint whose encoder it shares), so it goes wherever a checkpoint goes: `export --checkpoint`
(decoder ONNX + sidecar + parity gate), the torch backend, `train` and `pseudo-label`. Embeddings made with the
base checkpoint serve it, since its encoder is the same (`LoadedModel.encoder_checkpoint_sha256`).

Guard against overfitting two volumes: with two or more labelled cases the decoder is also adapted with one case
held out, and that case's Dice from loose and from teacher-like boxes is reported before and after.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .cache import EmbeddingCache
from .data import Dataset
from .errors import UserError
from .fsutil import atomic_write, write_json
from .models import Frame, LoadedModel, load_model
from .prompter import BOX_MARGIN, SamPrompter, mask_to_low_res, masks_to_original
from .prompts import mask_to_box
from .target_options import ADAPT_BOX_SCALE

ADAPTED_NAME = "adapted.pth"
LOOSE_PX = 15.0  # "loose" boxes in the report: the label box grown by this many slice pixels per side


@dataclass(frozen=True)
class AdaptOptions:
    steps: int = 150
    batch: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-4
    scale: tuple[float, float] = ADAPT_BOX_SCALE  # box side length, relative to the label box's
    shift: float = 10.0  # box centre shift, slice pixels (a teacher's box is off by about this much on LA)
    margin: float = BOX_MARGIN  # SAM-input pixels added to every box, as the rounds do
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi < float("inf"):
            raise UserError(f"--box-scale needs 0 < LO <= HI (finite), got {lo:g} {hi:g}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Example:
    """One cached labelled slice with foreground: where its embedding is and its label (H, W) bool."""

    case_id: str
    z: int
    label: np.ndarray


def labelled_examples(dataset: Dataset, cache: EmbeddingCache, labelled: list[str]) -> list[Example]:
    """Cached slices of the labelled cases whose label has foreground. Reads labels of `labelled` only."""
    examples = []
    for case_id in labelled:
        slices = cache.slices(case_id) if case_id in cache.case_ids else []
        if not slices:
            raise UserError(f"labelled case {case_id} is not in the cache {cache.root}; run `semisam-fast embed` over "
                            "the labelled cases too (adapt trains on their cached embeddings)")
        label = dataset.load_labelled(case_id).label > 0
        examples += [Example(case_id, z, label[:, :, z]) for z in slices if label[:, :, z].any()]
    if not examples:
        raise UserError("the labelled cases have no cached slice with foreground: nothing to adapt on")
    return examples


def perturb_box(box: np.ndarray, shape: tuple[int, int], rng: np.random.Generator, options: AdaptOptions) -> np.ndarray:
    """A label box (x0, y0, x1, y1) made as wrong as a teacher's: sides scaled, centre shifted, clipped."""
    h, w = shape
    centre = (box[:2] + box[2:]) / 2 + rng.uniform(-options.shift, options.shift, 2)
    half = (box[2:] - box[:2] + 1) / 2 * rng.uniform(*options.scale, 2)
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half, [w - 1, h - 1])
    return np.concatenate([lo, np.maximum(hi, lo + 1)]).astype(np.float32)


def _decode(model: LoadedModel, embeddings: torch.Tensor, boxes: list[np.ndarray], frames: list[Frame],
            margin: float) -> torch.Tensor:
    """Low-res logits (N, side, side), one box per slice; differentiable in the decoder's weights (so the decoder
    is called here, not through the prompter's backend)."""
    prompter = SamPrompter(model.spec.image_size, margin)
    coords, labels = prompter.box_prompts(torch.from_numpy(np.stack(boxes)), frames)
    side = 4 * embeddings.shape[-1]
    low_res, _ = model.decoder(embeddings, coords, labels, torch.zeros(1, 1, 1, side, side), torch.zeros(1))
    return low_res[:, 0, 0]


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 BCE + 0.5 soft Dice per slice, averaged."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(1, 2)) + target.sum(dim=(1, 2)) + 1)
    return 0.5 * bce + 0.5 * dice.mean()


def train_decoder(model: LoadedModel, cache: EmbeddingCache, examples: list[Example], options: AdaptOptions,
                  progress: bool = True) -> list[float]:
    """Fine-tune `model.decoder`'s mask decoder in place on `examples`; returns the loss per step."""
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    side = model.spec.low_res_side
    decoder = model.decoder.mask_decoder
    for p in model.decoder.parameters():
        p.requires_grad_(False)
    for p in decoder.parameters():
        p.requires_grad_(True)
    optimiser = torch.optim.AdamW(decoder.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    model.decoder.train()
    losses = []
    for _ in tqdm(range(options.steps), desc="adapt", unit="step", disable=not progress, dynamic_ncols=True):
        picks = [examples[i] for i in rng.integers(0, len(examples), options.batch)]
        frames = [Frame(*e.label.shape, model.spec.image_size) for e in picks]
        boxes = [perturb_box(mask_to_box(e.label), e.label.shape, rng, options) for e in picks]
        embeddings = cache.gather([(e.case_id, e.z) for e in picks]).float()
        target = torch.stack([mask_to_low_res(e.label, f, side) for e, f in zip(picks, frames)])
        loss = _loss(_decode(model, embeddings, boxes, frames, options.margin), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    model.decoder.eval()
    for p in model.decoder.parameters():
        p.requires_grad_(False)
    return losses


@torch.no_grad()
def box_dice(model: LoadedModel, cache: EmbeddingCache, examples: list[Example], boxes: list[np.ndarray],
             margin: float, batch: int = 32) -> float:
    """Dice of SAM's masks from `boxes` (one per example) against the examples' labels, pooled over the slices."""
    inter = total = 0.0
    for start in range(0, len(examples), batch):
        chunk, chunk_boxes = examples[start:start + batch], boxes[start:start + batch]
        frames = [Frame(*e.label.shape, model.spec.image_size) for e in chunk]
        low_res = _decode(model, cache.gather([(e.case_id, e.z) for e in chunk]).float(), chunk_boxes, frames, margin)
        for logits, e, f in zip(low_res, chunk, frames):
            mask = (masks_to_original(logits, f) > 0).numpy()
            inter += float(np.logical_and(mask, e.label).sum())
            total += float(mask.sum() + e.label.sum())
    return 2 * inter / total if total else float("nan")


def report_boxes(examples: list[Example], options: AdaptOptions, seed: int = 12345) -> dict[str, list[np.ndarray]]:
    """The boxes the held-out report scores: loose (label box + 15 px a side) and teacher-like (perturbed)."""
    rng = np.random.default_rng(seed)
    return {"loose": [mask_to_box(e.label, LOOSE_PX) for e in examples],
            "perturbed": [perturb_box(mask_to_box(e.label), e.label.shape, rng, options) for e in examples]}


def held_out_report(model_name: str, checkpoint: str | Path | None, cache: EmbeddingCache,
                    examples: list[Example], labelled: list[str], options: AdaptOptions,
                    progress: bool = True) -> dict:
    """Leave the last labelled case out, adapt on the rest, score the held-out case before and after."""
    held = labelled[-1]
    train = [e for e in examples if e.case_id != held]
    test = [e for e in examples if e.case_id == held]
    model = load_model(model_name, checkpoint)
    boxes = report_boxes(test, options)
    before = {k: box_dice(model, cache, test, b, options.margin) for k, b in boxes.items()}
    train_decoder(model, cache, train, options, progress)
    after = {k: box_dice(model, cache, test, b, options.margin) for k, b in boxes.items()}
    return {"held_out": held, "slices": len(test), "dice_before": before, "dice_after": after}


def save_adapted(model: LoadedModel, path: Path, base: dict) -> None:
    """The whole model's weights with the adapted decoder, and what it was adapted from (read with weights_only)."""
    net_state = {f"image_encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    net_state.update({f"prompt_encoder.{k}": v for k, v in model.decoder.prompt_encoder.state_dict().items()})
    net_state.update({f"mask_decoder.{k}": v for k, v in model.decoder.mask_decoder.state_dict().items()})
    atomic_write(path, lambda tmp: torch.save({"model": net_state, "adapted_from": base}, tmp))


def adapt(dataset: Dataset, cache: EmbeddingCache, labelled: list[str], out: str | Path,
          model_name: str | None = None, checkpoint: str | Path | None = None,
          options: AdaptOptions = AdaptOptions(), holdout: bool = True, progress: bool = True) -> dict:
    """Adapt the mask decoder on `labelled` (case ids) and write `<out>/adapted.pth` and `<out>/adapt.json`."""
    model_name = model_name or cache.fingerprint["model"]
    model = load_model(model_name, checkpoint)
    if (model.spec.name, model.encoder_checkpoint_sha256) != (cache.fingerprint["model"], cache.fingerprint["checkpoint_sha256"]):
        raise UserError(f"cache {cache.root} holds embeddings of another model or checkpoint than {model_name}'s")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    examples = labelled_examples(dataset, cache, labelled)
    report: dict = {"model": model_name, "labelled": labelled, "slices": len(examples), "options": options.as_dict(),
                    "started": _dt.datetime.now(_dt.timezone.utc).isoformat()}
    if holdout and len(labelled) >= 2:
        report["held_out"] = held_out_report(model_name, checkpoint, cache, examples, labelled, options, progress)
    losses = train_decoder(model, cache, examples, options, progress)
    report["loss_first_last"] = [float(np.mean(losses[:10])), float(np.mean(losses[-10:]))]
    base = {"model": model_name, "checkpoint_sha256": model.checkpoint_sha256,
            "encoder_checkpoint_sha256": model.encoder_checkpoint_sha256, "checkpoint": str(model.checkpoint or "bundled")}
    save_adapted(model, out / ADAPTED_NAME, base)
    report["checkpoint"] = str(out / ADAPTED_NAME)
    write_json(out / "adapt.json", report)
    return report
