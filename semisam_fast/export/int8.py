"""int8 encoders through onnxruntime's quantization: dynamic (weights only) or static (QDQ, calibrated on real
slices). Either way the result goes through the parity gate (mask IoU >= 0.97 by default)."""
from __future__ import annotations

import logging
from pathlib import Path

import onnx

from ..errors import UserError
from ..models import LoadedModel
from ..samples import load_samples


class _SliceReader:
    """CalibrationDataReader over preprocessed real slices (LA when present, else the phantom)."""

    def __init__(self, model: LoadedModel, input_name: str, n: int = 16, data=None) -> None:
        samples = load_samples(n, data)
        self.batches = [{input_name: model.preprocess(s[None]).numpy()} for s in samples.slices]

    def get_next(self):
        return self.batches.pop() if self.batches else None

    def rewind(self) -> None:  # older onnxruntime versions do not call it
        pass


def quantize_encoder(model: LoadedModel, fp32_path: Path, out_path: Path, mode: str = "dynamic",
                     data=None) -> dict:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in ("dynamic", "static"):
        raise UserError(f"int8 mode must be dynamic or static, not {mode!r}")
    prepared = out_path.with_name(out_path.stem + ".pre.onnx")
    logging.disable(logging.WARNING)  # the quantizer warns per LayerNorm weight through the root logger
    try:
        # shape inference + graph clean-up first, as onnxruntime recommends before quantizing
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(out_path), weight_type=QuantType.QInt8)
        else:
            name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
            quantize_static(str(prepared), str(out_path), _SliceReader(model, name, data=data),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)
        prepared.unlink(missing_ok=True)
    return {"quantization": mode, "source": fp32_path.name}
