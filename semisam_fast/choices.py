"""Every enumerated option in one place, free of heavy imports: the library validates against these tuples and the
CLI offers them as typed choices (a typo is refused with the allowed values, never read as a default)."""
from __future__ import annotations

from .formats import FORMATS

MODELS = ("litemedsam", "medsam", "vit_b", "vit_l", "vit_h", "tiny")  # models.registry.MODELS is checked against it
# torch runs a checkpoint; the others open exported files (their names, suffixes and backends: formats.py)
BACKENDS = ("torch", *FORMATS)
DEVICES = ("cpu", "cuda")
EXPORT_PARTS = ("encoder", "decoder", "all")
EXPORT_FORMATS = tuple(name for name, fmt in FORMATS.items() if fmt.exported)
# verify: the formats that run an exported .onnx file (onnxruntime, or OpenVINO compiling it)
ONNX_RUNTIMES = tuple(name for name, fmt in FORMATS.items() if fmt.suffix == FORMATS["onnx"].suffix)
EXPORT_PRECISIONS = ("fp32", "fp16", "int8")
INT8_MODES = ("dynamic", "static")
TORCH_PRECISIONS = ("fp32", "fp16", "bf16")
RUNTIME_PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # torch: a compute dtype; onnx/engine: which export to open
PROMPTS = ("gt-box", "mask-box", "points", "teacher")
WEIGHTS = ("student", "teacher")
# pseudo-label: the slices a cache built with `embed --every K` lacks (SAM never saw them): marked with the ignore
# value, filled from the nearest slice SAM labelled, or encoded there and then
UNSEEN = ("ignore", "nearest", "encode")
# run: whole training runs (needs data and a cache); pseudo-label: the whole embed + decode pass (needs data)
BENCH_PARTS = ("encoder", "decoder", "train", "all", "run", "pseudo-label")
PRESETS = ("la-cpu", "la-paper")  # train.config.PRESETS is checked against it

# TrainConfig fields with a fixed set of values (TrainConfig.check enforces them)
TRAIN = {
    "method": ("sup", "mt", "uamt", "semisam"),
    "student": ("unet2d", "vnet"),
    "optimizer": ("adam", "sgd"),
    "normalization": ("zscore", "none"),
    "lr_schedule": ("poly", "constant"),
    "sam_ramp": ("up", "down", "none"),
    "sam_loss": ("dicece", "mse"),
    "sam_prompt_from": ("student", "teacher"),
    "sam_mode": ("rounds", "step"),
    "sam_pixels": ("all", "agree"),
    "sam_fusion": ("sam", "mean"),
    "sam_teacher_precision": ("auto", "fp32", "bf16"),
    "teacher_mode": ("eval", "train"),
    "student_batch": ("joint", "split"),
}
