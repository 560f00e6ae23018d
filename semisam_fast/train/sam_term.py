"""The per-step SAM term of SemiSAM (`sam_mode="step"`), 2D and 3D, on cached embeddings (or the encoder online).

2D: student probabilities (augmented crops) -> inverse geometry into the slice canvas -> prompts (box of the
predicted foreground + margin, or points) -> prompts scaled to each slice's original frame -> decoder on cached
embeddings -> SAM's mask resized to the canvas -> the same geometry -> target in the crop frame. The frame maths
(canvas -> slice -> SAM input and back) are `prompter.SamPrompter`'s.
3D: the same per axial slice of each patch, the canvas being the whole slice with the patch window filled in.
The default, pseudo-label rounds, is in `sam_rounds.py` (targets made every R iterations, read in the step).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backends import Backend
from ..cache import EmbeddingCache
from ..geometry.augment import Transform2D
from ..geometry.slices2d import SliceRef
from ..models import get_spec, preprocess
from ..prompter import BOX_MARGIN, SamPrompter


@dataclass
class SamTargets:
    masks: torch.Tensor  # (B, crop, crop) float 0/1 in the augmented crop frame
    valid: torch.Tensor  # (B,) bool: slices that got a prompt (predicted foreground)


class SamTeacher:
    """Frozen SAM decoder (any backend) over an embedding cache, or with the encoder run online on the original
    slices (`online_images`, the official code's way; for benchmarks). Prompts are the model's own kind (box or
    points, `ModelSpec.prompt`) from the probability map thresholded at 0.5."""

    threshold = 0.5

    def __init__(self, backend: Backend, cache: EmbeddingCache | None, margin: float = BOX_MARGIN,
                 online_images: dict | None = None, resident: bool | None = None) -> None:
        self.backend = backend
        self.cache = cache
        self.resident = resident  # cached embeddings kept on the backend's device (EmbeddingCache.gather)
        self.spec = get_spec(backend.model)
        self.prompt = self.spec.prompt
        self.prompter = SamPrompter.of(backend, margin)  # SAM's frame: canvas -> slice -> SAM input and back
        self.online_images = online_images  # case_id -> (H,W,Z) original volume, for --sam-online

    def embeddings(self, refs: list[SliceRef]) -> torch.Tensor:
        if self.online_images is not None:  # the official code's way: the encoder runs every step
            # one slice at a time into the model's square input: cases (so slices) differ in size
            inputs = [preprocess(torch.from_numpy(self.online_images[r.case_id][:, :, r.z]).float()[None],
                                 self.spec.image_size, self.spec.normalization) for r in refs]
            return self.backend.encode(torch.cat(inputs))
        return self.cache.gather([(r.case_id, r.z) for r in refs], self.backend.device, self.resident)

    @torch.no_grad()
    def canvas_masks(self, canvas: torch.Tensor, refs: list[SliceRef]) -> tuple[torch.Tensor, torch.Tensor]:
        """Student probabilities on slice canvases (B,Hc,Wc) — each a (possibly stretched) image of the whole
        original slice — -> SAM's binary masks on the same canvases (same device), and which slices got a prompt."""
        b, hc, wc = canvas.shape
        masks = canvas.new_zeros(b, hc, wc)
        valid = (canvas > self.threshold).flatten(1).any(dim=1).cpu()
        if not bool(valid.any()):
            return masks, valid
        index = valid.nonzero().flatten().tolist()
        frames = [self.prompter.frame(refs[i].height, refs[i].width) for i in index]
        prompts = self.prompter.canvas_prompts(canvas[index], frames, self.prompt, self.threshold)
        embeddings = self.embeddings([refs[i] for i in index])
        logits, _ = self.prompter.decode(embeddings, prompts, frames, size=(hc, wc), device=canvas.device)
        masks[index] = (logits > 0).to(masks.dtype)
        return masks, valid

    def targets(self, fg_prob: torch.Tensor, transforms: list[Transform2D], refs: list[SliceRef],
                canvas_size: int) -> SamTargets:
        """2D: student probabilities on augmented crops -> SAM targets in the same crops, on the student's device."""
        canvas = torch.stack([g.invert(p, canvas_size) for g, p in zip(transforms, fg_prob.detach().float())])
        masks, valid = self.canvas_masks(canvas, refs)
        return SamTargets(torch.stack([g.apply(m) for g, m in zip(transforms, masks)]), valid)

    @torch.no_grad()
    def targets_3d(self, fg_prob: torch.Tensor, refs: list) -> tuple[torch.Tensor, torch.Tensor]:
        """3D: SAM per axial slice of each unlabelled patch. Each slice's canvas is the whole original slice (zeros
        outside the patch window); SAM's mask is cut back to the window. Slices outside the cache get no term."""
        masks = torch.zeros_like(fg_prob)
        valid = torch.zeros(fg_prob.shape[0], fg_prob.shape[-1], dtype=torch.bool)
        for b, (case_id, z0, y0, x0, h, w, depth) in enumerate(refs):
            cached = set(self.cache.slices(case_id)) if self.cache is not None else set(range(depth))
            zs = [z for z in range(fg_prob.shape[-1]) if z0 + z < depth and z0 + z in cached]
            if not zs:
                continue
            ph, pw = min(fg_prob.shape[1], h - y0), min(fg_prob.shape[2], w - x0)
            canvas = fg_prob.new_zeros(len(zs), h, w, dtype=torch.float32)
            canvas[:, y0:y0 + ph, x0:x0 + pw] = fg_prob[b, :ph, :pw, zs].permute(2, 0, 1).float()
            slice_refs = [SliceRef(case_id, z0 + z, h, w) for z in zs]
            canvas_masks, ok = self.canvas_masks(canvas, slice_refs)
            masks[b, :ph, :pw, zs] = canvas_masks[:, y0:y0 + ph, x0:x0 + pw].permute(1, 2, 0).to(masks)
            valid[b, zs] = ok
        return masks, valid
