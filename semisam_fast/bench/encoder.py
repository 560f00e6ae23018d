"""`bench encoder`: the image encoder in torch fp32 (the reference) and bf16, onnxruntime over each exported
precision, and OpenVINO over the fp32 export, interleaved per batch size; each candidate's parity gate beside it."""
from __future__ import annotations

from pathlib import Path

from ..artefact import read_sidecar, sidecar_path
from ..doctor import has_bf16_matmuls
from ..formats import DEFAULT_FOLDER, ONNX, OPENVINO, artefact_path
from .timing import gflop, interleaved, summarise


def gate_figures(report) -> dict:
    """What a benchmark records of a parity gate it ran itself (`export.parity.ParityReport`)."""
    return {"mask_iou": report.mask_iou, "mask_iou_min": report.mask_iou_min, "passed": report.passed,
            "embedding_rel_l2": report.figures["embedding_rel_l2"]}


def exported_encoders(model: str, engines: Path, precisions: list[str], log) -> dict[str, Path]:
    """The exported ONNX encoder per precision (where `formats.artefact_path` says `export` writes it), exported
    when missing; one that misses the gate is still timed, its sidecar's parity record says so."""
    from ..errors import UserError
    from ..export import export

    found = {}
    for precision in precisions:
        path = artefact_path(engines, model, "encoder", precision)
        if not path.is_file() or not sidecar_path(path).is_file():
            log(f"exporting {model} encoder {precision} for the benchmark")
            try:
                export(model, part="encoder", precision=precision, out=engines)
            except UserError as exc:  # an artefact that misses the gate is still timed, and marked so
                log(f"  {exc}")
        if path.is_file():
            found[precision] = path
            read_sidecar(path)
    return found


def bench_encoder(model: str = "litemedsam", precisions: tuple[str, ...] = ("fp32", "int8"),
                  batches: tuple[int, ...] = (1, 4), repeats: int = 5, engines: Path = Path(DEFAULT_FOLDER),
                  log=print) -> dict:
    from ..backends import TorchBackend, open_artefact
    from ..models import load_model
    from ..samples import load_samples

    loaded = load_model(model)
    torch_fp32 = TorchBackend(loaded)
    artefacts = exported_encoders(model, engines, list(precisions), log)
    onnx = {p: open_artefact(path) for p, path in artefacts.items()}
    samples = load_samples(max(batches))
    images = loaded.preprocess(samples.slices)
    openvino, openvino_gates = _openvino_encoders(loaded, artefacts.get("fp32"), samples, log)
    torch_bf16 = None
    if has_bf16_matmuls():  # torch's bf16 weights pay off
        from ..export.parity import DEFAULT_IOU, check_encoder

        torch_bf16 = TorchBackend(load_model(model), precision="bf16")
        openvino_gates["torch_bf16"] = gate_figures(check_encoder(torch_bf16, loaded, samples, "bf16",
                                                                  DEFAULT_IOU["bf16"]))
    per_image = gflop(lambda: loaded.encoder(images[:1]))
    results = {}
    for batch in batches:
        x = images[:batch]
        candidates = {"torch_fp32": lambda x=x: torch_fp32.encode(x)}
        if torch_bf16 is not None:
            candidates["torch_bf16"] = lambda x=x: torch_bf16.encode(x)
        candidates.update({f"{ONNX.runtime}_{p}": (lambda x=x, b=b: b.encode(x)) for p, b in onnx.items()})
        candidates.update({f"{OPENVINO.runtime}_{p}": (lambda x=x, b=b: b.encode(x)) for p, b in openvino.items()})
        log(f"encoder {model} batch {batch}: {', '.join(candidates)}")
        results[f"batch_{batch}"] = summarise(interleaved(candidates, repeats), "torch_fp32", batch,
                                              gflop_per_item=per_image)
    gates = {p: read_sidecar(b.encoder.path).get("parity", {}) for p, b in onnx.items()}
    parity = {f"{ONNX.runtime}_{p}": {"mask_iou": g.get("mask_iou"), "mask_iou_min": g.get("mask_iou_min"),
                                      "passed": g.get("passed")} for p, g in gates.items()}
    parity.update(openvino_gates)
    exports = {f"{ONNX.cli}_{p}": read_sidecar(b.encoder.path).get("export_peak_rss_gb") for p, b in onnx.items()}
    return {"encoder": results, "model": model, "gflop_per_image": per_image, "parity": parity,
            "torch_attention": torch_fp32.attention,  # SAM ViTs: SDPA (the torch backend's default)
            "export_peak_rss_gb": exports,
            "openvino_kernels": {p: b.encoder.kernels() for p, b in openvino.items()},  # of the last batch's compile
            "providers": {p: b.encoder.provider for p, b in onnx.items()}}


def _openvino_encoders(loaded, fp32_onnx: Path | None, samples, log) -> tuple[dict, dict]:
    """OpenVINO over the fp32 ONNX encoder, in f32 and (where the CPU has BF16) bf16, each through the parity gate
    on the bench's own samples; none when OpenVINO is not installed."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        log("openvino not installed: its rows are skipped")
        return {}, {}
    from ..backends import open_artefact
    from ..errors import UserError
    from ..export.parity import DEFAULT_IOU, check_encoder

    backends, gates = {}, {}
    for precision in ("fp32", "bf16"):
        if fp32_onnx is None:
            continue
        try:
            backend = open_artefact(fp32_onnx, runtime=OPENVINO.cli, precision=precision)
        except UserError as exc:
            log(f"openvino {precision}: {exc}")
            continue
        report = check_encoder(backend, loaded, samples, precision, DEFAULT_IOU[precision])
        backends[precision] = backend
        gates[f"{OPENVINO.runtime}_{precision}"] = gate_figures(report)
    return backends, gates
