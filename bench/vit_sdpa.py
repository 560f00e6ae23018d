"""SAM ViT-B's image encoder with segment-anything's attention against SDPA (`models/vit_attention.py`), side by
side, interleaved, on this machine (random-init weights with non-zero relative positions: timing and numerical
agreement only), fp32 and, where the CPU multiplies bf16 in hardware, bf16. GFLOP/s are of segment-anything's own
arithmetic (the work asked for), for both.
    python bench/vit_sdpa.py [OUT.json] [--device cuda] [--batch 1]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from semisam_fast.backends import TorchBackend
from semisam_fast.bench import gflop, interleaved, machine, summarise
from semisam_fast.doctor import has_bf16_matmuls
from semisam_fast.models import load_model
from semisam_fast.models.sam import build_vit


def vit_b(checkpoint: Path, seed: int = 0) -> None:
    """Random ViT-B weights written as a checkpoint, for `load_model`; relative positions made non-zero
    (segment-anything zero-initialises them; trained ones are not zero)."""
    torch.manual_seed(seed)
    state = build_vit("vit_b").state_dict()
    for name, value in state.items():
        if "rel_pos" in name:
            value.normal_(0, 0.02)
    torch.save(state, checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    precisions = ["fp32"]
    if args.device.startswith("cuda"):
        precisions += ["fp16", "bf16"]
    elif has_bf16_matmuls():
        precisions.append("bf16")
    images = torch.rand(args.batch, 3, 1024, 1024, device=args.device)
    with tempfile.TemporaryDirectory() as work:
        checkpoint = Path(work) / "vit_b_random.pth"
        vit_b(checkpoint)
        backends = {f"{attention}_{p}": TorchBackend(load_model("vit_b", checkpoint), device=args.device,
                                                     precision=p, attention=attention)
                    for p in precisions for attention in ("eager", "sdpa")}
    results: dict = {"machine": machine(), "device": args.device, "batch": args.batch,
                     "command": "python bench/vit_sdpa.py OUT.json", "weights": "random init, rel_pos ~ N(0, 0.02)"}
    reference = backends["eager_fp32"].encode(images)
    results["embedding_rel_l2_vs_eager_fp32"] = {
        name: float((b.encode(images) - reference).norm() / reference.norm()) for name, b in backends.items()}
    per_image = gflop(lambda: backends["eager_fp32"].encode(images[:1]))
    times = interleaved({name: (lambda b=b: b.encode(images)) for name, b in backends.items()}, args.repeats)
    results["encoder"] = summarise(times, "eager_fp32", args.batch, gflop_per_item=per_image)
    results["gflop_per_image"] = per_image
    for precision in precisions:
        eager, fused = (results["encoder"][f"{a}_{precision}"]["median_s"] for a in ("eager", "sdpa"))
        results[f"sdpa_over_eager_{precision}"] = eager / fused
    print(json.dumps({k: v for k, v in results.items() if k.startswith(("sdpa", "embedding"))}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
