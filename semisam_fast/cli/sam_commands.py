"""SAM's commands: export and verify an artefact, embed a data set into the cache, adapt the decoder, pseudo-label."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import typer

from .. import choices
from ..errors import UserError
from ..formats import DEFAULT_FOLDER
from ..cli_options import option_parameters, with_options
from ..target_options import ADAPT_BOX_SCALE, TargetOptions
from ..train.config import recipe_targets
from .app import app, by_world, log


@app.command("export")
def export_cmd(
    model: Literal[choices.MODELS] = typer.Option(choices.DEFAULT_MODEL, help="SAM-family model"),
    checkpoint: Optional[Path] = typer.Option(None, help="weights file (required for medsam / vit_*)"),
    part: Literal[choices.EXPORT_PARTS] = typer.Option("all", help="what to export"),
    format: Literal[choices.EXPORT_FORMATS] = typer.Option("onnx", "--format",
                                help="onnx, or engine (TensorRT)"),
    precision: Literal[choices.EXPORT_PRECISIONS] = typer.Option("fp32",
                                   help="int8: encoder only, onnxruntime quantization"),
    int8_mode: Literal[choices.INT8_MODES] = typer.Option("dynamic",
                                   help="int8: dynamic (Linear layers) or static (calibrated QDQ)"),
    batch: Optional[str] = typer.Option(None, help="MIN,OPT,MAX batch (TensorRT profile; recorded for ONNX)"),
    opset: int = typer.Option(17, min=17, help="ONNX opset"),
    out: Path = typer.Option(Path(DEFAULT_FOLDER), help="output folder"),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0,
                                              help="parity gate mask IoU (default 0.99; 0.97 int8)"),
    data: Optional[Path] = typer.Option(None, help="images for the parity gate (default: LA if present, else phantom)"),
) -> None:
    """Export SAM's encoder / decoder, run the parity gate, write a JSON sidecar beside each file."""
    from ..export import export

    for result in export(model, checkpoint, part, format, precision, opset, batch, out, threshold, data, log,
                         int8_mode):
        log(f"[green]ok[/green] {result.path}  {result.report.summary()}")


@app.command()
def verify(
    artefact: Path = typer.Argument(..., help=".onnx or .engine file with its sidecar"),
    checkpoint: Optional[Path] = typer.Option(None, help="reference weights (default: the one in the sidecar)"),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="mask IoU threshold"),
    data: Optional[Path] = typer.Option(None, help="images for the gate"),
    runtime: Literal[choices.ONNX_RUNTIMES] = typer.Option("onnx",
                                                           help="run an .onnx file with onnxruntime or OpenVINO"),
    precision: Optional[Literal[("fp32", "bf16")]] = typer.Option(None, help="openvino: inference precision"),
) -> None:
    """Run the parity gate on an artefact against its torch reference; exit 2 when it fails."""
    from ..export.parity import enforce, verify_artefact

    report = verify_artefact(artefact, checkpoint, threshold, data=data, runtime=runtime, precision=precision)
    print(json.dumps(report.as_dict(), indent=2))
    enforce(report)
    log(f"[green]passed[/green] {report.summary()}")


@app.command()
def embed(
    data: Path = typer.Option(..., help="LA h5 / NIfTI / PNG folder"),
    list_file: Optional[Path] = typer.Option(None, "--list", help="case list (default: the folder's own)"),
    model: Literal[choices.MODELS] = typer.Option(choices.DEFAULT_MODEL, help="registered model"),
    checkpoint: Optional[Path] = typer.Option(None, help="weights (required for medsam / vit_*)"),
    backend: Literal[choices.BACKENDS] = typer.Option("torch", help="encoder runtime"),
    artefact: Optional[Path] = typer.Option(None, help="encoder .onnx/.engine or export folder (default engines/)"),
    precision: Optional[Literal[choices.RUNTIME_PRECISIONS]] = typer.Option(
        None, help="torch: compute dtype (default fp32); onnx / engine: which export to open (default fp32)"),
    device: Literal[choices.DEVICES] = typer.Option("cpu"),
    batch: int = typer.Option(8, min=1, help="slices per encoder call"),
    every: int = typer.Option(1, min=1, help="embed every k-th slice only (a documented subset)"),
    cache: Path = typer.Option(..., help="cache folder"),
) -> None:
    """Encode every slice of the listed cases once, into a resumable fp16 embedding cache. Under torchrun
    (`torchrun --nproc-per-node N -m semisam_fast.cli embed ...`) the cases are shared out between the processes."""
    from ..backends import create_backend
    from ..data import open_dataset
    from ..distributed import world_from_env
    from ..embed import build_cache

    world = world_from_env()
    dataset = open_dataset(data, list_file)
    runtime = create_backend(backend, model, checkpoint, artefact, world.device(device), precision)
    summary = build_cache(dataset, runtime, cache, batch=batch, every=every, world=world, progress=world.leader)
    if world.leader:
        log(f"[green]embedded[/green] {summary.line()}{by_world(world)}")


