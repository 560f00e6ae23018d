"""The runtime formats in one table: the name the CLI takes (`--backend`, `--format`), the runtime that runs it (a
backend's `name`, the benchmarks' row names), the suffix of its files, where an exported file lives, and which
backend class opens it. The factory (`backends.create_backend`), the exporter and the benchmarks read it; nothing
else spells a suffix or an artefact's file name.

Import-light on purpose (no torch, no runtime): `choices.py`, and through it the CLI, derive their values from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from .errors import UserError

DEFAULT_FOLDER = "engines"  # where `export` writes and an artefact backend looks when given no --artefact


def stem(model: str, part: str, precision: str) -> str:
    """An exported file's name without its suffix: <model>_<part>_<precision>."""
    return f"{model}_{part}_{precision}"


def pattern(model: str, suffix: str) -> str:
    """The glob of every exported file of `model` with `suffix` (any part, precision or engine key)."""
    return f"{model}_*{suffix}"


@dataclass(frozen=True)
class Format:
    cli: str  # the CLI's name for it (--backend, and --format where `exported`)
    runtime: str  # the backend's `name`: what `describe()` reports and benchmarks label their rows with
    suffix: str  # the suffix of the files it opens
    backend: str  # "module:Class" in semisam_fast.backends, imported only when opened (TensorRT is optional)
    exported: bool = True  # `export --format` writes files of its own (OpenVINO compiles the onnx format's)
    # the precision of the files it opens whatever precision it computes in (OpenVINO compiles fp32 ONNX files in
    # fp32 or bf16); None: it runs the export made in the precision asked for
    file_precision: str | None = None

    def path(self, folder: str | Path, model: str, part: str, precision: str, key: str | None = None) -> Path:
        """The file of `model`'s `part` this format opens for `precision` in `folder`. An engine's name ends in its
        cache key (`export.tensorrt.engine_key`), which only the builder knows."""
        tail = f"_{key}" if key else ""
        return Path(folder) / f"{stem(model, part, self.file_precision or precision)}{tail}{self.suffix}"

    def backend_class(self) -> type:
        """The `backends.ArtefactBackend` subclass that runs this format (imported here, on first use)."""
        module, name = self.backend.split(":")
        return getattr(import_module(f"{__package__}.backends.{module}"), name)


FORMATS: dict[str, Format] = {f.cli: f for f in (
    Format("onnx", "onnxruntime", ".onnx", "onnx_backend:OnnxBackend"),
    Format("openvino", "openvino", ".onnx", "openvino_backend:OpenVinoBackend", exported=False,
           file_precision="fp32"),
    Format("engine", "tensorrt", ".engine", "tensorrt_backend:TensorRTBackend"),
)}
ONNX, OPENVINO, ENGINE = FORMATS.values()
# a folder or files given without a format are searched engines first, then ONNX files (an fp32 ONNX file wins over
# an engine when no precision is asked for: `backends.find_artefacts`); files with an engine among them run in TensorRT
FOLDER_SEARCH = (ENGINE.suffix, ONNX.suffix)


def find_format(name: str) -> Format | None:
    """The format called `name` by the CLI (onnx, openvino, engine) or by its runtime (onnxruntime, tensorrt); None
    for any other name (the factory reads it as a path)."""
    return FORMATS.get(name) or next((f for f in FORMATS.values() if f.runtime == name), None)


def format_of(path: str | Path) -> Format:
    """The format that opens a file by default, by its suffix (an .onnx file: onnxruntime)."""
    suffix = Path(path).suffix
    for fmt in FORMATS.values():
        if fmt.exported and fmt.suffix == suffix:
            return fmt
    raise UserError(f"unknown artefact type {suffix!r} ({path}); expected "
                    f"{' or '.join(f.suffix for f in FORMATS.values() if f.exported)}")


def format_of_files(paths: list[Path]) -> Format:
    """The format that opens a set of files found without one: the first of FOLDER_SEARCH among their suffixes (an
    engine among them: TensorRT)."""
    rank = {suffix: i for i, suffix in enumerate(FOLDER_SEARCH)}
    return format_of(min(paths, key=lambda p: rank.get(Path(p).suffix, len(rank))))


def artefact_path(folder: str | Path, model: str, part: str, precision: str, fmt: str = "onnx",
                  key: str | None = None) -> Path:
    """Where `export` writes (and the backends find) `model`'s `part` in `precision` for the format named `fmt`."""
    return FORMATS[fmt].path(folder, model, part, precision, key)
