"""The SAM term of SemiSAM, on cached embeddings: no encoder call inside the training step.

student probabilities (augmented crops) -> inverse geometry into the slice canvas -> prompts (box of the predicted
foreground + margin, or points) -> prompts scaled to each slice's original frame -> decoder on cached embeddings ->
SAM's mask resized to the canvas -> the same geometry -> target in the crop frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backends import Backend
from ..cache import EmbeddingCache
from ..models import Frame, get_spec, masks_to_original, preprocess
from ..prompts import box_prompts, mask_to_points, masks_to_boxes, point_prompts
from .augment import Geometry
from .slices import SliceRef


@dataclass
class SamTargets:
    masks: torch.Tensor  # (B, crop, crop) float 0/1 in the augmented crop frame
    valid: torch.Tensor  # (B,) bool: slices that got a prompt (predicted foreground)


class SamTeacher:
    """Frozen SAM decoder (any backend) over an embedding cache, or the encoder online (`online=True`)."""

    def __init__(self, backend: Backend, cache: EmbeddingCache | None, margin: float = 4.0,
                 prompt: str | None = None, threshold: float = 0.5, online_images: dict | None = None,
                 resident: bool | None = None) -> None:
        self.backend = backend
        self.cache = cache
        self.resident = resident  # cached embeddings kept on the backend's device (EmbeddingCache.gather)
        self.spec = get_spec(backend.model)
        self.prompt = prompt or self.spec.prompt
        self.margin = margin
        self.threshold = threshold
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
        boxes, valid = masks_to_boxes(canvas > self.threshold)
        valid = valid.cpu()
        if not bool(valid.any()):
            return masks, valid
        index = valid.nonzero().flatten().tolist()
        # canvas -> each slice's model-input frame (longest side -> image_size, aspect kept)
        hw = torch.tensor([[refs[i].height, refs[i].width] for i in index], dtype=torch.float32)
        to_input = self.spec.image_size / hw.max(dim=1, keepdim=True).values
        sx, sy = hw[:, 1:2] / wc * to_input, hw[:, 0:1] / hc * to_input
        if self.prompt == "point":
            points, labels, _ = mask_to_points(canvas[index].cpu(), 1, 1, self.threshold)
            coords, labels = point_prompts((points * torch.stack([sx, sy], dim=-1))[:, None], labels[:, None])
        else:
            # the margin is in SAM-input pixels, added after scaling, clipped to each slice's resized image
            scaled = boxes[index].cpu() * torch.cat([sx, sy, sx, sy], dim=1)
            grown = scaled + torch.tensor([-1.0, -1.0, 1.0, 1.0]) * self.margin
            limit = (hw.flip(1) * to_input - 1).repeat(1, 2)
            coords, labels = box_prompts(torch.minimum(grown.clamp(min=0), limit)[:, None])
        low_res, _ = self.backend.decode(self.embeddings([refs[i] for i in index]), coords, labels)
        low_res = low_res[:, 0, 0].to(device=canvas.device, dtype=torch.float32)
        # one resize per distinct slice size (a dataset's slices mostly share one)
        sizes = [(refs[i].height, refs[i].width) for i in index]
        for size in dict.fromkeys(sizes):
            rows = [row for row, other in enumerate(sizes) if other == size]
            resized = masks_to_original(low_res[rows], Frame(*size, self.spec.image_size), size=(hc, wc))
            masks[[index[row] for row in rows]] = (resized > 0).to(masks.dtype)
        return masks, valid

    def targets(self, fg_prob: torch.Tensor, geometries: list[Geometry], refs: list[SliceRef],
                canvas_size: int) -> SamTargets:
        """2D: student probabilities on augmented crops -> SAM targets in the same crops, on the student's device."""
        canvas = torch.stack([g.invert(p, canvas_size) for g, p in zip(geometries, fg_prob.detach().float())])
        masks, valid = self.canvas_masks(canvas, refs)
        return SamTargets(torch.stack([g.apply(m) for g, m in zip(geometries, masks)]), valid)
