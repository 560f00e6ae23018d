"""Loading checkpoints safely and saying which model type a checkpoint fits."""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoints import load_plain
from ..errors import UserError
from .sam import TINY_CONFIG, VIT_CONFIGS

# which ViT a state dict holds, by its encoder's width and depth (the configs' own numbers)
_VIT_BY_DIM_DEPTH = {**{(dim, depth): name for name, (dim, depth, _, _) in VIT_CONFIGS.items()},
                     TINY_CONFIG[:2]: "tiny"}
_VIT_BY_DIM_DEPTH[VIT_CONFIGS["vit_b"][:2]] = "vit_b (or medsam)"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """SAM weights (`checkpoints.load_plain`: weights_only); unwraps {"model": ...} / {"state_dict": ...}; one clear
    error otherwise."""
    return read_checkpoint(path)[0]


def read_checkpoint(path: str | Path, mmap: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, provenance): provenance is the `adapted_from` record of a decoder adapted by `semisam-fast
    adapt` (the checkpoint whose encoder it shares), else {}. mmap: the tensors are not read (`load_plain`)."""
    state = load_plain(path, mmap=mmap)
    provenance = {}
    if isinstance(state, dict):
        if isinstance(state.get("adapted_from"), dict):
            provenance = state["adapted_from"]
        for key in ("model", "state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"checkpoint {path} holds no state dict of tensors")
    return state, provenance


def is_adapted(path: str | Path) -> bool:
    """Whether a checkpoint is a decoder adapted by `semisam-fast adapt` (it records the checkpoint it came from)."""
    return bool(read_checkpoint(path, mmap=True)[1])  # mapped: the weights are read once, by the backend


def identify(state: dict[str, torch.Tensor]) -> str | None:
    """Which registered architecture a state dict fits, from its shapes; None when none."""
    if any(key.startswith("image_encoder.patch_embed.seq") for key in state):
        return "litemedsam"
    proj = state.get("image_encoder.patch_embed.proj.weight")
    if proj is None:
        return None
    depth = len({key.split(".")[2] for key in state if key.startswith("image_encoder.blocks.")})
    return _VIT_BY_DIM_DEPTH.get((int(proj.shape[0]), depth))


def load_into(net: torch.nn.Module, state: dict[str, torch.Tensor], model_name: str, path: str | Path) -> None:
    """Strict load; when it does not fit, name the model type the checkpoint does fit."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError:
        fits = identify(state)
        hint = f"it fits '{fits}'" if fits else "it fits none of the registered models"
        raise UserError(f"checkpoint {path} does not fit model '{model_name}': {hint}") from None
