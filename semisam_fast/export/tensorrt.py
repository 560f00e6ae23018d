"""TensorRT engines from the ONNX export: an optimisation profile over batch (and prompts), fp16 with LayerNorm kept
in fp32 when the parity gate fails, and a cache keyed by model, precision, profile, TensorRT version and GPU SM."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..artefact import read_sidecar, sidecar_path, write_sidecar
from ..backends.tensorrt_backend import import_tensorrt
from ..errors import UserError
from ..formats import ENGINE, ONNX
from ..fsutil import atomic_write
from ..models import LoadedModel, ModelSpec
from .onnx_export import export_onnx, graph_inputs


def engine_key(model: str, checkpoint_sha256: str, part: str, precision: str, profile: tuple[int, int, int],
               trt_version: str, sm: str) -> str:
    text = f"{model}|{checkpoint_sha256}|{part}|{precision}|{profile}|{trt_version}|{sm}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _profiles(part: str, profile: tuple[int, int, int], spec: ModelSpec, inputs: dict[str, list]) -> dict[str, tuple]:
    """Shape ranges per input; `inputs`: the graph's (`graph_inputs`), which says how its mask input is laid out."""
    lo, opt, hi = profile
    size, emb, side = spec.image_size, spec.embedding_shape, spec.low_res_side
    if part == "encoder":
        return {"images": ((lo, 3, size, size), (opt, 3, size, size), (hi, 3, size, size))}
    # decoder: batch of images x up to 16 prompts x up to 8 points each; the mask input 1x1 for every prompt, or
    # one per prompt in a decoder exported before PromptDecoder broadcast it
    mask_lo, mask_opt = (1, 1) if inputs["mask_input"][0] != "batch" else (lo, opt)
    return {"image_embeddings": ((lo, *emb), (opt, *emb), (hi, *emb)),
            "point_coords": ((lo, 1, 1, 2), (opt, 1, 2, 2), (hi, 16, 8, 2)),
            "point_labels": ((lo, 1, 1), (opt, 1, 2), (hi, 16, 8)),
            "mask_input": ((mask_lo, 1, 1, side, side), (mask_opt, 1, 1, side, side), (hi, 16, 1, side, side)),
            "has_mask_input": ((1,), (1,), (1,))}


def _build(onnx_path: Path, part: str, precision: str, profile: tuple[int, int, int], spec: ModelSpec,
           inputs: dict[str, list], fp32_norms: bool) -> bytes:
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # by path: external data (ViT-H) is found beside it
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 8 << 30)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        if fp32_norms:  # keep normalisation layers (LayerNorm) in fp32: fp16 overflow there breaks masks
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            for i in range(network.num_layers):
                layer = network.get_layer(i)
                if layer.type == trt.LayerType.NORMALIZATION:
                    layer.precision = trt.float32
                    layer.set_output_type(0, trt.float32)
    elif precision != "fp32":
        raise UserError(f"TensorRT engines are built in fp32 or fp16, not {precision!r}")
    optimisation = builder.create_optimization_profile()
    for name, (lo, opt, hi) in _profiles(part, profile, spec, inputs).items():
        optimisation.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(optimisation)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {onnx_path}")
    return bytes(serialized)


def build_engine(reference: LoadedModel, part: str, out: Path, precision: str = "fp16",
                 profile: tuple[int, int, int] = (1, 8, 32), opset: int = 17, samples=None) -> tuple[Path, dict]:
    """Build (or reuse from the cache in `out`) an engine; returns its path and sidecar fields."""
    from .parity import DEFAULT_IOU, check_decoder, check_encoder

    trt = import_tensorrt()
    if not torch.cuda.is_available():
        raise UserError("building a TensorRT engine needs a CUDA device")
    major, minor = torch.cuda.get_device_capability()
    sm = f"{major}{minor}"
    spec = reference.spec
    key = engine_key(spec.name, reference.checkpoint_sha256, part, precision, profile, trt.__version__, sm)
    path = ENGINE.path(out, spec.name, part, precision, key=key)  # the key: another build is another file
    meta = {"format": ENGINE.cli, "tensorrt": trt.__version__, "sm": sm, "gpu": torch.cuda.get_device_name(),
            "engine_key": key, "opset": opset, "image_size": spec.image_size,
            "embedding_shape": list(spec.embedding_shape),
            "multimask": reference.decoder.multimask}
    if path.is_file() and sidecar_path(path).is_file():
        cached = read_sidecar(path)
        if cached.get("engine_key") == key and cached.get("parity", {}).get("passed"):
            return path, cached
    onnx_path = ONNX.path(out, spec.name, part, "fp32")
    if not onnx_path.is_file():
        onnx_path, _ = export_onnx(reference, part, out, opset=opset, precision="fp32")
    meta["inputs"] = graph_inputs(onnx_path)  # the engine takes what its graph takes (an older decoder's per prompt)
    from ..backends.tensorrt_backend import TensorRTBackend

    for fp32_norms in ((False, True) if precision == "fp16" else (False,)):
        engine = _build(onnx_path, part, precision, profile, spec, meta["inputs"], fp32_norms)
        atomic_write(path, lambda tmp: tmp.write_bytes(engine))
        meta.update({"fp32_layernorm": fp32_norms, "model": spec.name, "part": part, "precision": precision,
                     "checkpoint_sha256": reference.checkpoint_sha256})
        write_sidecar(path, meta)
        if samples is None:
            break
        check = check_encoder if part == "encoder" else check_decoder
        report = check(TensorRTBackend(**{part: path}), reference, samples, precision, DEFAULT_IOU[precision])
        if report.passed:
            break
    return path, meta