@app.command()
def adapt(
    data: Path = typer.Option(..., help="LA h5 / NIfTI / PNG folder"),
    list_file: Optional[Path] = typer.Option(None, "--list", help="case list; its first N cases are labelled"),
    labeled: int = typer.Option(..., "--labelled", "--labeled", min=1,
                                help="number of labelled cases (the first N of the list, as train takes them)"),
    cache: Path = typer.Option(..., help="embedding cache holding the labelled cases (semisam-fast embed)"),
    checkpoint: Optional[Path] = typer.Option(None, help="base SAM weights (default: the cache's model's bundled)"),
    steps: int = typer.Option(150, min=1, help="optimiser steps"),
    batch: int = typer.Option(4, min=1, help="slices per step"),
    lr: float = typer.Option(1e-4, min=0.0, help="AdamW learning rate"),
    seed: int = typer.Option(0, help="random seed"),
    box_scale: tuple[float, float] = typer.Option(ADAPT_BOX_SCALE, metavar="LO HI",
                                                  help="the training boxes' sides, relative to the label box's: "
                                                       "drawn uniformly from LO..HI"),
    holdout: bool = typer.Option(True, "--holdout/--no-holdout",
                                 help="also adapt with the last labelled case held out and report its Dice"),
    export_decoder: bool = typer.Option(True, "--export/--no-export",
                                        help="export the adapted decoder to ONNX (sidecar + parity gate)"),
    out: Path = typer.Option(..., help="output folder: adapted.pth, adapt.json, the decoder .onnx"),
) -> None:
    """Fine-tune SAM's mask decoder on the labelled cases' cached embeddings (the encoder stays frozen), with boxes
    as loose as a teacher's; writes a checkpoint that train / pseudo-label / export take as --checkpoint."""
    from ..adapt import AdaptOptions
    from ..adapt import adapt as run_adapt
    from ..cache import EmbeddingCache
    from ..data import open_dataset, split_cases

    if not lr > 0 or lr == float("inf"):
        raise UserError(f"--lr must be a positive finite number, got {lr}")
    options = AdaptOptions(steps=steps, batch=batch, lr=lr, scale=box_scale, seed=seed)
    dataset = open_dataset(data, list_file)
    split = split_cases(dataset.case_ids, labeled, 0)
    store = EmbeddingCache(cache)
    report = run_adapt(dataset, store, split.labeled, out, checkpoint=checkpoint, options=options, holdout=holdout)
    if "held_out" in report:
        h = report["held_out"]
        log(f"held-out case {h['held_out']} ({h['slices']} slices), Dice before -> after: "
             + ", ".join(f"{k} boxes {h['dice_before'][k]:.3f} -> {h['dice_after'][k]:.3f}" for k in h["dice_before"]))
    log(f"[green]adapted[/green] the mask decoder on {report['slices']} slices of {len(split.labeled)} labelled "
         f"cases -> {report['checkpoint']}")
    if export_decoder:
        from ..export import export

        for result in export(store.fingerprint["model"], report["checkpoint"], "decoder", out=out, progress=log):
            log(f"ok {result.path}  {result.report.summary()}")


@app.command("pseudo-label")
@with_options("target_flags", option_parameters(
    TargetOptions, default_text=lambda name: f"default {getattr(TargetOptions(), name)}; --prompt teacher: the run's"))
