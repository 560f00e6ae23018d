"""Decoder variants beyond `semisam-fast bench decoder`: prompts per call (16 vs 48) and onnxruntime's dynamic int8
over the decoder, each timed and compared with torch fp32's masks; plus onnxruntime's per-operator profile of the
fp32 decoder. One-off measurements for README's decoder paragraph:
    SEMISAM_LA_DIR=../shared/data/la2018 python bench/decoder_variants.py [engines/litemedsam_decoder_fp32.onnx]
"""
from __future__ import annotations

import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from semisam_fast.backends import OnnxBackend, TorchBackend
from semisam_fast.backends.openvino_backend import OpenVinoBackend
from semisam_fast.formats import DEFAULT_FOLDER, artefact_path
from semisam_fast.models import Frame, load_model
from semisam_fast.prompter import SamPrompter
from semisam_fast.samples import load_samples

fp32 = Path(sys.argv[1] if len(sys.argv) > 1 else artefact_path(DEFAULT_FOLDER, "litemedsam", "decoder", "fp32"))
work = Path(tempfile.mkdtemp())
loaded = load_model("litemedsam")
n = 48
samples = load_samples(n)
frame = Frame(samples.slices.shape[1], samples.slices.shape[2], loaded.spec.image_size)
with torch.inference_mode():
    embeddings = torch.cat([loaded.encoder(loaded.preprocess(s[None])) for s in samples.slices])
    reference = SamPrompter.of(TorchBackend(loaded)).decode_from_masks(embeddings, samples.labels, frame) > 0


def session(path: Path, profile: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.enable_profiling = profile
    options.profile_file_prefix = str(work / "onnxruntime_profile")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


int8 = artefact_path(work, "litemedsam", "decoder", "int8")  # no sidecar: the session is swapped in below
quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
onnx_int8 = OnnxBackend(decoder=fp32)
onnx_int8.decoder.session = session(int8)  # the same inputs and outputs; only the weights' precision differs
backends = {"openvino_bf16": OpenVinoBackend(decoder=fp32, precision="bf16"),
            "onnxruntime_fp32": OnnxBackend(decoder=fp32), "onnxruntime_int8_dynamic": onnx_int8}
for per_call in (16, 48):
    for name, backend in backends.items():
        times = []
        with torch.inference_mode():
            for _ in range(3):
                start = time.perf_counter()
                decode = SamPrompter.of(backend).decode_from_masks
                masks = torch.cat([decode(embeddings[i:i + per_call], samples.labels[i:i + per_call], frame)
                                   for i in range(0, n, per_call)]).cpu() > 0
                times.append(time.perf_counter() - start)
        iou = float((masks & reference).sum() / (masks | reference).sum())
        print(json.dumps({"prompts_per_call": per_call, "runtime": name, "prompts_per_s": round(n / min(times), 1),
                          "mask_iou_vs_torch_fp32": round(iou, 4)}))

profiled = OnnxBackend(decoder=fp32)
profiled.decoder.session = session(fp32, profile=True)
with torch.inference_mode():
    for _ in range(3):
        SamPrompter.of(profiled).decode_from_masks(embeddings[:16], samples.labels[:16], frame)
events = json.loads(Path(profiled.decoder.session.end_profiling()).read_text())
by_op = collections.Counter()
for event in events:
    if event.get("cat") == "Node":
        by_op[event["args"].get("op_name")] += event["dur"]
total = sum(by_op.values())
print(json.dumps({"onnxruntime_fp32_profile_percent": {op: round(100 * t / total, 1)
                                                       for op, t in by_op.most_common(8)}}))
