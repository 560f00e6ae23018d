"""Backends behind one protocol, and the factory that picks one from a name or an artefact path. Which backend runs
which files, and where they are, is `formats.py`'s table; nothing here names a suffix."""
from __future__ import annotations

from pathlib import Path

from ..artefact import read_sidecar
from ..errors import UserError
from ..formats import DEFAULT_FOLDER, FOLDER_SEARCH, FORMATS, find_format, format_of, format_of_files, pattern
from .base import ArtefactBackend, Backend
from .onnx_backend import OnnxBackend
from .torch_backend import TorchBackend

__all__ = ["ArtefactBackend", "Backend", "OnnxBackend", "TorchBackend", "create_backend", "open_artefact"]


def open_artefact(path: str | Path, provider: str = "cpu", runtime: str | None = None, precision: str | None = None,
                  **kwargs) -> Backend:
    """A backend over one artefact (its sidecar says which part it is). `runtime`: a format that runs files of this
    suffix (an .onnx file: onnx or openvino, which compiles it in `precision`); otherwise the suffix decides."""
    path = Path(path)
    meta = read_sidecar(path)
    fmt = find_format(runtime) if runtime else None
    if fmt is None or fmt.suffix != path.suffix:
        fmt = format_of(path)
    return fmt.backend_class().open({meta["part"]: path}, precision=precision, provider=provider, **kwargs)


def find_artefacts(folder: str | Path, model: str, precision: str | None = None,
                   suffixes: tuple[str, ...] = FOLDER_SEARCH) -> dict[str, Path]:
    """encoder/decoder files for `model` in an export folder (fp32 preferred when no precision is given)."""
    found: dict[str, Path] = {}
    for suffix in suffixes:
        for path in sorted(Path(folder).glob(pattern(model, suffix))):
            try:
                meta = read_sidecar(path)
            except UserError:
                continue
            if meta["model"] != model or (precision and meta["precision"] != precision):
                continue
            if meta["part"] not in found or meta["precision"] == "fp32":
                found[meta["part"]] = path
    return found


def create_backend(name: str = "torch", model: str = "litemedsam", checkpoint: str | Path | None = None,
                   artefact: str | Path | None = None, device: str = "cpu", precision: str | None = None,
                   loaded=None) -> Backend:
    """name: torch, a format of `formats.FORMATS` (onnx | openvino | engine, or its runtime's name), or a path to an
    artefact / export folder (as ultralytics' AutoBackend).

    torch runs `model` from `checkpoint` in `precision` (a compute dtype, default fp32); openvino compiles the fp32
    ONNX files in `precision` (fp32 or bf16). onnx / engine open exported
    artefacts: `artefact` (a file or an export folder, default engines/), which must have been exported for
    `model`, from `checkpoint` when one is given, and in `precision` when one is given (for a folder, it picks that
    export; default: fp32 where there is one). A mismatch is refused, never silently ignored."""
    from ..fsutil import file_sha256
    from ..models import load_model

    if name == "torch":
        if artefact is not None:
            raise UserError(f"--artefact {artefact} is for the {', '.join(FORMATS)} backends; the torch backend runs "
                            f"the checkpoint (drop --artefact, or pass --backend {' / '.join(FORMATS)})")
        return TorchBackend(loaded or load_model(model, checkpoint), device=device, precision=precision or "fp32")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    sha = file_sha256(checkpoint) if checkpoint is not None else None
    fmt = find_format(name)  # None: a path given as the name; the files' own suffixes decide
    target = Path(artefact or (name if fmt is None else DEFAULT_FOLDER))
    # openvino compiles the fp32 ONNX files itself, in `precision`; the others open the export made in `precision`
    wanted_precision = fmt.file_precision if fmt is not None and fmt.file_precision else precision
    if target.is_file():
        if fmt is not None and target.suffix != fmt.suffix:
            raise UserError(f"--backend {name} needs a {fmt.suffix} file, got {target.name}")
        parts = {read_sidecar(target)["part"]: target}
    elif target.is_dir():
        parts = find_artefacts(target, model, wanted_precision, (fmt.suffix,) if fmt else FOLDER_SEARCH)
    else:
        raise UserError(f"no artefact at {target}; export one with `semisam-fast export --model {model}`")
    if not parts:
        which = f" {wanted_precision}" if wanted_precision else ""
        raise UserError(f"no exported {model}{which} artefacts in {target}; run `semisam-fast export --model {model} "
                        f"--out {target}`")
    fmt = fmt or format_of_files(list(parts.values()))
    # every backend checks the files against the model (a tiny encoder must not fill a litemedsam cache) and checkpoint
    backend = fmt.backend_class().open(parts, device=device, precision=precision, model=model, checkpoint_sha256=sha)
    if precision is not None and backend.precision != precision:
        raise UserError(f"{target.name} was exported in {backend.precision}, not {precision}; pass --precision "
                        f"{backend.precision} or another artefact")
    return backend
