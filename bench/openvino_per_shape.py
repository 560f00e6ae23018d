"""The OpenVINO backend's compile choices side by side, interleaved, on real slices (LA when SEMISAM_LA_DIR is set,
else the phantom), bf16 where the CPU has it:
- encoder: one dynamic-batch compile against a compile per input shape (the backend's way), at batch 1 and 4;
- decoder: one dynamic compile at a round's ~35 prompts a call (the backend's way) against a compile per shape at
  48 a call (fixed-size calls across a round's cases, not built).
One-off measurement for README:
    SEMISAM_LA_DIR=../shared/data/la2018 python bench/openvino_per_shape.py [OUT.json]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from semisam_fast.backends.openvino_backend import OpenVinoBackend, OpenVinoModel
from semisam_fast.bench import interleaved, machine, summarise
from semisam_fast.doctor import has_bf16_matmuls
from semisam_fast.formats import DEFAULT_FOLDER, artefact_path
from semisam_fast.models import Frame, load_model
from semisam_fast.prompter import SamPrompter
from semisam_fast.samples import load_samples

ENCODER, DECODER = (artefact_path(DEFAULT_FOLDER, "litemedsam", part, "fp32") for part in ("encoder", "decoder"))
precision = "bf16" if has_bf16_matmuls() else "fp32"
loaded = load_model("litemedsam")
samples = load_samples(48)
frame = Frame(samples.slices.shape[1], samples.slices.shape[2], loaded.spec.image_size)
images = loaded.preprocess(samples.slices)


def encoder(per_shape: bool) -> OpenVinoModel:
    return OpenVinoModel(ENCODER, precision, per_shape=per_shape)


results: dict = {"machine": machine(), "precision": precision, "slices": samples.source}
with torch.inference_mode():
    dynamic, per_shape = encoder(False), encoder(True)
    for batch in (1, 4):
        x = images[:batch]
        times = interleaved({"one_dynamic_compile": lambda: dynamic.run({dynamic.input_names[0]: x}),
                             "compile_per_shape": lambda: per_shape.run({per_shape.input_names[0]: x})}, repeats=8)
        results[f"encoder_batch_{batch}"] = summarise(times, "one_dynamic_compile", batch)

    embeddings = OpenVinoBackend(encoder=ENCODER, precision=precision).encode(images)
    one_compile = OpenVinoBackend(decoder=DECODER, precision=precision)
    per_shape_decoder = OpenVinoBackend(decoder=DECODER, precision=precision)
    per_shape_decoder.decoder.per_shape = True

    def decode_in_calls(backend: OpenVinoBackend, size: int) -> None:
        decode = SamPrompter.of(backend).decode_from_masks
        for start in range(0, len(embeddings), size):
            decode(embeddings[start:start + size], samples.labels[start:start + size], frame)

    times = interleaved({"one_dynamic_compile_35_a_call": lambda: decode_in_calls(one_compile, 35),
                         "compile_per_shape_48_a_call": lambda: decode_in_calls(per_shape_decoder, 48)}, repeats=6)
    results["decoder_48_prompts"] = summarise(times, "one_dynamic_compile_35_a_call", len(embeddings), "prompts")

for key, value in results.items():
    if key.startswith(("encoder", "decoder")):
        ratios = {name: next(v for k, v in row.items() if k.startswith("speedup")) for name, row in value.items()}
        print(key, {name: round(ratio, 3) for name, ratio in ratios.items()})
if len(sys.argv) > 1:
    Path(sys.argv[1]).write_text(json.dumps(results, indent=2))
