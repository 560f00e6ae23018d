"""SAM's coordinate frame in one place, as segment-anything's ResizeLongestSide is: prompts from masks or boxes in a
slice's pixels -> SAM's input frame (longest side scaled to the model's input size, aspect kept, padded
bottom/right) -> the decoder -> logits back at the slice's size (or a canvas's) and SAM's IoU prediction.

Every SAM chain goes through `SamPrompter`: the rounds' and `pseudo-label`'s targets (`sam_targets.py`), box
segmentation (`segment.py`), the per-step SAM term (`train/sam_term.py`), the parity gate's prompts
(`export/parity.py`), and the decoder adaptation's prompts and masks (`adapt.py`).

Conventions: boxes are (x0, y0, x1, y1) and points (x, y) = (column, row) (`prompts.py`); a box margin is in
SAM-input pixels, added after scaling, so it means the same to SAM whatever the slice size, and the grown box is
clipped to the resized image (not the padding).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .models import get_spec
from .models.preprocess import Frame
from .prompts import box_prompts, mask_to_points, masks_to_boxes, point_prompts
from .target_options import BOX_MARGIN  # the one margin (declared where the CLI reads it without torch)

if TYPE_CHECKING:
    from .backends import Backend


Prompts = tuple[torch.Tensor, torch.Tensor]  # SAM's (coords (N, 1, P, 2), labels (N, 1, P)), one prompt per row


def low_res_extent(frame: Frame, side: int) -> tuple[int, int]:
    """Rows and columns of SAM's side x side low-res grid (which covers the padded input) that hold the image."""
    ratio = side / frame.image_size
    rh, rw = frame.resized
    return max(1, int(round(rh * ratio))), max(1, int(round(rw * ratio)))


