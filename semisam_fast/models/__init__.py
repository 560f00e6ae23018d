"""SAM-family models: registry, checkpoint loading, preprocessing, the batched prompt decoder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..fsutil import file_sha256
from .checkpoint import load_into, read_checkpoint
from .decoder import PromptDecoder
from .litemedsam import bundled_checkpoint, bundled_checkpoint_sha256
from .preprocess import Frame, preprocess
from .registry import DEFAULT_MODEL, MODELS, ModelSpec

__all__ = ["DEFAULT_MODEL", "MODELS", "Frame", "LoadedModel", "ModelSpec", "PromptDecoder", "get_spec",
           "load_model", "preprocess"]


@dataclass
class LoadedModel:
    """A SAM-family network split into the two parts the pipeline runs separately."""

    spec: ModelSpec
    encoder: nn.Module
    decoder: PromptDecoder
    checkpoint: str | None
    checkpoint_sha256: str
    # the checkpoint whose image encoder this one has: itself, or for a decoder adapted by `semisam-fast adapt` the
    # checkpoint it was adapted from (so embeddings cached with that one serve it)
    encoder_checkpoint_sha256: str = ""

    def __post_init__(self) -> None:
        self.encoder_checkpoint_sha256 = self.encoder_checkpoint_sha256 or self.checkpoint_sha256

    def preprocess(self, slices: torch.Tensor) -> torch.Tensor:
        return preprocess(slices, self.spec.image_size, self.spec.normalization)


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def load_model(name: str = DEFAULT_MODEL, checkpoint: str | Path | None = None, seed: int = 0) -> LoadedModel:
    """Build a registered model and load its weights (eval mode, CPU, fp32)."""
    spec = get_spec(name)
    if checkpoint is None and spec.checkpoint == "required":
        raise UserError(f"model '{name}' needs --checkpoint PATH (weights are not downloaded)")
    if spec.checkpoint == "random" and checkpoint is None:
        torch.manual_seed(seed)  # tiny: deterministic random init so artefacts can be checked against it
        net = spec.builder()
        sha = f"random-init-seed{seed}"
        provenance: dict = {}
    else:
        path = Path(checkpoint) if checkpoint is not None else Path(bundled_checkpoint())
        state, provenance = read_checkpoint(path)
        if provenance.get("model", name) != name:
            raise UserError(f"checkpoint {path} is a decoder adapted for '{provenance['model']}', not '{name}'")
        net = spec.builder()
        load_into(net, state, name, path)
        bundled = checkpoint is None and spec.checkpoint == "bundled"
        sha = bundled_checkpoint_sha256() if bundled else file_sha256(path)
        checkpoint = str(path)
    net.eval()
    decoder = PromptDecoder(net.prompt_encoder, net.mask_decoder).eval()
    return LoadedModel(spec, net.image_encoder, decoder, None if checkpoint is None else str(checkpoint), sha,
                       str(provenance.get("encoder_checkpoint_sha256", "")))
