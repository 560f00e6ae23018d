"""The toolkit's own commands: doctor, demo, bench."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import typer

from .. import choices
from ..errors import UserError
from ..formats import DEFAULT_FOLDER
from .app import app, log


@app.command()
def doctor() -> None:
    """Versions, devices, onnxruntime providers, where LiteMedSAM's weights and the LA data were found."""
    from ..doctor import report

    for key, value in report().items():
        print(f"{key:20s} {value}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="output folder"),
    data: Optional[Path] = typer.Option(None, help="LA / NIfTI / PNG folder instead of the built-in phantom"),
    labeled: int = typer.Option(2, "--labelled", "--labeled", min=1, help="labelled cases (first N)"),
    val: int = typer.Option(2, min=0, help="validation cases (last N)"),
    unlabelled: int = typer.Option(4, min=1, help="unlabelled cases to embed and use"),
    iterations: int = typer.Option(150, min=1, help="training iterations per method"),
    adapt_steps: int = typer.Option(40, min=1, help="steps adapting SAM's mask decoder on the labelled cases"),
) -> None:
    """The whole job on the built-in default: export+verify LiteMedSAM, embed, pseudo-label, adapt SAM's decoder,
    train sup and semisam, evaluate, report."""
    from ..demo import run_demo

    run_demo(out, data, labeled, val, unlabelled, iterations, adapt_steps, log)


@app.command()
def bench(
    what: Literal[choices.BENCH_PARTS] = typer.Argument("all"),
    model: Literal[choices.MODELS] = typer.Option(choices.DEFAULT_MODEL, help="model for the timings"),
    precisions: str = typer.Option("fp32,int8", help="onnxruntime encoder precisions, beside torch fp32"),
    batch: str = typer.Option("1,4", help="encoder batch sizes"),
    repeats: int = typer.Option(5, min=1, help="interleaved rounds"),
    engines: Path = typer.Option(Path(DEFAULT_FOLDER), help="where exported artefacts are (exported if missing)"),
    out: Path = typer.Option(Path("bench/results/cpu.json"), help="JSON (a PNG plot is written beside it)"),
    data: Optional[Path] = typer.Option(None, help="run: the data set to train on; pseudo-label: to label"),
    cache: Optional[Path] = typer.Option(None, help="run: the embedding cache of its unlabelled cases"),
    artefact: Optional[Path] = typer.Option(None, help="run / pseudo-label: SAM .onnx or export folder"),
    backend: Optional[Literal[choices.BACKENDS]] = typer.Option(
        None, help="run / pseudo-label: SAM runtime (run default: onnx with --artefact, else torch; "
                   "pseudo-label: torch)"),
    precision: Optional[Literal[choices.RUNTIME_PRECISIONS]] = typer.Option(
        None, help="run / pseudo-label: SAM's precision (openvino: bf16 where the CPU has it)"),
    iterations: Optional[int] = typer.Option(None, min=1, help="run: iterations per run (default: the preset's)"),
    cases: Optional[int] = typer.Option(None, min=1, help="pseudo-label: the data set's first N cases (default all)"),
    device: Literal[choices.DEVICES] = typer.Option("cpu", help="pseudo-label: where torch runs SAM"),
) -> None:
    """Median/min/max latency and throughput, side by side and interleaved, as ratios to the reference; `run`:
    whole la-cpu runs of mt, semisam (with its pseudo-label rounds) and mt again, wall-clock; `pseudo-label`: every
    labelled slice encoded and decoded from its label box, end to end, no cache (`--backend`, `--precision`)."""
    from .. import bench as bench_lib

    try:
        batches = tuple(int(b) for b in batch.split(","))
    except ValueError:
        raise UserError(f"--batch must be comma-separated integers, got {batch!r}") from None
    results = bench_lib.run(what, out, model, precisions.split(","), batches, repeats, engines, log, data=data,
                            cache=cache, artefact=artefact, iterations=iterations, backend=backend,
                            precision=precision, cases=cases, device=device)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2, default=str))
    png = out.with_suffix(".png")
    log(f"[green]wrote[/green] {out}" + (f" and {png}" if png.is_file() else ""))
