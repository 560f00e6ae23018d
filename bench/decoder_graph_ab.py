"""Two exported decoder graphs side by side (e.g. before and after a change to `PromptDecoder`'s forward): each
runtime times both, interleaved, on real LA slices with label boxes, and each graph's masks are compared with
torch fp32's. One-off measurement for README's decoder paragraph:
    SEMISAM_LA_DIR=../shared/data/la2018 python bench/decoder_graph_ab.py OLD.onnx NEW.onnx [OUT.json]
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
from semisam_fast.sam_targets import decode_slices
from semisam_fast.samples import load_samples

old, new = Path(sys.argv[1]), Path(sys.argv[2])
out = Path(sys.argv[3]) if len(sys.argv) > 3 else None
loaded = load_model("litemedsam")
n = 48
samples = load_samples(n)
frame = Frame(samples.slices.shape[1], samples.slices.shape[2], loaded.spec.image_size)
with torch.inference_mode():
    embeddings = torch.cat([loaded.encoder(loaded.preprocess(s[None])) for s in samples.slices])
    reference = decode_slices(TorchBackend(loaded), embeddings, samples.labels, frame) > 0

runtimes = {"openvino_bf16": lambda path: OpenVinoBackend(decoder=path, precision="bf16"),
            "openvino_f32": lambda path: OpenVinoBackend(decoder=path, precision="fp32"),
            "onnxruntime_fp32": lambda path: OnnxBackend(decoder=path)}
results = {"machine": machine(), "old": str(old), "new": str(new), "prompts": n, "runtimes": {}}
for runtime, make in runtimes.items():
    backends = {"old": make(old), "new": make(new)}
    for per_call in (16, 48):
        def decode_all(backend=None):
            return torch.cat([decode_slices(backend, embeddings[i:i + per_call], samples.labels[i:i + per_call],
                                            frame) for i in range(0, n, per_call)]).cpu() > 0

        with torch.inference_mode():
            times = interleaved({graph: (lambda b=b: decode_all(b)) for graph, b in backends.items()}, repeats=5)
            ious = {}
            for graph, backend in backends.items():
                masks = decode_all(backend)
                ious[graph] = round(float((masks & reference).sum() / (masks | reference).sum()), 4)
        summary = summarise(times, "old", items=n, unit="prompts")
        row = {graph: {"prompts_per_s": round(s["prompts_per_s"], 1), "mask_iou_vs_torch_fp32": ious[graph]}
               for graph, s in summary.items()}
        row["new_over_old"] = round(summary["new"]["speedup_vs_old"], 3)
        results["runtimes"][f"{runtime}/{per_call}_per_call"] = row
        print(runtime, per_call, json.dumps(row), flush=True)
if out:
    out.write_text(json.dumps(results, indent=1) + "\n")