def masks_to_original(low_res: torch.Tensor, frame: Frame, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Low-res logits (..., 256, 256) covering the padded input -> logits (..., H, W) of the original slice, or
    stretched to `size` (a resized canvas of the whole slice, as the 2D student sees it)."""
    lead = low_res.shape[:-2]
    x = low_res.reshape(-1, 1, *low_res.shape[-2:]).float()
    ch, cw = low_res_extent(frame, low_res.shape[-1])  # crop to the part that holds the image first
    x = x[..., :ch, :cw]
    size = size or (frame.height, frame.width)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.reshape(*lead, *size)


def mask_to_low_res(mask: np.ndarray, frame: Frame, side: int) -> torch.Tensor:
    """A slice's mask (H, W) in SAM's low-res frame (side x side, covering the padded input): the inverse of
    `masks_to_original`, as a soft mask."""
    ch, cw = low_res_extent(frame, side)
    x = torch.from_numpy(mask.astype(np.float32))[None, None]
    x = F.interpolate(x, size=(ch, cw), mode="bilinear", align_corners=False)[0, 0]
    return F.pad(x, (0, side - cw, 0, side - ch))


class SamPrompter:
    """One model input size and one box margin: slices' boxes, points and masks in, SAM's prompts, and with a
    `backend` SAM's decoded logits at slice or canvas size out."""

    def __init__(self, image_size: int, margin: float = BOX_MARGIN, backend: Backend | None = None) -> None:
        self.image_size = image_size
        self.margin = margin
        self.backend = backend

    @classmethod
    def of(cls, backend: Backend, margin: float = BOX_MARGIN) -> SamPrompter:
        """The prompter of a backend's model, decoding through it."""
        return cls(get_spec(backend.model).image_size, margin, backend)

    def frame(self, height: int, width: int) -> Frame:
        return Frame(height, width, self.image_size)

    # --- slice pixels -> SAM's input frame ------------------------------------------------------------------------

    def boxes_to_input(self, boxes: torch.Tensor, frame: Frame) -> torch.Tensor:
        """Boxes (..., 4) in the slice's pixels -> SAM's input frame, grown by the margin and clipped to the resized
        image. Margin 0: only scaled (given boxes, e.g. the parity samples', are taken as they are)."""
        boxes = boxes * frame.scale
        if not self.margin:
            return boxes
        rh, rw = frame.resized
        limit = torch.tensor([rw - 1, rh - 1, rw - 1, rh - 1], dtype=boxes.dtype, device=boxes.device)
        return self._grow_and_clip(boxes, limit)

    def box_on_slice(self, boxes: torch.Tensor, frame: Frame) -> torch.Tensor:
        """The box SAM is given (margin and clipping included), back in the slice's pixels (float)."""
        return self.boxes_to_input(boxes, frame) / frame.scale

    def points_to_input(self, points: torch.Tensor, frame: Frame) -> torch.Tensor:
        """Points (..., 2) as (x, y) in the slice's pixels -> SAM's input frame."""
        return points * frame.scale

    def _grow_and_clip(self, boxes: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
        """The margin added to boxes already in SAM's input frame, clipped to [0, limit]."""
        grow = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=boxes.dtype, device=boxes.device) * self.margin
        return torch.minimum((boxes + grow).clamp(min=0), limit)

    # --- prompts --------------------------------------------------------------------------------------------------

    def box_prompts(self, boxes: torch.Tensor, frames: Frame | list[Frame]) -> Prompts:
        """One box (N, 4) per row, in the pixels of its slice (one frame for all rows, or one per row)."""
        if isinstance(frames, Frame):
            return box_prompts(self.boxes_to_input(boxes, frames)[:, None])
        return box_prompts(torch.stack([self.boxes_to_input(b, f) for b, f in zip(boxes, frames)])[:, None])

    def prompts_from_masks(self, masks: np.ndarray | torch.Tensor, frame: Frame, kind: str = "box") -> Prompts:
        """One prompt per slice mask (N, H, W), each with foreground: its box ("box") or its most interior point and
        a negative inside its box ("point")."""
        masks = torch.as_tensor(masks).bool()
        if kind == "point":
            points, labels, _ = mask_to_points(masks.float(), n_positive=1, n_negative=1)
            return point_prompts(self.points_to_input(points, frame)[:, None], labels[:, None])
        return self.box_prompts(masks_to_boxes(masks)[0], frame)

    def canvas_prompts(self, prob: torch.Tensor, frames: list[Frame], kind: str = "box",
                       threshold: float = 0.5) -> Prompts:
        """One prompt per canvas (N, Hc, Wc) of probabilities, each a (possibly stretched) picture of a whole slice
        with foreground above `threshold`; `frames`: each row's slice. Computed on the CPU in float32 per row (the
        per-step term's arithmetic; its box is clipped to the unrounded resized extent, under half a SAM-input
        pixel from a slice frame's rounded one: kept so trained weights do not move)."""
        hc, wc = prob.shape[-2:]
        hw = torch.tensor([[f.height, f.width] for f in frames], dtype=torch.float32)
        to_input = self.image_size / hw.max(dim=1, keepdim=True).values
        sx, sy = hw[:, 1:2] / wc * to_input, hw[:, 0:1] / hc * to_input  # canvas -> slice -> SAM input
        if kind == "point":
            points, labels, _ = mask_to_points(prob.cpu(), 1, 1, threshold)
            return point_prompts((points * torch.stack([sx, sy], dim=-1))[:, None], labels[:, None])
        boxes, _ = masks_to_boxes(prob > threshold)
        scaled = boxes.cpu() * torch.cat([sx, sy, sx, sy], dim=1)
        return box_prompts(self._grow_and_clip(scaled, (hw.flip(1) * to_input - 1).repeat(1, 2))[:, None])

    # --- decoding -------------------------------------------------------------------------------------------------

    def decode(self, embeddings: torch.Tensor, prompts: Prompts, frames: Frame | list[Frame],
               size: tuple[int, int] | None = None, device: str | torch.device | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder call -> SAM's logits (N, H, W) at the slice's size (one frame for all rows), or (N, *size)
        on canvases of `size` (frames per row; one resize per distinct slice size), and its IoU prediction (N,).
        The logits are resized on `device` (default: the decoder's), the IoU stays on the decoder's."""
        if self.backend is None:
            raise ValueError("this SamPrompter has no backend to decode with")
        low_res, iou = self.backend.decode(embeddings, *prompts)
        low_res = low_res[:, 0, 0]
        if device is not None:
            low_res = low_res.to(device=device, dtype=torch.float32)
        if isinstance(frames, Frame):
            return masks_to_original(low_res, frames, size), iou[:, 0, 0]
        if size is None and len({(f.height, f.width) for f in frames}) > 1:
            raise ValueError("slices of several sizes decode onto canvases of one `size`")
        out = torch.empty(len(frames), *(size or (frames[0].height, frames[0].width)), device=low_res.device)
        for frame in dict.fromkeys(frames):  # a data set's slices mostly share one size
            rows = [row for row, other in enumerate(frames) if other == frame]
            out[rows] = masks_to_original(low_res[rows], frame, size)
        return out, iou[:, 0, 0]

    def decode_from_masks(self, embeddings: torch.Tensor, masks: np.ndarray | torch.Tensor, frame: Frame,
                          kind: str = "box") -> torch.Tensor:
        """One prompt per slice from its mask (N, H, W) -> SAM's logits (N, H, W) at slice size, on the backend's
        device; one decoder call. The caller passes only slices whose mask has foreground."""
        return self.decode(embeddings, self.prompts_from_masks(masks, frame, kind), frame)[0]
