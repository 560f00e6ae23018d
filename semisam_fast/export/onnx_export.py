"""ONNX export of the encoder (dynamic batch) and the batched prompt decoder (dynamic batch, prompts, points)."""
from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from ..artefact import external_data_path
from ..backends.base import DECODER_INPUTS
from ..errors import UserError
from ..formats import artefact_path
from ..models import LoadedModel

EXTERNAL_DATA_LIMIT = 1 << 31  # protobuf cannot hold a single file over 2 GiB (ViT-H)


def _quiet_export(module: torch.nn.Module, args: tuple, path: Path, **kwargs) -> None:
    # The TorchScript exporter: it keeps the reshapes symbolic in batch for these models, where torch.export
    # refuses LiteMedSAM's TinyViT (docs/architecture.md: Pitfalls). Its tracer warnings are about shapes we check
    # in the parity gate.
    # no_grad: without it tracing keeps every activation for autograd (ViT-B at 1024 then needs > 24 GB)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, do_constant_folding=True, **kwargs)


def _tensor_bytes(model: onnx.ModelProto) -> int:
    """The bytes of a graph's weights, counted without serialising it (`ByteSize()` raises on a > 2 GiB proto,
    ViT-H's)."""
    tensors = list(model.graph.initializer)
    tensors += [a.t for node in model.graph.node for a in node.attribute if a.HasField("t")]
    return sum(len(t.raw_data) or 4 * (len(t.float_data) + len(t.int32_data)) + 8 * len(t.int64_data) for t in tensors)


def graph_inputs(path: Path) -> dict[str, list]:
    """An exported graph's input shapes as its sidecar writes them (dynamic axes by name), read from the file: what
    an engine built from it records, so a backend knows e.g. whether `mask_input` broadcasts (`mask_batch`)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return {value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            for value in graph.input}


def _finish(raw: Path, path: Path, precision: str, external: bool | None = None) -> None:
    """Optional fp16 conversion (I/O stays fp32); one external data file beside the .onnx for > 2 GiB graphs."""
    model = onnx.load(str(raw), load_external_data=True)
    if precision == "fp16":
        from onnxconverter_common import float16

        model = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    large = _tensor_bytes(model) > EXTERNAL_DATA_LIMIT - (1 << 24) if external is None else external
    external_data_path(path).unlink(missing_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    if large:
        onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=external_data_path(path).name, size_threshold=1024)
    else:
        onnx.save_model(model, str(tmp))
    tmp.replace(path)


def _export(module: torch.nn.Module, args: tuple, path: Path, precision: str, external: bool | None = None,
            **kwargs) -> None:
    # Export into a scratch folder first: the exporter spills > 2 GiB models as one file per tensor, and a failed
    # export must not leave a half-written artefact where a good one stood.
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        raw = Path(scratch) / "raw.onnx"
        _quiet_export(module, args, raw, **kwargs)
        _finish(raw, path, precision, external)


def export_encoder(model: LoadedModel, path: Path, opset: int = 17, precision: str = "fp32",
                   example_batch: int = 1, external: bool | None = None) -> dict:
    """external: None = external data only when the graph is over 2 GiB (ViT-H); True/False to force.
    example_batch 1: tracing holds the example's activations (ViT-B at 1024: export peak RSS 4.5 GB at batch 1, 7.7 GB
    at 2); the batch axis stays dynamic either way, which the gate's batch-vs-single check proves on every export."""
    size = model.spec.image_size
    example = torch.randn(example_batch, 3, size, size)
    with torch.no_grad():
        embedding_shape = list(model.encoder(example[:1]).shape[1:])
    _export(model.encoder, (example,), path, precision, external, opset_version=opset, input_names=["images"],
                  output_names=["embeddings"],
                  dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}})
    return {"outputs": {"embeddings": ["batch", *embedding_shape]},
            "image_size": size, "embedding_shape": embedding_shape}


def export_decoder(model: LoadedModel, path: Path, opset: int = 17, precision: str = "fp32") -> dict:
    side = model.spec.low_res_side
    embeddings = torch.randn(2, *model.spec.embedding_shape)
    coords = torch.rand(2, 3, 2, 2) * model.spec.image_size
    labels = torch.tensor([2, 3]).expand(2, 3, 2).contiguous()
    mask_input = torch.zeros(1, 1, 1, side, side)  # one for every prompt: PromptDecoder broadcasts it
    has_mask = torch.zeros(1)
    names = list(DECODER_INPUTS)
    dynamic = {
        "image_embeddings": {0: "batch"},
        "point_coords": {0: "batch", 1: "prompts", 2: "points"},
        "point_labels": {0: "batch", 1: "prompts", 2: "points"},
        "mask_input": {0: "mask_batch", 1: "mask_prompts"},  # B x N, or 1 x 1 for all
        "low_res_masks": {0: "batch", 1: "prompts"},
        "iou_predictions": {0: "batch", 1: "prompts"},
    }
    _export(model.decoder, (embeddings, coords, labels, mask_input, has_mask), path, precision, opset_version=opset,
                  input_names=names, output_names=["low_res_masks", "iou_predictions"], dynamic_axes=dynamic)
    k = 3 if model.decoder.multimask else 1
    return {"outputs": {"low_res_masks": ["batch", "prompts", k, side, side],
                        "iou_predictions": ["batch", "prompts", k]},
            "multimask": model.decoder.multimask, "image_size": model.spec.image_size}


def export_onnx(model: LoadedModel, part: str, out_dir: Path, opset: int = 17, precision: str = "fp32") -> tuple[Path, dict]:
    """Write <out>/<model>_<part>_<precision>.onnx (`formats.artefact_path`); return its path and I/O shapes (sidecar
    written by the caller)."""
    if opset < 17:
        raise UserError(f"opset {opset} is too old: 17 or newer keeps LayerNormalization native (fp16 stability)")
    if precision not in ("fp32", "fp16"):
        raise UserError(f"ONNX export precision must be fp32, fp16 or int8 (encoder), not {precision!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = artefact_path(out_dir, model.spec.name, part, precision)
    exporter = {"encoder": export_encoder, "decoder": export_decoder}[part]
    shapes = exporter(model, path, opset=opset, precision=precision)
    return path, {"inputs": graph_inputs(path), **shapes}  # the inputs as the written graph declares them
