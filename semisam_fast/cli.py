"""The `semisam-fast` command line: each command is a thin wrapper over the library."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SemiSAM with an exported, batched, cached Segment Anything Model.")
console = Console(stderr=True)


def _log(message: str) -> None:
    console.print(message, highlight=False)


@app.command("export")
def export_cmd(
    model: str = typer.Option("litemedsam", help="litemedsam | medsam | vit_b | vit_l | vit_h | tiny"),
    checkpoint: Optional[Path] = typer.Option(None, help="weights file (required for medsam / vit_*)"),
    part: str = typer.Option("all", help="encoder | decoder | all"),
    format: str = typer.Option("onnx", "--format", help="onnx | engine (TensorRT)"),
    precision: str = typer.Option("fp32", help="fp32 | fp16"),
    batch: Optional[str] = typer.Option(None, help="MIN,OPT,MAX batch (TensorRT profile; recorded for ONNX)"),
    opset: int = typer.Option(17, help="ONNX opset (>= 17)"),
    out: Path = typer.Option(Path("engines"), help="output folder"),
    threshold: Optional[float] = typer.Option(None, help="parity gate mask IoU (default 0.99; 0.97 int8)"),
    data: Optional[Path] = typer.Option(None, help="images for the parity gate (default: LA if present, else phantom)"),
) -> None:
    """Export SAM's encoder / decoder, run the parity gate, write a JSON sidecar beside each file."""
    from .export import export

    for result in export(model, checkpoint, part, format, precision, opset, batch, out, threshold, data, _log):
        _log(f"[green]ok[/green] {result.path}  {result.report.summary()}")


@app.command()
def verify(
    artefact: Path = typer.Argument(..., help=".onnx or .engine file with its sidecar"),
    checkpoint: Optional[Path] = typer.Option(None, help="reference weights (default: the one in the sidecar)"),
    threshold: Optional[float] = typer.Option(None, help="mask IoU threshold"),
    data: Optional[Path] = typer.Option(None, help="images for the gate"),
) -> None:
    """Run the parity gate on an artefact against its torch reference; exit 2 when it fails."""
    from .export.parity import enforce, verify_artefact

    report = verify_artefact(artefact, checkpoint, threshold, data=data)
    print(json.dumps(report.as_dict(), indent=2))
    enforce(report)
    _log(f"[green]passed[/green] {report.summary()}")


@app.command()
def doctor() -> None:
    """Versions, devices, onnxruntime providers, where LiteMedSAM's weights and the LA data were found."""
    from .doctor import report

    for key, value in report().items():
        print(f"{key:20s} {value}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="output folder"),
    data: Optional[Path] = typer.Option(None, help="LA / NIfTI / PNG folder instead of the built-in phantom"),
) -> None:
    """The main job on the built-in default: export LiteMedSAM, verify it, segment a sample, write overlays."""
    from .demo import run_export_and_segment

    run_export_and_segment(out, data, _log)


@app.command()
def embed(
    data: Path = typer.Option(..., help="LA h5 / NIfTI / PNG folder"),
    list_file: Optional[Path] = typer.Option(None, "--list", help="case list (default: the folder's own)"),
    model: str = typer.Option("litemedsam", help="registered model"),
    checkpoint: Optional[Path] = typer.Option(None, help="weights (required for medsam / vit_*)"),
    backend: str = typer.Option("torch", help="torch | onnx | engine"),
    artefact: Optional[Path] = typer.Option(None, help="encoder .onnx/.engine or export folder (default engines/)"),
    precision: str = typer.Option("fp32", help="torch precision fp32 | fp16 | bf16"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    batch: int = typer.Option(8, min=1, help="slices per encoder call"),
    every: int = typer.Option(1, min=1, help="embed every k-th slice only (a documented subset)"),
    cache: Path = typer.Option(..., help="cache folder"),
) -> None:
    """Encode every slice of the listed cases once, into a resumable fp16 embedding cache."""
    from .backends import create_backend
    from .data import open_dataset
    from .embed import build_cache

    dataset = open_dataset(data, list_file)
    runtime = create_backend(backend, model, checkpoint, artefact, device, precision)
    summary = build_cache(dataset, runtime, cache, batch=batch, every=every)
    _log(f"[green]embedded[/green] {summary.line()}")


@app.command("pseudo-label")
def pseudo_label_cmd(
    cache: Path = typer.Option(..., help="cache folder built by embed"),
    data: Path = typer.Option(..., help="the data the cache was built from"),
    list_file: Optional[Path] = typer.Option(None, "--list", help="case list (default: the cached cases)"),
    prompt: str = typer.Option("gt-box", help="gt-box | mask-box | points"),
    masks: Optional[Path] = typer.Option(None, help="mask volumes for --prompt mask-box"),
    margin: float = typer.Option(3.0, help="box margin in pixels"),
    checkpoint: Optional[Path] = typer.Option(None, help="weights (required for medsam / vit_*)"),
    backend: str = typer.Option("torch", help="decoder backend: torch | onnx | engine"),
    artefact: Optional[Path] = typer.Option(None, help="decoder .onnx/.engine or export folder"),
    batch: int = typer.Option(32, min=1, help="slices per decoder call"),
    out: Path = typer.Option(..., help="output folder for masks, report.json and overlays"),
) -> None:
    """Prompts from masks -> SAM masks from cached embeddings, written in the input's format; Dice when labels exist."""
    from .backends import create_backend
    from .cache import EmbeddingCache
    from .data import open_dataset, read_list
    from .pseudo_label import pseudo_label

    store = EmbeddingCache(cache)
    dataset = open_dataset(data, list_file)
    case_ids = read_list(list_file) if list_file else [c for c in dataset.case_ids if c in set(store.case_ids)]
    runtime = create_backend(backend, store.fingerprint["model"], checkpoint, artefact)
    report = pseudo_label(dataset, store, runtime, out, case_ids, prompt, masks, margin, batch)
    print(report.table())
    _log(f"[green]wrote[/green] {len(report.outputs)} mask volumes to {out}")


def main() -> None:
    from .runtime import tune_allocator

    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    from . import doctor

    doctor.ALLOCATOR = tune_allocator()
    try:
        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line, whatever the terminal width
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted", highlight=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
