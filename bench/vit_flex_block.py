"""One ViT-B global attention block (64 x 64 tokens, width 768, 12 heads, random non-zero relative positions) through
`SdpaAttention` against `FlexAttention` (models/vit_attention.py), fp32, interleaved, on this machine. FlexAttention's
kernel is compiled before timing. One-off measurement for README:
    python bench/vit_flex_block.py [OUT.json] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from segment_anything.modeling.image_encoder import Attention

from semisam_fast.bench import interleaved, machine, summarise
from semisam_fast.models.vit_attention import FlexAttention, SdpaAttention


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    block = Attention(768, 12, qkv_bias=True, use_rel_pos=True, input_size=(64, 64)).eval().to(args.device)
    with torch.no_grad():
        block.rel_pos_h.normal_(0, 0.02)
        block.rel_pos_w.normal_(0, 0.02)
    x = torch.randn(1, 64, 64, 768, device=args.device)
    fused = {"sdpa": SdpaAttention(block), "flex": FlexAttention(block)}
    with torch.inference_mode():
        reference = block(x)
        rel_l2 = {k: float((m(x) - reference).norm() / reference.norm()) for k, m in fused.items()}  # compiles flex
        times = interleaved({k: (lambda m=m: m(x)) for k, m in fused.items()}, repeats=5)
    rows = summarise(times, "sdpa", 1)
    results = {"machine": machine(), "device": args.device, "block": rows, "rel_l2_vs_segment_anything": rel_l2,
               "flex_over_sdpa": rows["sdpa"]["median_s"] / rows["flex"]["median_s"]}
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
