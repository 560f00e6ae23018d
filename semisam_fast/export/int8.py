"""int8 encoders through onnxruntime's quantization, always followed by the parity gate (mask IoU >= 0.97).

dynamic (default): int8 weights of the Linear layers (MatMul), per output channel, activations quantised at run time,
  except the MatMuls that read a GELU output (the MLPs' second Linear), whose heavy-tailed activations do not survive
  one per-tensor int8 scale. Measured on LiteMedSAM over LA (bench/results, README): all MatMuls -> mask IoU 0.955;
  without the post-GELU ones -> 0.98, also on cases the choice was not made on. Run one image at a time (see
  `per_image` below).
static: QDQ over Conv and MatMul, calibrated on real slices of another case than the gate's. Faster on paper, but
  TinyViT's convolutions lose too much (mask IoU 0.74-0.80 here): exported, gated, refused.
"""
from __future__ import annotations

import logging
from pathlib import Path

import onnx

from ..errors import UserError
from ..models import LoadedModel
from ..samples import load_samples

CALIBRATION_CASE = 1  # the parity gate checks case 0


class _SliceReader:
    """CalibrationDataReader over preprocessed real slices (LA when present, else the phantom)."""

    def __init__(self, model: LoadedModel, input_name: str, n: int = 16, data=None) -> None:
        samples = load_samples(n, data, case=CALIBRATION_CASE)
        self.batches = [{input_name: model.preprocess(s[None]).numpy()} for s in samples.slices]

    def get_next(self):
        return self.batches.pop() if self.batches else None

    def rewind(self) -> None:  # older onnxruntime versions do not call it
        pass


def post_gelu_matmuls(graph: onnx.GraphProto, hops: int = 4) -> list[str]:
    """Weighted MatMuls whose activation input comes from a GELU (a Gelu op, or the Erf pattern the TorchScript
    exporter writes: Div -> Erf -> Add -> Mul -> Mul), found by walking a few producers up."""
    weights = {init.name for init in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    found = []
    for node in graph.node:
        if node.op_type != "MatMul" or not any(i in weights for i in node.input):
            continue
        frontier = [i for i in node.input if i not in weights]
        for _ in range(hops):
            parents = [producer[name] for name in frontier if name in producer]
            if any(p.op_type in ("Gelu", "Erf") for p in parents):
                found.append(node.name)
                break
            frontier = [i for p in parents if p.op_type in ("Mul", "Add", "Div") for i in p.input if i not in weights]
    return found


def quantize_encoder(model: LoadedModel, fp32_path: Path, out_path: Path, mode: str = "dynamic",
                     data=None) -> dict:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in ("dynamic", "static"):
        raise UserError(f"int8 mode must be dynamic or static, not {mode!r}")
    prepared = out_path.with_name(out_path.stem + ".pre" + out_path.suffix)
    logging.disable(logging.WARNING)  # the quantizer warns per LayerNorm weight through the root logger
    try:
        # shape inference + graph clean-up first, as onnxruntime recommends before quantizing
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared), load_external_data=False).graph
        if mode == "dynamic":
            kept = post_gelu_matmuls(graph)
            # reduce_range: 7-bit weights, no int16 overflow in AVX2's u8*s8 multiply-add (no VNNI needed)
            quantize_dynamic(str(prepared), str(out_path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                             per_channel=True, reduce_range=True, nodes_to_exclude=kept)
            # activation scales are computed per tensor at run time, so a batch's images would share one scale
            # and change each other's embeddings: the backends run this artefact one image at a time
            info = {"quantized_ops": ["MatMul"], "kept_fp32": len(kept), "per_image": True}
        else:
            quantize_static(str(prepared), str(out_path), _SliceReader(model, graph.input[0].name, data=data),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=True)
            info = {"quantized_ops": ["Conv", "MatMul"], "calibration_case": CALIBRATION_CASE}
    finally:
        logging.disable(logging.NOTSET)
        prepared.unlink(missing_ok=True)
    return {"quantization": mode, "source": fp32_path.name, **info}
