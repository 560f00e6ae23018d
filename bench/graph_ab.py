"""Two exported graphs of one part side by side (e.g. before and after a change to a forward the exporter traces):
each runtime times both, interleaved, on real LA slices (decoder: with label boxes), and each graph's masks are
compared with torch fp32's (encoder: its embeddings decoded by torch from the label boxes). One-off measurement for
README's decoder and encoder paragraphs:
    SEMISAM_LA_DIR=../shared/data/la2018 python bench/graph_ab.py decoder|encoder OLD.onnx NEW.onnx [OUT.json]
OLD keeps its sidecar beside it (copy both files before exporting the new graph over them).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from semisam_fast.backends import OnnxBackend, TorchBackend
from semisam_fast.backends.openvino_backend import OpenVinoBackend
from semisam_fast.bench import interleaved, machine, summarise
from semisam_fast.models import Frame, load_model
from semisam_fast.prompter import SamPrompter
from semisam_fast.samples import load_samples

part, old, new = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
out = Path(sys.argv[4]) if len(sys.argv) > 4 else None
loaded = load_model("litemedsam")
torch_fp32 = TorchBackend(loaded)
n = 48 if part == "decoder" else 16
samples = load_samples(n)
frame = Frame(samples.slices.shape[1], samples.slices.shape[2], loaded.spec.image_size)
with torch.inference_mode():
    images = torch.cat([loaded.preprocess(s[None]) for s in samples.slices])
    embeddings = torch_fp32.encode(images)
    reference = SamPrompter.of(torch_fp32).decode_from_masks(embeddings, samples.labels, frame) > 0

runtimes = {"openvino_bf16": lambda path: OpenVinoBackend(**{part: path}, precision="bf16"),
            "openvino_f32": lambda path: OpenVinoBackend(**{part: path}, precision="fp32"),
            "onnxruntime_fp32": lambda path: OnnxBackend(**{part: path})}
per_call_choices = (16, 48) if part == "decoder" else (1, 4)
results = {"machine": machine(), "part": part, "old": str(old), "new": str(new), "items": n, "runtimes": {}}
for runtime, make in runtimes.items():
    backends = {"old": make(old), "new": make(new)}
    for per_call in per_call_choices:
        def masks_of(backend):
            """All n items, per_call at a time -> masks at slice size."""
            if part == "decoder":
                decode = SamPrompter.of(backend).decode_from_masks
                return torch.cat([decode(embeddings[i:i + per_call], samples.labels[i:i + per_call], frame)
                                  for i in range(0, n, per_call)]).cpu() > 0
            encoded = torch.cat([backend.encode(images[i:i + per_call]) for i in range(0, n, per_call)])
            return SamPrompter.of(torch_fp32).decode_from_masks(encoded, samples.labels, frame) > 0

        def run_only(backend):
            if part == "decoder":
                return masks_of(backend)
            return [backend.encode(images[i:i + per_call]) for i in range(0, n, per_call)]

        with torch.inference_mode():
            times = interleaved({graph: (lambda b=b: run_only(b)) for graph, b in backends.items()}, repeats=5)
            ious = {}
            for graph, backend in backends.items():
                masks = masks_of(backend)
                ious[graph] = round(float((masks & reference).sum() / (masks | reference).sum()), 4)
        unit = "prompts" if part == "decoder" else "slices"
        summary = summarise(times, "old", items=n, unit=unit)
        row = {graph: {f"{unit}_per_s": round(s[f"{unit}_per_s"], 2), "mask_iou_vs_torch_fp32": ious[graph]}
               for graph, s in summary.items()}
        row["new_over_old"] = round(summary["new"]["speedup_vs_old"], 3)
        results["runtimes"][f"{runtime}/{per_call}_per_call"] = row
        print(runtime, per_call, json.dumps(row), flush=True)
if out:
    out.write_text(json.dumps(results, indent=1) + "\n")
