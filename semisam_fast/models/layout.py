"""Layout changes written for the CPU runtimes that run the exported graphs. Two ways from channel-first to tokens,
because OpenVINO's CPU plugin runs them differently depending on where the tensor comes from."""
from __future__ import annotations

import torch


def channels_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, hw, C) for a channel-first tensor in plain memory (a graph input, a buffer), the same
    copy as `x.flatten(2).transpose(1, 2)`, written as the permutation (0, 3, 1, 2) of a (B, 1, C, hw) view:
    OpenVINO's CPU plugin runs that one as a reorder, and other permutations through a generic kernel 2.5-3x slower
    (the decoder's image embedding at 16 slices 26 -> 11 ms; `conv_to_tokens` there was slower)."""
    batch, channels = x.shape[0], x.shape[1]
    return x.reshape(batch, 1, channels, -1).permute(0, 3, 1, 2).reshape(batch, -1, channels)


def conv_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, hw, C) for a convolution's output, as the (0, 2, 3, 1) permutation. OpenVINO keeps a
    bf16 convolution's output channel-last, so with static shapes (the backend compiles each input shape) this
    permutation and the reorder before it are merged into nothing: TinyViT's local convolutions and patch merging
    lose ~10 ms a slice of layout nodes (encoder 1.04-1.05x over `channels_to_tokens` there,
    bench/results/encoder_conv_tokens_ab.json)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])
