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


class PromptDecoder(nn.Module):
    """(embeddings B×C×h×w, coords B×N×P×2, labels B×N×P, mask_input B×N×1×4h×4w, has_mask_input (1,))
    -> (low-res mask logits B×N×K×4h×4w, IoU predictions B×N×K); K=1 (single mask) or 3 (multimask)."""

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module, multimask: bool = False) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.multimask = multimask
        height, width = prompt_encoder.input_image_size
        self.register_buffer("input_size_xy", torch.tensor([float(width), float(height)]), persistent=False)
        self.register_buffer("image_pe", prompt_encoder.get_dense_pe().detach(), persistent=False)

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

        has_mask = has_mask_input.reshape(1, 1, 1, 1).to(dtype)
        masks_in = mask_input.reshape(flat, 1, mask_input.shape[-2], mask_input.shape[-1]).to(dtype)
        dense = has_mask * self.prompt_encoder.mask_downscaling(masks_in)
        dense = dense + (1 - has_mask) * self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).to(dtype)

        decoder = self.mask_decoder
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0).to(dtype)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(flat, -1, -1), sparse], dim=1)

        src = image_embeddings.unsqueeze(1).expand(-1, n_prompts, -1, -1, -1).reshape(flat, channels, h, w)
        src = src + dense
        pos_src = self.image_pe.to(dtype).expand(flat, -1, -1, -1)
        hs, src = decoder.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]

        upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(flat, channels, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
        )
        up_c, up_h, up_w = upscaled.shape[1], upscaled.shape[2], upscaled.shape[3]
        masks = (hyper_in @ upscaled.reshape(flat, up_c, up_h * up_w)).reshape(flat, -1, up_h, up_w)
        iou = decoder.iou_prediction_head(iou_token_out)

        chosen = slice(1, None) if self.multimask else slice(0, 1)
        masks, iou = masks[:, chosen], iou[:, chosen]
        return (masks.reshape(batch, n_prompts, masks.shape[1], up_h, up_w),
                iou.reshape(batch, n_prompts, iou.shape[1]))
