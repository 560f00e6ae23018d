"""SAM ViT attention through torch's `scaled_dot_product_attention` (a fused kernel where the device has one).

segment-anything's `Attention` adds decomposed relative positions to the score matrix,
    score[i, j] = scale q_i.k_j + q_i.Rh[h_i, h_j] + q_i.Rw[w_i, w_j],
and its forward materialises the (N, N) scores per head (4096 x 4096 in ViT-B's global blocks), adds the two terms
(each a broadcast over a new N x N tensor), softmaxes and multiplies. Here the two position terms are summed once into
an additive mask and SDPA does the rest in one fused kernel (CPU: flash attention with a mask; CUDA: the
memory-efficient kernel, the one that takes a mask), so the scores and their softmax are never stored. The mask
itself still is: (N, N) per head. `FlexAttention` stores only its two factors, (N, h) and (N, w), and adds them to
each score inside torch's compiled FlexAttention kernel; it is for CUDA (on this CPU it is slower than SDPA).

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

    kind = "sdpa"

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
        by_row = by_col = None
        if self.use_rel_pos:
            rel_h = get_rel_pos(height, height, self.rel_pos_h)  # (h_q, h_k, c)
            rel_w = get_rel_pos(width, width, self.rel_pos_w)
            grid = q.reshape(batch, self.num_heads, height, width, head_dim)
            by_row = torch.einsum("bnhwc,hkc->bnhwk", grid, rel_h).reshape(batch, self.num_heads, tokens, height)
            by_col = torch.einsum("bnhwc,wkc->bnhwk", grid, rel_w).reshape(batch, self.num_heads, tokens, width)
        out = self.attend(q, k, v, by_row, by_col)
        out = out.reshape(batch, self.num_heads, height, width, head_dim).permute(0, 2, 3, 1, 4)
        return self.proj(out.reshape(batch, height, width, -1))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, by_row: torch.Tensor | None,
               by_col: torch.Tensor | None) -> torch.Tensor:
        """softmax(scale q k^T + positions) v, where the position of query i and key (row r, column c) is
        by_row[i, r] + by_col[i, c]: here as one (N, N) mask."""
        positions = None
        if by_row is not None:
            batch, heads, tokens, _ = by_row.shape
            positions = (by_row[..., :, None] + by_col[..., None, :]).reshape(batch, heads, tokens, tokens)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=positions, scale=self.scale)


class FlexAttention(SdpaAttention):
    """The same attention through torch's FlexAttention: the position term is a `score_mod` that reads by_row and
    by_col inside the compiled kernel, so no (N, N) mask is ever stored (SDPA's mask is 4096 x 4096 per head in a
    global block). Compiled on first use for each shape (~10-20 s on a CPU); on a CPU it is slower than SDPA
    (0.27x a ViT-B global block in fp32, bench/vit_flex_block.py), so it is for CUDA, where the GPU suite times it."""

    kind = "flex"

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, by_row: torch.Tensor | None,
               by_col: torch.Tensor | None) -> torch.Tensor:
        if by_row is None:
            return F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        width = by_col.shape[-1]

        def with_positions(score, b, h, q_idx, kv_idx):
            return score + by_row[b, h, q_idx, kv_idx // width] + by_col[b, h, q_idx, kv_idx % width]

        return _flex_attention()(q, k, v, score_mod=with_positions, scale=self.scale)


_COMPILED_FLEX = None


def _flex_attention():
    """flex_attention compiled once (its eager form materialises the scores); inside an encoder that is itself being
    compiled, the plain function, which that compile fuses. Static shapes: with torch's automatic dynamic shapes,
    the recompile for a second token grid gave wrong outputs on the CPU (torch 2.14; max error 1.5 on unit inputs)."""
    global _COMPILED_FLEX
    from torch.nn.attention.flex_attention import flex_attention

    if torch.compiler.is_compiling():
        return flex_attention
    if _COMPILED_FLEX is None:
        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
    return _COMPILED_FLEX


KINDS = {"sdpa": SdpaAttention, "flex": FlexAttention}


def set_attention(encoder: nn.Module, kind: str) -> int:
    """Make every segment-anything ViT attention inside `encoder` run as `kind`: "sdpa" (`SdpaAttention`), "flex"
    (`FlexAttention`) or "eager" (segment-anything's own forward), in place with the parameters shared; returns how
    many attention modules the encoder has. Encoders without one (LiteMedSAM's TinyViT) are left as they are: 0."""
    from segment_anything.modeling.image_encoder import Attention

    if kind not in (*KINDS, "eager"):
        raise ValueError(f"attention must be one of {', '.join((*KINDS, 'eager'))}, not {kind!r}")
    found = 0
    for block in list(encoder.modules()):
        attention = getattr(block, "attn", None)
        if isinstance(attention, SdpaAttention):
            attention = attention.eager
        if not isinstance(attention, Attention):
            continue
        block.attn = KINDS[kind](attention) if kind in KINDS else attention
        found += 1
    return found


def attention_of(encoder: nn.Module) -> str:
    """What a SAM ViT encoder's attention runs as now: "sdpa", "flex", "eager", or "model's own" (no such module)."""
    from segment_anything.modeling.image_encoder import Attention

    for module in encoder.modules():
        if isinstance(module, SdpaAttention):
            return module.kind
        if isinstance(module, Attention):
            return "eager"
    return "model's own"