def pseudo_label_cmd(
    cache: Optional[Path] = typer.Option(None, help="cache folder built by embed (default: none; the encoder runs on "
                                                    "the prompted slices, nothing is cached)"),
    data: Path = typer.Option(..., help="the data the cache was built from"),
    list_file: Optional[Path] = typer.Option(None, "--list", help="case list (default: the cached cases, or all)"),
    prompt: Literal[choices.PROMPTS] = typer.Option("gt-box", help="teacher needs --run"),
    masks: Optional[Path] = typer.Option(None, help="mask volumes for --prompt mask-box"),
    run: Optional[Path] = typer.Option(None, "--run", "--run-dir",
                                       help="--prompt teacher: a training run folder or student checkpoint "
                                            "(--run-dir under torchrun, which takes --run for its --run-path)"),
    model: Literal[choices.MODELS] = typer.Option(choices.DEFAULT_MODEL,
                                                  help="registered model (with --cache: the cache's)"),
    checkpoint: Optional[Path] = typer.Option(None, help="weights (required for medsam / vit_*)"),
    backend: Literal[choices.BACKENDS] = typer.Option("torch", help="SAM runtime (the decoder; without --cache the "
                                                                    "encoder too)"),
    artefact: Optional[Path] = typer.Option(None, help=".onnx/.engine or export folder (without --cache: both parts)"),
    precision: Optional[Literal[choices.RUNTIME_PRECISIONS]] = typer.Option(
        None, help="torch: compute dtype (default fp32); openvino: fp32 / bf16; onnx / engine: which export"),
    device: Literal[choices.DEVICES] = typer.Option("cpu"),
    batch: int = typer.Option(32, min=1, help="slices per decoder call"),
    encoder_batch: int = typer.Option(8, min=1, help="without --cache: slices per encoder call"),
    distances: bool = typer.Option(True, "--distances/--no-distances",
                                   help="HD95 and ASD in the report (~0.2 s a LA volume; Dice and Jaccard always)"),
    unseen: Literal[choices.UNSEEN] = typer.Option(
        "ignore", help="prompted slices a cache built with --every K lacks: ignore (marked with the ignore value, "
                       "max label + 1, left out of the report and by nnU-Net), nearest (the nearest labelled "
                       "slice's mask), encode (run the encoder on them)"),
    as_nnunet: Optional[Path] = typer.Option(None, "--as-nnunet",
                                             help="also write an nnU-Net v2 raw data set DatasetNNN_NAME (under "
                                                  "--out unless a path): imagesTr links, labelsTr, dataset.json"),
    sam_recipe: Optional[Literal[choices.SAM_RECIPES]] = typer.Option(
        None, help="--prompt teacher: a recipe's target options (train --sam-recipe), under the flags given "
                   "(default: the run's own)"),
    out: Path = typer.Option(..., help="output folder for masks, report.json and overlays"),
    target_flags: dict = None,
) -> None:
    """Prompts from masks or a run's teacher -> SAM masks from cached embeddings (or, without --cache, from the
    encoder run on just the prompted slices), written in the input's format; Dice (and, for --prompt teacher,
    precision and coverage) when labels exist. Under torchrun the cases are shared out between the processes and rank
    0 writes the merged report."""
    from ..backends import create_backend
    from ..cache import EmbeddingCache
    from ..data import open_dataset
    from ..distributed import world_from_env
    from ..nnunet_export import export_nnunet, nnunet_folder
    from ..pseudo_label import pseudo_label, teacher_pseudo_label
    if prompt == "teacher" and run is None:
        raise UserError("--prompt teacher needs --run RUN (a training run folder or a student checkpoint)")
    if prompt == "teacher" and cache is None:
        raise UserError("--prompt teacher prompts SAM on a run's cached slices: give --cache (built by embed)")
    folder = nnunet_folder(as_nnunet, out) if as_nnunet is not None else None  # the name is checked first
    world = world_from_env()
    store = EmbeddingCache(cache) if cache is not None else None
    dataset = open_dataset(data, list_file)
    runtime = create_backend(backend, store.fingerprint["model"] if store else model, checkpoint, artefact,
                             world.device(device), precision)
    if prompt == "teacher":
        # the run's own options (its config), unless given here (a recipe's, then the flags)
        target_flags = {**recipe_targets(sam_recipe), **target_flags}
        report = teacher_pseudo_label(dataset, store, runtime, run, out, None, target_flags, world=world,
                                      unseen=unseen)
    else:
        encoder = runtime if store is None or unseen == "encode" else None
        report = pseudo_label(dataset, store, runtime, out, None, prompt, masks,
                              TargetOptions(**target_flags).check().margin,
                              batch, world=world, encoder=encoder, encoder_batch=encoder_batch,
                              distances=distances, unseen=unseen)
    if report is None:  # not rank 0
        return
    print(report.table())
    log(f"[green]wrote[/green] {len(report.outputs)} mask volumes to {out}{by_world(world)}")
    if folder is not None:
        cases = [c for c in dataset.case_ids if c in set(store.case_ids if store else dataset.case_ids)]
        export_nnunet(dataset, cases, out, folder, f"semisam-fast pseudo-label --prompt {prompt}")
        log(f"[green]wrote[/green] nnU-Net data set {folder} ({len(cases)} cases)")
