"""segment-anything ViT builders: vit_b / vit_l / vit_h / medsam (1024 input) and a tiny random config for tests."""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

# encoder embed dim, depth, heads, global attention blocks (segment-anything's build_sam.py)
VIT_CONFIGS = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


def _build(embed_dim: int, depth: int, heads: int, global_attn: tuple[int, ...], image_size: int,
           patch_size: int, window_size: int) -> nn.Module:
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    embedding_size = image_size // patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=depth, embed_dim=embed_dim, img_size=image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=heads, patch_size=patch_size,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=global_attn, window_size=window_size, out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(image_size, image_size), mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
    )


def build_vit(name: str) -> nn.Module:
    embed_dim, depth, heads, global_attn = VIT_CONFIGS[name]
    return _build(embed_dim, depth, heads, global_attn, image_size=1024, patch_size=16, window_size=14)


TINY_CONFIG = (32, 2, 2, ())


def build_tiny() -> nn.Module:
    """A 2-block ViT at 256 input with the real SAM prompt encoder / decoder: for fast export/backend tests only."""
    return _build(*TINY_CONFIG, image_size=256, patch_size=4, window_size=8)
