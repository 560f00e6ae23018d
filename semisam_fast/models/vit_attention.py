"""SAM ViT attention through torch's `scaled_dot_product_attention` (a fused kernel where the device has one).

segment-anything's `Attention` adds decomposed relative positions to the score matrix,
    score[i, j] = scale q_i.k_j + q_i.Rh[h_i, h_j] + q_i.Rw[w_i, w_j],
and its forward materialises the (N, N) scores per head (4096 x 4096 in ViT-B's global blocks), adds the two terms
(each a broadcast over a new N x N tensor), softmaxes and multiplies. Here the two position terms are summed once into
an additive mask and SDPA does the rest in one fused kernel (CPU: flash attention with a mask; CUDA: the
memory-efficient kernel, the one that takes a mask), so the scores and their softmax are never stored.

Measured (bench/vit_sdpa.py; 2 AVX-512 cores, batch 1, ViT-B): fp32 1.25-1.29x segment-anything's forward, bf16
0.99-1.02x. Folding the position terms into widened q and k (no mask, so flash on CUDA could run) was tried: it
triples the score matmul's width, and in bf16 on the CPU it ran at 0.86x a global block against the mask's 1.12x
(one-off script).

The module replaces segment-anything's in place with the same parameters under the same names, so checkpoints and
state dicts are unchanged. ONNX export keeps segment-anything's forward (the exporters' graph, gated as it is).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SdpaAttention(nn.Module):
    """segment-anything's ViT `Attention`, computed by one SDPA call with the relative positions as its additive mask
    (module docstring). Built from an existing `Attention`, sharing its parameters."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.num_heads = attention.num_heads
        self.scale = attention.scale
        self.qkv = attention.qkv
        self.proj = attention.proj
        object.__setattr__(self, "eager", attention)  # to switch back; not a submodule, so state dicts stay the same
        self.use_rel_pos = attention.use_rel_pos
        if self.use_rel_pos:
            self.rel_pos_h = attention.rel_pos_h
            self.rel_pos_w = attention.rel_pos_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from segment_anything.modeling.image_encoder import get_rel_pos

        batch, height, width, _ = x.shape
        tokens = height * width
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, c)
        head_dim = q.shape[-1]
        positions = None
        if self.use_rel_pos:
            rel_h = get_rel_pos(height, height, self.rel_pos_h)  # (h_q, h_k, c)
            rel_w = get_rel_pos(width, width, self.rel_pos_w)
            grid = q.reshape(batch, self.num_heads, height, width, head_dim)
            by_row = torch.einsum("bnhwc,hkc->bnhwk", grid, rel_h)
            by_col = torch.einsum("bnhwc,wkc->bnhwk", grid, rel_w)
            positions = (by_row[..., :, None] + by_col[..., None, :]).reshape(batch, self.num_heads, tokens, tokens)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=positions, scale=self.scale)
        out = out.reshape(batch, self.num_heads, height, width, head_dim).permute(0, 2, 3, 1, 4)
        return self.proj(out.reshape(batch, height, width, -1))


def set_attention(encoder: nn.Module, kind: str) -> int:
    """Make every segment-anything ViT attention inside `encoder` run as `kind`: "sdpa" (`SdpaAttention`) or "eager"
    (segment-anything's own forward), in place with the parameters shared; returns how many attention modules the
    encoder has. Encoders without one (LiteMedSAM's TinyViT) are left as they are: 0."""
    from segment_anything.modeling.image_encoder import Attention

    if kind not in ("sdpa", "eager"):
        raise ValueError(f"attention must be sdpa or eager, not {kind!r}")
    found = 0
    for block in list(encoder.modules()):
        attention = getattr(block, "attn", None)
        if isinstance(attention, SdpaAttention):
            attention = attention.eager
        if not isinstance(attention, Attention):
            continue
        block.attn = SdpaAttention(attention) if kind == "sdpa" else attention
        found += 1
    return found


def attention_of(encoder: nn.Module) -> str:
    """What a SAM ViT encoder's attention runs as now: "sdpa", "eager", or "model's own" (no such module)."""
    from segment_anything.modeling.image_encoder import Attention

    for module in encoder.modules():
        if isinstance(module, SdpaAttention):
            return "sdpa"
        if isinstance(module, Attention):
            return "eager"
    return "model's own"
