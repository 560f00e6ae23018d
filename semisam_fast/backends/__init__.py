"""Backends behind one protocol, and the factory that picks one from a name or an artefact path."""
from __future__ import annotations

from pathlib import Path

from ..artefact import read_sidecar
from ..errors import UserError
from .base import Backend
from .onnx_backend import OnnxBackend
from .torch_backend import TorchBackend

__all__ = ["Backend", "OnnxBackend", "TorchBackend", "create_backend", "open_artefact"]


def open_artefact(path: str | Path, provider: str = "cpu", **kwargs) -> Backend:
    """A backend over one artefact (.onnx or .engine), chosen by suffix; its sidecar says which part it is."""
    path = Path(path)
    meta = read_sidecar(path)
    if path.suffix == ".onnx":
        return OnnxBackend(**{meta["part"]: path}, provider=provider, **kwargs)
    if path.suffix == ".engine":
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(**{meta["part"]: path}, **kwargs)
    raise UserError(f"unknown artefact type {path.suffix!r} ({path}); expected .onnx or .engine")


def find_artefacts(folder: str | Path, model: str, precision: str | None = None,
                   suffixes: tuple[str, ...] = (".engine", ".onnx")) -> dict[str, Path]:
    """encoder/decoder files for `model` in an export folder (fp32 preferred when no precision is given)."""
    found: dict[str, Path] = {}
    for suffix in suffixes:
        for path in sorted(Path(folder).glob(f"{model}_*{suffix}")):
            try:
                meta = read_sidecar(path)
            except UserError:
                continue
            if meta["model"] != model or (precision and meta["precision"] != precision):
                continue
            if meta["part"] not in found or meta["precision"] == "fp32":
                found[meta["part"]] = path
    return found


# backend names -> the artefact suffix they open
_SUFFIX = {"onnx": ".onnx", "onnxruntime": ".onnx", "openvino": ".onnx", "engine": ".engine", "tensorrt": ".engine"}


def create_backend(name: str = "torch", model: str = "litemedsam", checkpoint: str | Path | None = None,
                   artefact: str | Path | None = None, device: str = "cpu", precision: str | None = None,
                   loaded=None) -> Backend:
    """name: torch | onnx | openvino | engine, or a path to an artefact / export folder (as ultralytics' AutoBackend).

    torch runs `model` from `checkpoint` in `precision` (a compute dtype, default fp32); openvino compiles the fp32
    ONNX files in `precision` (fp32 or bf16). onnx / engine open exported
    artefacts: `artefact` (a file or an export folder, default engines/), which must have been exported for
    `model`, from `checkpoint` when one is given, and in `precision` when one is given (for a folder, it picks that
    export; default: fp32 where there is one). A mismatch is refused, never silently ignored."""
    from ..fsutil import file_sha256
    from ..models import load_model

    if name == "torch":
        if artefact is not None:
            raise UserError(f"--artefact {artefact} is for the onnx and engine backends; the torch backend runs the "
                            "checkpoint (drop --artefact, or pass --backend onnx / engine)")
        return TorchBackend(loaded or load_model(model, checkpoint), device=device, precision=precision or "fp32")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    sha = file_sha256(checkpoint) if checkpoint is not None else None
    target = Path(artefact or (name if name not in _SUFFIX else "engines"))
    suffix = _SUFFIX.get(name)  # None: a path given as the name; the files' own suffixes decide
    # openvino compiles the fp32 ONNX files itself, in `precision`; the others open the export made in `precision`
    wanted_precision = "fp32" if name == "openvino" else precision
    if target.is_file():
        if suffix is not None and target.suffix != suffix:
            raise UserError(f"--backend {name} needs a {suffix} file, got {target.name}")
        parts = {read_sidecar(target)["part"]: target}
    elif target.is_dir():
        parts = find_artefacts(target, model, wanted_precision, (suffix,) if suffix else (".engine", ".onnx"))
    else:
        raise UserError(f"no artefact at {target}; export one with `semisam-fast export --model {model}`")
    if not parts:
        which = f" {wanted_precision}" if wanted_precision else ""
        raise UserError(f"no exported {model}{which} artefacts in {target}; run `semisam-fast export --model {model} "
                        f"--out {target}`")
    # every backend checks the files against the model (a tiny encoder must not fill a litemedsam cache) and checkpoint
    checks = {"model": model, "checkpoint_sha256": sha}
    if name == "openvino":
        from .openvino_backend import OpenVinoBackend

        return OpenVinoBackend(**parts, precision=precision or "fp32", **checks)
    if any(p.suffix == ".engine" for p in parts.values()):
        from .tensorrt_backend import TensorRTBackend

        backend = TensorRTBackend(**parts, **checks)
    else:
        backend = OnnxBackend(**parts, provider="cuda" if device.startswith("cuda") else "cpu", **checks)
    if precision is not None and backend.precision != precision:
        raise UserError(f"{target.name} was exported in {backend.precision}, not {precision}; pass --precision "
                        f"{backend.precision} or another artefact")
    return backend
