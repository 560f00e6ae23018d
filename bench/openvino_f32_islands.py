"""Can OpenVINO keep chosen layers in f32 under a bf16 inference hint? Marks MatMuls with the
`disable_fp16_compression` runtime attribute before compiling the fp32 LiteMedSAM encoder, then reports the compiled
graph's per-node runtime precisions and the parity gate on LA slices. One-off measurement for README:
    SEMISAM_LA_DIR=../shared/data/la2018 python bench/openvino_f32_islands.py [engines/litemedsam_encoder_fp32.onnx]
"""
from __future__ import annotations

import collections
import sys

import openvino as ov

from semisam_fast.backends.openvino_backend import OpenVinoBackend
from semisam_fast.export.parity import check_encoder
from semisam_fast.formats import DEFAULT_FOLDER, artefact_path
from semisam_fast.models import load_model
from semisam_fast.samples import load_samples

path = sys.argv[1] if len(sys.argv) > 1 else str(artefact_path(DEFAULT_FOLDER, "litemedsam", "encoder", "fp32"))
loaded = load_model("litemedsam")
samples = load_samples(16)
core = ov.Core()


def reads_gelu(node, depth: int = 3) -> bool:
    """An erf-GELU (as exported: Div/Erf/Add/Mul) within `depth` producers of `node`."""
    if node.get_type_name() in ("Erf", "Gelu"):
        return True
    producers = (node.input_value(i).get_node() for i in range(node.get_input_size()))
    return depth > 0 and any(reads_gelu(producer, depth - 1) for producer in producers)


marks = {"none": lambda op: False,
         "post_gelu_matmuls": lambda op: op.get_type_name() == "MatMul" and reads_gelu(op.input_value(0).get_node()),
         "all_matmuls": lambda op: op.get_type_name() == "MatMul"}
for name, chosen in marks.items():
    model = core.read_model(path)
    marked = 0
    for op in model.get_ordered_ops():
        if chosen(op):
            op.get_rt_info()["disable_fp16_compression_0"] = ""
            marked += 1
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    backend = OpenVinoBackend(encoder=path, precision="bf16")
    backend.encoder.compiled, backend.encoder.request = compiled, compiled.create_infer_request()
    backend.encoder.per_shape = False  # run the marked compile, not per-shape compiles of the unmarked file
    precisions = collections.Counter(op.get_rt_info()["runtimePrecision"].astype(str)
                                     for op in compiled.get_runtime_model().get_ordered_ops()
                                     if "runtimePrecision" in op.get_rt_info())
    report = check_encoder(backend, loaded, samples, "bf16", 0.97)
    print(name, "marked", marked, dict(precisions), "mask IoU", round(report.mask_iou, 4), "min",
          round(report.mask_iou_min, 4), "embedding rel-L2", round(report.figures["embedding_rel_l2"], 4))
