"""SAM's prompt encoder + mask decoder as one module batched over images AND prompts.

segment-anything's MaskDecoder repeats one image embedding over all prompts (repeat_interleave by the number of
prompts), which serves one image per call. Here every image carries N prompt sets of P points each, so one call
decodes B x N masks, and the same graph is exported to ONNX with B, N and P dynamic.

Prompt encoding (labels): -1 padding point, 0 background point, 1 foreground point, 2 box top-left, 3 box
bottom-right. A box prompt is P=2 with labels (2, 3) and no padding point, exactly as SamPredictor embeds boxes.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .layout import channels_to_tokens


class PromptDecoder(nn.Module):
    """(embeddings B×C×h×w, coords B×N×P×2, labels B×N×P, mask_input B×N×1×4h×4w or 1×1×1×4h×4w (one for every
    prompt: the zeros of "no mask prompt"), has_mask_input (1,))
    -> (low-res mask logits B×N×K×4h×4w, IoU predictions B×N×K); K=1 (single mask) or 3 (multimask)."""

    # Two CPU-runtime facts shape this forward (both measured with OpenVINO's and onnxruntime's per-node profiles):
    # - the mask prompt broadcasts: without one, the mask branch runs once per call instead of once per prompt, and
    #   the image embedding meets the dense embedding in one broadcast add, not an Expand copy per prompt;
    # - the image side stays in token layout (tokens x channels) from input to mask: SAM's two upscaling
    #   ConvTranspose2d(k=2, s=2) layers are per-token matmuls to 4 sub-pixels each (`_upscale_tokens`), so the big
    #   channel-first <-> token transposes, the LayerNorm2d reductions over a strided axis and the reorders around
    #   the transposed convolutions are gone; one small 8-D transpose places the final mask's pixels;
    # - the image tokens' attention to the few prompt tokens runs its heads as block-diagonal matmuls, and the
    #   embedding's one layout change is written as the permutation OpenVINO runs as a fast reorder
    #   (`_attend_few_keys`, `layout.channels_to_tokens`): OpenVINO bf16 1.16-1.19x (51-52 -> 59-62
    #   prompts/s, bench/results/decoder_graph_ab.json).
    # Same weights, same arithmetic up to summation order (masks within 1e-4 of segment-anything's).

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module, multimask: bool = False) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.multimask = multimask
        height, width = prompt_encoder.input_image_size
        self.register_buffer("input_size_xy", torch.tensor([float(width), float(height)]), persistent=False)
        pe = prompt_encoder.get_dense_pe().detach()  # 1 x C x h x w
        self.register_buffer("image_pe_tokens", channels_to_tokens(pe).contiguous(), persistent=False)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords (M,P,2) in the model input frame, labels (M,P) -> sparse embeddings (M,P,C)."""
        pe = self.prompt_encoder.pe_layer
        normalised = (coords + 0.5) / self.input_size_xy  # +0.5: pixel centre, as segment-anything
        # segment-anything's random-Fourier encoding, kept in fp32 in a half-precision decoder too: sin/cos of
        # arguments of tens of radians lose too much in fp16
        projected = 2 * math.pi * ((2 * normalised.float() - 1) @ pe.positional_encoding_gaussian_matrix.float())
        embedding = torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)
        lab = labels.unsqueeze(-1)
        embedding = embedding * (lab != -1).to(embedding.dtype)
        embedding = embedding + self.prompt_encoder.not_a_point_embed.weight * (lab == -1).to(embedding.dtype)
        for index, point_embedding in enumerate(self.prompt_encoder.point_embeddings):
            embedding = embedding + point_embedding.weight * (lab == index).to(embedding.dtype)
        return embedding

    def _upscale_tokens(self, keys: torch.Tensor) -> torch.Tensor:
        """SAM's output_upscaling (ConvTranspose2d k2 s2, LayerNorm2d, GELU, ConvTranspose2d k2 s2, GELU) on
        (M, hw, C) tokens -> (M, hw, 16, C2): each token's 4x4 output pixels, sub-pixel index (i, j, k, l) with the
        pixel at (4y + 2i + k, 4x + 2j + l)."""
        up1, norm, act1, up2, act2 = self.mask_decoder.output_upscaling
        m, hw = keys.shape[0], keys.shape[1]

        def per_token(conv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
            # weight (Cin, Cout, 2, 2) -> (Cin, [i, j, Cout]):
            # out[2y+i, 2x+j, o] = sum_c in[y, x, c] W[c, o, i, j] + b[o]
            cin, cout = conv.in_channels, conv.out_channels  # ints: traced shapes of constants do not export
            return conv.weight.permute(0, 2, 3, 1).reshape(cin, 4 * cout), conv.bias.repeat(4)

        weight, bias = per_token(up1)
        x = (keys @ weight.to(keys.dtype) + bias.to(keys.dtype)).reshape(m, hw * 4, -1)
        x = act1(torch.nn.functional.layer_norm(x, (up1.out_channels,), norm.weight.to(x.dtype), norm.bias.to(x.dtype),
                                                norm.eps))
        weight, bias = per_token(up2)
        x = act2(x @ weight.to(x.dtype) + bias.to(x.dtype))
        return x.reshape(m, hw, 16, -1)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, n_prompts, n_points = point_labels.shape[0], point_labels.shape[1], point_labels.shape[2]
        channels, h, w = image_embeddings.shape[1], image_embeddings.shape[2], image_embeddings.shape[3]
        flat = batch * n_prompts
        dtype = image_embeddings.dtype
        sparse = self.embed_points(point_coords.reshape(flat, n_points, 2).float(),
                                   point_labels.reshape(flat, n_points)).to(dtype)

        has_mask = has_mask_input.reshape(1, 1, 1).to(dtype)
        mask_batch, mask_prompts = mask_input.shape[0], mask_input.shape[1]  # (B, N), or (1, 1) for every prompt
        masks_in = mask_input.reshape(-1, 1, mask_input.shape[-2], mask_input.shape[-1]).to(dtype)
        dense = has_mask * channels_to_tokens(self.prompt_encoder.mask_downscaling(masks_in))
        dense = dense + (1 - has_mask) * self.prompt_encoder.no_mask_embed.weight.reshape(1, 1, -1).to(dtype)

        decoder = self.mask_decoder
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0).to(dtype)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(flat, -1, -1), sparse], dim=1)

        image = channels_to_tokens(image_embeddings)  # B x hw x C: the one layout change on the image side
        # (B, 1) image + (1, N) dense in one broadcast add: an Expand node is a slow copy in OpenVINO even for N = 1
        dense = dense.reshape(mask_batch, mask_prompts, h * w, channels) + dense.new_zeros(1, n_prompts, 1, 1)
        keys = (image.unsqueeze(1) + dense).reshape(flat, h * w, channels)
        # segment-anything's TwoWayTransformer.forward, minus its layout change (keys arrive as tokens); the
        # positional encoding broadcasts over prompts
        transformer, key_pe = decoder.transformer, self.image_pe_tokens.to(dtype)
        queries = tokens
        for layer in transformer.layers:
            queries, keys = _two_way_block(layer, queries, keys, query_pe=tokens, key_pe=key_pe)
        attn_out = transformer.final_attn_token_to_image(q=queries + tokens, k=keys + key_pe, v=keys)
        hs = transformer.norm_final_attn(queries + attn_out)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]

        chosen = range(1, decoder.num_mask_tokens) if self.multimask else range(1)  # only the masks returned
        hyper_in = torch.stack(
            [decoder.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in chosen], dim=1
        )
        upscaled = self._upscale_tokens(keys)  # flat x hw x 16 x C2
        k = hyper_in.shape[1]
        masks = upscaled.reshape(flat, h * w * 16, -1) @ hyper_in.transpose(1, 2)  # flat x (hw * 16) x K
        # (y, x, i, j, k, l) -> pixel (4y + 2i + k, 4x + 2j + l)
        masks = masks.reshape(flat, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(flat, k, 4 * h, 4 * w)
        iou = decoder.iou_prediction_head(iou_token_out)[:, chosen.start:chosen.stop]
        return (masks.reshape(batch, n_prompts, k, 4 * h, 4 * w),
                iou.reshape(batch, n_prompts, k))


def _attend_few_keys(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """segment-anything's `Attention` for many queries (the image tokens) over few keys (the prompt tokens), with
    the heads as block-diagonal matmuls instead of a split of the long side: head h's keys are the key tokens with
    every channel outside h zeroed, so (keys @ q) holds each head's scores side by side, and the softmax runs over
    the few keys on an inner axis. Its arithmetic is segment-anything's plus exact zeros."""
    q, k, v = attn.q_proj(q), attn.k_proj(k), attn.v_proj(v)
    batch, n_keys, channels = k.shape
    heads = attn.num_heads
    per_head = channels // heads
    in_head = (torch.arange(channels, device=q.device) // per_head == torch.arange(heads, device=q.device)[:, None])
    in_head = in_head.to(q.dtype)[:, None, :]  # heads x 1 x C
    k = (k.unsqueeze(1) * in_head).reshape(batch, heads * n_keys, channels)
    v = (v.unsqueeze(1) * in_head).reshape(batch, heads * n_keys, channels)
    scores = (k @ q.transpose(1, 2)) * (1 / math.sqrt(per_head))  # B x (heads * keys) x queries
    # the softmax over the keys' axis written out: onnxruntime's Softmax on an inner axis transposes around itself
    scores = scores.reshape(batch, heads, n_keys, -1)
    weights = torch.exp(scores - scores.amax(dim=2, keepdim=True))
    weights = (weights / weights.sum(dim=2, keepdim=True)).reshape(batch, heads * n_keys, -1)
    return attn.out_proj(weights.transpose(1, 2) @ v)


def _two_way_block(layer: nn.Module, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                   key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """segment-anything's TwoWayAttentionBlock.forward, with the image-to-token attention as `_attend_few_keys`."""
    if layer.skip_first_layer_pe:
        queries = layer.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        queries = queries + layer.self_attn(q=q, k=q, v=queries)
    queries = layer.norm1(queries)
    queries = layer.norm2(queries + layer.cross_attn_token_to_image(q=queries + query_pe, k=keys + key_pe, v=keys))
    queries = layer.norm3(queries + layer.mlp(queries))
    q = queries + query_pe
    keys = layer.norm4(keys + _attend_few_keys(layer.cross_attn_image_to_token, q=keys + key_pe, k=q, v=queries))
    return queries, keys
