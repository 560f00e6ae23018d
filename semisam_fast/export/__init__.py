"""One exporter: ONNX (encoder, decoder) and TensorRT engines, each through the parity gate, each with a sidecar."""
from __future__ import annotations

import datetime as _dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..artefact import artefact_files, external_data_path, sidecar_path, write_sidecar
from ..errors import UserError
from ..choices import EXPORT_FORMATS
from ..formats import DEFAULT_FOLDER, ENGINE, ONNX, artefact_path
from ..models import load_model
from ..runtime import PeakMemory, untuned_allocator
from ..samples import load_samples
from .onnx_export import export_onnx
from .parity import ParityReport, enforce, verify_artefact

PARTS = ("encoder", "decoder")


@dataclass
class ExportResult:
    path: Path
    report: ParityReport


def parse_batch(spec: str | None) -> tuple[int, int, int]:
    """"MIN,OPT,MAX" -> ints (TensorRT optimisation profile; recorded for ONNX)."""
    if not spec:
        return (1, 8, 32)
    try:
        values = tuple(int(v) for v in spec.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise UserError(f"--batch must be MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX, got {spec!r}")
    return values


def _export_int8(reference, out: Path, opset: int, mode: str, data) -> tuple[Path, dict]:
    from .int8 import quantize_encoder

    fp32, shapes = export_onnx(reference, "encoder", out, opset=opset, precision="fp32")
    path = artefact_path(out, reference.spec.name, "encoder", "int8")
    info = quantize_encoder(reference, fp32, path, mode, data)
    return path, {"format": ONNX.cli, "opset": opset, "precision": "int8", **shapes, **info}


@untuned_allocator()
def export(model: str = "litemedsam", checkpoint: str | Path | None = None, part: str = "all",
           fmt: str = "onnx", precision: str = "fp32", opset: int = 17, batch: str | None = None,
           out: str | Path = DEFAULT_FOLDER, threshold: float | None = None, data: str | Path | None = None,
           progress=None, int8_mode: str = "dynamic") -> list[ExportResult]:
    """Export, gate, describe. Raises ParityError when the gate fails; an ONNX file that failed is not written
    under its name (an engine is, with passed=false in its sidecar, and refused when opened).
    Runs under glibc's own allocator settings (`runtime.untuned_allocator`)."""
    if part not in (*PARTS, "all"):
        raise UserError(f"--part must be encoder, decoder or all, not {part!r}")
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"--format must be {' or '.join(EXPORT_FORMATS)}, not {fmt!r}")
    profile = parse_batch(batch)
    reference = load_model(model, checkpoint)
    samples = load_samples(4, data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in PARTS if part == "all" else (part,):
        # ONNX files are made and gated in a hidden folder beside their place, and moved there only when the gate
        # passes: a failed export never replaces a passing artefact (engines keep their own cache in `out`; one
        # that fails is refused when opened, by its sidecar's parity record)
        with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as staging:
            results.append(_export_part(reference, model, name, fmt, precision, opset, profile, out, Path(staging),
                                        samples, threshold, data, progress, int8_mode))
        enforce(results[-1].report)
    return results


def _export_part(reference, model: str, name: str, fmt: str, precision: str, opset: int,
                 profile: tuple[int, int, int], out: Path, staging: Path, samples, threshold: float | None, data,
                 progress, int8_mode: str) -> ExportResult:
    """One part exported (into `staging` for ONNX), described, gated; published to `out` when it passes."""
    if progress:
        progress(f"exporting {model} {name} ({fmt}, {precision})")
    with PeakMemory() as memory:
        if fmt == ENGINE.cli:
            from .tensorrt import build_engine

            path, meta = build_engine(reference, name, out, precision=precision, profile=profile, opset=opset,
                                      samples=samples)
        elif precision == "int8" and name == "encoder":
            path, meta = _export_int8(reference, staging, opset, int8_mode, data)
        else:
            part_precision = "fp32" if precision == "int8" else precision  # int8 applies to the encoder only
            path, shapes = export_onnx(reference, name, staging, opset=opset, precision=part_precision)
            meta = {"format": ONNX.cli, "opset": opset, "precision": part_precision, **shapes}
    meta["export_peak_rss_gb"] = {"value": memory.gb, "scope": memory.scope}  # the gate's is its own
    meta.setdefault("precision", precision)
    meta.update({"model": model, "part": name, "checkpoint": reference.checkpoint,
                 "checkpoint_sha256": reference.checkpoint_sha256,
                 "encoder_checkpoint_sha256": reference.encoder_checkpoint_sha256, "batch_profile": list(profile),
                 "torch": torch.__version__, "created": _dt.datetime.now(_dt.timezone.utc).isoformat()})
    write_sidecar(path, meta)
    if progress:
        progress(f"parity gate: {name}")
    report = verify_artefact(path, samples=samples, reference=reference, threshold=threshold)
    meta["parity"] = report.as_dict()
    write_sidecar(path, meta)
    if report.passed and path.parent == staging:
        path = _publish(path, out)
    return ExportResult(path, report)


def _publish(staged: Path, out: Path) -> Path:
    """Move a gated artefact (its .onnx.data first, its sidecar last) into `out`. Between the moves the old sidecar
    does not match the new bytes, so nothing half-published is ever opened."""
    path = out / staged.name
    files = artefact_files(staged)
    for file in reversed(files):
        os.replace(file, out / file.name)
    if len(files) == 1:  # a graph of the old export's > 2 GiB layout leaves no weights file behind
        external_data_path(path).unlink(missing_ok=True)
    os.replace(sidecar_path(staged), sidecar_path(path))
    return path


__all__ = ["ExportResult", "ParityReport", "export", "parse_batch", "verify_artefact"]
