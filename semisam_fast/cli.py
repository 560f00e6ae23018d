"""The `semisam-fast` command line: each command is a thin wrapper over the library."""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.console import Console

from . import choices
from .errors import UserError
from .formats import DEFAULT_FOLDER

try:  # typer vendors its own copy of click since 0.2x; its exceptions are the ones raised
    from typer._click import exceptions as click_errors
except ImportError:  # older typer runs on click itself
    from click import exceptions as click_errors
NO_ARGS_IS_HELP = getattr(click_errors, "NoArgsIsHelpError", ())  # click >= 8.2

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SemiSAM with an exported, batched, cached Segment Anything Model. Errors are one line "
                       "(exit 2: fix the input; exit 1: a bug); add --debug anywhere for the traceback.")
console = Console(stderr=True)


def _log(message: str) -> None:
    console.print(message, highlight=False, soft_wrap=True)  # one line per message, for logs and grep


def _by(world) -> str:
    """ " by N processes" under torchrun, for the closing line of a command (which rank 0 alone prints)."""
    return f" by {world.size} processes" if world.distributed else ""


@app.command("export")
def export_cmd(
    model: Literal[choices.MODELS] = typer.Option("litemedsam", help="SAM-family model"),
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
    from .export import export

    for result in export(model, checkpoint, part, format, precision, opset, batch, out, threshold, data, _log,
                         int8_mode):
        _log(f"[green]ok[/green] {result.path}  {result.report.summary()}")


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
    from .export.parity import enforce, verify_artefact

    report = verify_artefact(artefact, checkpoint, threshold, data=data, runtime=runtime, precision=precision)
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
    labeled: int = typer.Option(2, "--labelled", "--labeled", min=1, help="labelled cases (first N)"),
    val: int = typer.Option(2, min=0, help="validation cases (last N)"),
    unlabelled: int = typer.Option(4, min=1, help="unlabelled cases to embed and use"),
    iterations: int = typer.Option(150, min=1, help="training iterations per method"),
    adapt_steps: int = typer.Option(40, min=1, help="steps adapting SAM's mask decoder on the labelled cases"),
) -> None:
    """The whole job on the built-in default: export+verify LiteMedSAM, embed, pseudo-label, adapt SAM's decoder,
    train sup and semisam, evaluate, report."""
    from .demo import run_demo

    run_demo(out, data, labeled, val, unlabelled, iterations, adapt_steps, _log)


@app.command()
def embed(
    data: Path = typer.Option(..., help="LA h5 / NIfTI / PNG folder"),
    list_file: Optional[Path] = typer.Option(None, "--list", help="case list (default: the folder's own)"),
    model: Literal[choices.MODELS] = typer.Option("litemedsam", help="registered model"),
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
    from .backends import create_backend
    from .data import open_dataset
    from .distributed import world_from_env
    from .embed import build_cache

    world = world_from_env()
    dataset = open_dataset(data, list_file)
    runtime = create_backend(backend, model, checkpoint, artefact, world.device(device), precision)
    summary = build_cache(dataset, runtime, cache, batch=batch, every=every, world=world, progress=world.leader)
    if world.leader:
        _log(f"[green]embedded[/green] {summary.line()}{_by(world)}")


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
    holdout: bool = typer.Option(True, "--holdout/--no-holdout",
                                 help="also adapt with the last labelled case held out and report its Dice"),
    export_decoder: bool = typer.Option(True, "--export/--no-export",
                                        help="export the adapted decoder to ONNX (sidecar + parity gate)"),
    out: Path = typer.Option(..., help="output folder: adapted.pth, adapt.json, the decoder .onnx"),
) -> None:
    """Fine-tune SAM's mask decoder on the labelled cases' cached embeddings (the encoder stays frozen), with boxes
    as loose as a teacher's; writes a checkpoint that train / pseudo-label / export take as --checkpoint."""
    from .adapt import AdaptOptions
    from .adapt import adapt as run_adapt
    from .cache import EmbeddingCache
    from .data import open_dataset, split_cases

    if not lr > 0 or lr == float("inf"):
        raise UserError(f"--lr must be a positive finite number, got {lr}")
    dataset = open_dataset(data, list_file)
    split = split_cases(dataset.case_ids, labeled, 0)
    store = EmbeddingCache(cache)
    options = AdaptOptions(steps=steps, batch=batch, lr=lr, seed=seed)
    report = run_adapt(dataset, store, split.labeled, out, checkpoint=checkpoint, options=options, holdout=holdout)
    if "held_out" in report:
        h = report["held_out"]
        _log(f"held-out case {h['held_out']} ({h['slices']} slices), Dice before -> after: "
             + ", ".join(f"{k} boxes {h['dice_before'][k]:.3f} -> {h['dice_after'][k]:.3f}" for k in h["dice_before"]))
    _log(f"[green]adapted[/green] the mask decoder on {report['slices']} slices of {len(split.labeled)} labelled "
         f"cases -> {report['checkpoint']}")
    if export_decoder:
        from .export import export

        for result in export(store.fingerprint["model"], report["checkpoint"], "decoder", out=out, progress=_log):
            _log(f"ok {result.path}  {result.report.summary()}")


@app.command("pseudo-label")
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
    margin: Optional[float] = typer.Option(None, min=0.0,
                                           help="box margin in SAM-input pixels (default 4; teacher: the run's)"),
    min_iou_pred: Optional[float] = typer.Option(None, min=0.0, max=1.0,
                                                help="teacher: keep SAM masks with predicted IoU >= this"),
    min_agreement: Optional[float] = typer.Option(None, min=0.0, max=1.0,
                                                 help="teacher: keep SAM masks with IoU(SAM, teacher) >= this"),
    largest_3d: Optional[bool] = typer.Option(None, "--largest-3d/--no-largest-3d",
                                              help="teacher: prompt from the largest 3D component"),
    negatives: Optional[bool] = typer.Option(None, "--negatives/--no-negatives",
                                             help="teacher: empty targets outside the teacher's z-range"),
    model: Literal[choices.MODELS] = typer.Option("litemedsam", help="registered model (with --cache: the cache's)"),
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
    out: Path = typer.Option(..., help="output folder for masks, report.json and overlays"),
) -> None:
    """Prompts from masks or a run's teacher -> SAM masks from cached embeddings (or, without --cache, from the
    encoder run on just the prompted slices), written in the input's format; Dice (and, for --prompt teacher,
    precision and coverage) when labels exist. Under torchrun the cases are shared out between the processes and rank
    0 writes the merged report."""
    from .backends import create_backend
    from .cache import EmbeddingCache
    from .data import open_dataset
    from .distributed import world_from_env
    from .nnunet_export import export_nnunet, nnunet_folder
    from .pseudo_label import pseudo_label, teacher_pseudo_label
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
        # the run's own options (its config), unless given here
        overrides = {"margin": margin, "largest_3d": largest_3d, "min_iou_pred": min_iou_pred,
                     "min_agreement": min_agreement, "negatives": negatives}
        report = teacher_pseudo_label(dataset, store, runtime, run, out, None, overrides, world=world,
                                      unseen=unseen)
    else:
        encoder = runtime if store is None or unseen == "encode" else None
        report = pseudo_label(dataset, store, runtime, out, None, prompt, masks, 4.0 if margin is None else margin,
                              batch, world=world, encoder=encoder, encoder_batch=encoder_batch,
                              distances=distances, unseen=unseen)
    if report is None:  # not rank 0
        return
    print(report.table())
    _log(f"[green]wrote[/green] {len(report.outputs)} mask volumes to {out}{_by(world)}")
    if folder is not None:
        cases = [c for c in dataset.case_ids if c in set(store.case_ids if store else dataset.case_ids)]
        export_nnunet(dataset, cases, out, folder, f"semisam-fast pseudo-label --prompt {prompt}")
        _log(f"[green]wrote[/green] nnU-Net data set {folder} ({len(cases)} cases)")


@app.command()
def train(
    ctx: typer.Context,
    data: Path = typer.Option(..., help="LA h5 / NIfTI / PNG folder"),
    config_file: Optional[Path] = typer.Option(None, "--config",
                                               help="TOML file of TrainConfig options (and preset); the flags given "
                                                    "here override it"),
    list_file: Optional[Path] = typer.Option(None, "--list", help="case list; its first N cases are labelled"),
    labeled: int = typer.Option(..., "--labelled", "--labeled", min=1,
                                help="number of labelled cases (the first N of the list)"),
    method: Literal[choices.TRAIN["method"]] = typer.Option("semisam"),
    preset: Literal[choices.PRESETS] = typer.Option("la-cpu",
                               help="la-cpu: 2D U-Net on 96x96 slices, CPU, for volumes of LA's kind (~100-200 px "
                                    "in-plane, 40-90 slices); la-paper: the paper's 3D V-Net, 112x112x80 patches, GPU"),
    in_plane: Optional[int] = typer.Option(None, min=16, help="2D: the slice canvas side (preset: 96)"),
    crop: Optional[int] = typer.Option(None, min=16, help="2D: the random crop side, a multiple of 16 (preset: 80)"),
    iterations: Optional[int] = typer.Option(None, min=1, help="override the preset's iterations"),
    lr: Optional[float] = typer.Option(None, help="override the preset's learning rate"),
    save_every: Optional[int] = typer.Option(None, min=1, help="iterations between checkpoints (resume points)"),
    seed: int = typer.Option(0, help="random seed"),
    val: int = typer.Option(8, min=0, help="validation cases: the last N of the list, never trained on"),
    cache: Optional[Path] = typer.Option(None, help="embedding cache (semisam)"),
    sam_online: bool = typer.Option(False, help="run SAM's encoder every step instead of the cache (benchmarks)"),
    sam_weight: Optional[float] = typer.Option(None, min=0.0, help="SAM term weight (default 0.1)"),
    sam_ramp: Optional[Literal[choices.TRAIN["sam_ramp"]]] = typer.Option(None, help="default up"),
    sam_loss: Optional[Literal[choices.TRAIN["sam_loss"]]] = typer.Option(None,
                                           help="default dicece"),
    sam_prompt_from: Optional[Literal[choices.TRAIN["sam_prompt_from"]]] = typer.Option(None,
                                                  help="step mode: default student"),
    sam_mode: Optional[Literal[choices.TRAIN["sam_mode"]]] = typer.Option(None,
                                           help="rounds: stored targets (default); step: decoder per step"),
    sam_round_every: Optional[int] = typer.Option(None, min=1, help="rounds: iterations between pseudo-label rounds"),
    sam_margin: Optional[float] = typer.Option(None, min=0.0, help="box margin in SAM-input pixels (default 4)"),
    sam_min_iou_pred: Optional[float] = typer.Option(None, min=0.0, max=1.0,
                                                    help="rounds: gate on SAM's predicted IoU"),
    sam_min_agreement: Optional[float] = typer.Option(None, min=0.0, max=1.0,
                                                     help="rounds: gate on IoU(SAM, teacher) (default 0.7)"),
    sam_negatives: Optional[bool] = typer.Option(None, "--sam-negatives/--no-sam-negatives",
                                                 help="rounds: empty targets outside the teacher's z-range"),
    sam_largest_3d: Optional[bool] = typer.Option(None, "--sam-largest-3d/--no-sam-largest-3d",
                                                  help="rounds: prompt from the teacher's largest 3D component"),
    sam_pixels: Optional[Literal[choices.TRAIN["sam_pixels"]]] = typer.Option(None,
                                             help="rounds: agree = only pixels where SAM and teacher agree"),
    sam_fusion: Optional[Literal[choices.TRAIN["sam_fusion"]]] = typer.Option(
        None, help="rounds: target = SAM's mask (sam) or the mean of SAM's and the teacher's probabilities (mean)"),
    sam_teacher_precision: Optional[Literal[choices.TRAIN["sam_teacher_precision"]]] = typer.Option(
        None, help="rounds: the teacher's prediction (default auto: bf16 on a CPU with bf16 matmuls)"),
    lr_schedule: Optional[Literal[choices.TRAIN["lr_schedule"]]] = typer.Option(None,
                                              help="default poly"),
    teacher_mode: Optional[Literal[choices.TRAIN["teacher_mode"]]] = typer.Option(None,
                                               help="teacher BatchNorm in consistency passes (default eval)"),
    consistency: Optional[float] = typer.Option(None, min=0.0, help="consistency weight (default 0.1)"),
    student_batch: Optional[Literal[choices.TRAIN["student_batch"]]] = typer.Option(None,
                                                help="joint: one forward, shared BatchNorm stats (default)"),
    intensity_aug: Optional[bool] = typer.Option(None, "--intensity-aug/--no-intensity-aug",
                                                 help="random contrast/brightness of the student's input"),
    unlabelled_cases: Optional[int] = typer.Option(None, min=1, help="use only the first k unlabelled cases"),
    unlabelled_every: Optional[int] = typer.Option(None, min=1, help="use every k-th unlabelled slice"),
    backend: Literal[choices.BACKENDS] = typer.Option("torch", help="SAM decoder runtime"),
    artefact: Optional[Path] = typer.Option(None, help="decoder artefact or export folder"),
    precision: Optional[Literal[choices.RUNTIME_PRECISIONS]] = typer.Option(
        None, help="SAM decoder: torch / openvino compute precision, or which onnx / engine export (default fp32)"),
    checkpoint: Optional[Path] = typer.Option(None, help="SAM weights (medsam / vit_*)"),
    device: Literal[choices.DEVICES] = typer.Option("cpu"),
    out: Path = typer.Option(..., help="run folder (rerun the same command to resume)"),
) -> None:
    """Train a student (sup, MT, UA-MT or SemiSAM); checkpoints resume exactly; TensorBoard logs in the run folder.
    Under torchrun (`torchrun --nproc-per-node N -m semisam_fast.cli train ...`): DDP, the batches being global."""
    from .checkpoints import finish_run_record
    from .distributed import world_from_env
    from .interrupts import Interrupted
    from .locks import folder_lock
    from .provenance import run_log
    from .train import build_trainer
    from .train import preset as make_preset
    from .train.config_file import read_config_file

    from_file = read_config_file(config_file) if config_file is not None else {}

    def given(name: str) -> bool:  # on the command line (a flag's default never overrides the file)
        source = ctx.get_parameter_source(name)
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    preset = preset if given("preset") or "preset" not in from_file else from_file["preset"]
    if preset not in choices.PRESETS:
        raise UserError(f"{config_file}: preset must be one of {', '.join(choices.PRESETS)}, not {preset!r}")
    method = method if given("method") or "method" not in from_file else from_file["method"]
    seed = seed if given("seed") or "seed" not in from_file else from_file["seed"]
    file_options = {k: v for k, v in from_file.items() if k != "preset"}
    flags = dict(method=method, iterations=iterations, lr=lr, save_every=save_every, seed=seed,
                 sam_online=sam_online or None,
                 sam_weight=sam_weight, sam_ramp=sam_ramp, sam_loss=sam_loss, sam_prompt_from=sam_prompt_from,
                 unlabelled_cases=unlabelled_cases, unlabelled_every=unlabelled_every, sam_mode=sam_mode,
                 sam_round_every=sam_round_every, sam_margin=sam_margin, sam_min_iou_pred=sam_min_iou_pred,
                 sam_min_agreement=sam_min_agreement, sam_negatives=sam_negatives,
                 sam_largest_3d=sam_largest_3d, sam_pixels=sam_pixels, sam_fusion=sam_fusion,
                 sam_teacher_precision=sam_teacher_precision, lr_schedule=lr_schedule,
                 teacher_mode=teacher_mode, consistency=consistency, student_batch=student_batch,
                 intensity_aug=intensity_aug, in_plane=in_plane, crop=crop)
    config = make_preset(preset, **{**file_options, **{k: v for k, v in flags.items() if v is not None}})
    world = world_from_env()
    with folder_lock(out, "train", enabled=world.leader):  # one run per folder (rank 0 holds it under torchrun)
        trainer = build_trainer(config, data, list_file, labeled, val, out, cache, backend, artefact, checkpoint,
                                world.device(device), world=world, precision=precision)
        effective = json.dumps(trainer.config.as_dict(), sort_keys=True)  # with the student's classes from the data
        with run_log(out) if world.leader else contextlib.nullcontext() as logger:
            if world.leader:
                _log(f"config ({preset} preset with the options given): {effective}")
                logger.info("start: %s", " ".join(sys.argv))
                logger.info("config: %s", effective)
            try:
                result = trainer.run()
            except Interrupted as exc:  # typer turns Ctrl-C into exit 130 without a word: say where it stopped
                print(str(exc), file=sys.stderr)
                if world.leader:
                    logger.info("%s", exc)
                raise
            if not world.leader:
                return
            line = (f"{method}{_by(world)}: {result['iteration']} iterations, validation Dice "
                    f"{result['val_dice']:.4f}, {result['seconds']:.0f} s")
            logger.info("trained %s", line)
        finish_run_record(out, {"iteration": result["iteration"], "val_dice": result["val_dice"]})
    _log(f"[green]trained[/green] {line} -> {out}")


@app.command()
def evaluate(
    run: Optional[Path] = typer.Option(None, help="run folder from `train`"),
    checkpoint: Optional[Path] = typer.Option(None, help="a student checkpoint instead of --run"),
    data: Optional[Path] = typer.Option(None, help="data folder (default: the run's)"),
    list_file: Optional[Path] = typer.Option(None, "--list", help="cases to score (default: the run's validation)"),
    spacing: Optional[str] = typer.Option(None,
                                          help="spacing 'x,y,z' in mm (default: each case's header, else voxels)"),
    weights: Literal[choices.WEIGHTS] = typer.Option("student", help="student or its EMA teacher"),
    largest: bool = typer.Option(False, "--largest", help="keep the largest connected component (as LA papers do)"),
    out: Optional[Path] = typer.Option(None, help="JSON output (a CSV is written beside it)"),
    save_masks: Optional[Path] = typer.Option(None, help="also write each scored prediction to this folder, in the "
                                                         "data's own format"),
) -> None:
    """Per-volume Dice, Jaccard, 95% Hausdorff, ASD (medpy semantics), mean ± sd; JSON + CSV + table."""
    from .data import open_dataset, read_list
    from .evaluate import evaluate_cases, evaluate_run
    from .nets import load_student
    from .results import check_result_outputs, write_results
    from .metrics import format_table

    spacing_mm = _parse_spacing(spacing)
    if run is not None:
        cases = read_list(list_file) if list_file else None
        rows, summary = evaluate_run(run, data=data, cases=cases, spacing=spacing_mm, out=out, weights=weights,
                                     keep_largest=largest, save_masks=save_masks)
    elif checkpoint is not None and data is not None and out is not None:
        dataset = open_dataset(data, list_file)
        check_result_outputs(out, dataset, dataset.case_ids, checkpoint, list_file)
        net, config = load_student(checkpoint, weights)
        rows = evaluate_cases(net, config, dataset, dataset.case_ids, spacing=spacing_mm, keep_largest=largest,
                              save_masks=save_masks)
        summary = write_results(rows, out)
    else:
        raise UserError("give --run RUN_DIR, or --checkpoint FILE with --data PATH and --out FILE.json")
    print(format_table(rows, summary))


@app.command()
def predict(
    run: Optional[Path] = typer.Option(None, help="run folder from `train` (its final, else newest, checkpoint)"),
    checkpoint: Optional[Path] = typer.Option(None, help="a student checkpoint instead of --run"),
    data: Path = typer.Option(..., help="LA h5 / NIfTI / PNG folder to segment (labels are not read)"),
    list_file: Optional[Path] = typer.Option(None, "--list", help="cases (default: every case of the folder)"),
    weights: Literal[choices.WEIGHTS] = typer.Option("student", help="student or its EMA teacher"),
    largest: bool = typer.Option(False, "--largest", help="keep the largest connected component"),
    out: Path = typer.Option(..., help="folder for the masks (in the input's format) and predict.json"),
) -> None:
    """A trained student's mask of every case, in the input's format (NIfTI on the image's own affine)."""
    from .data import open_dataset
    from .predict import predict as predict_masks

    if (run is None) == (checkpoint is None):
        raise UserError("give --run RUN_DIR or --checkpoint FILE (one of them)")
    written = predict_masks(run if run is not None else checkpoint, open_dataset(data, list_file), out,
                            weights=weights, keep_largest=largest)
    _log(f"[green]wrote[/green] {len(written)} masks to {out}")


@app.command()
def bench(
    what: Literal[choices.BENCH_PARTS] = typer.Argument("all"),
    model: Literal[choices.MODELS] = typer.Option("litemedsam", help="model for the timings"),
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
    from . import bench as bench_lib

    try:
        batches = tuple(int(b) for b in batch.split(","))
    except ValueError:
        raise UserError(f"--batch must be comma-separated integers, got {batch!r}") from None
    results = bench_lib.run(what, out, model, precisions.split(","), batches, repeats, engines, _log, data=data,
                            cache=cache, artefact=artefact, iterations=iterations, backend=backend,
                            precision=precision, cases=cases, device=device)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2, default=str))
    png = out.with_suffix(".png")
    _log(f"[green]wrote[/green] {out}" + (f" and {png}" if png.is_file() else ""))


def _parse_spacing(text: Optional[str]) -> Optional[tuple]:
    if text is None:
        return None
    from .metrics import check_spacing

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise UserError(f"--spacing must be three positive numbers 'x,y,z', got {text!r}")
    return check_spacing(values, "--spacing")


_USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG, errno.ENOENT,
                   errno.EISDIR, errno.ENOTDIR, errno.EEXIST}  # EEXIST: an --out that names a file


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame in this package (else the innermost frame): where a bug happened."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}semisam_fast{os.sep}" in f.filename] or frames
    if not ours:
        return "?"
    frame = ours[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


def _usage_error(exc: Exception) -> str:
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path.split(" ", 1) if ctx is not None else []
    command = f" {path[1]}" if len(path) == 2 else ""
    message = " ".join(exc.format_message().replace("Value error, ", "").split())
    return f"error: {message} (see semisam-fast{command} --help)"


def main(argv: Optional[list] = None) -> None:
    """Run the CLI. Exit 0: done; 2: a problem with the input, told in one line; 1: a bug, told in one line with
    where it happened; 130: interrupted. `--debug` anywhere on the line adds the traceback."""
    from .runtime import tune_allocator

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    from . import provenance

    provenance.COMMAND = ["semisam-fast", *args]  # what a run records as its command line
    _warnings_to_stderr()
    from . import doctor

    doctor.ALLOCATOR = tune_allocator()
    code = 0
    try:
        result = typer.main.get_command(app).main(args=args, prog_name="semisam-fast", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except NO_ARGS_IS_HELP as exc:
        print(exc.ctx.get_help() if getattr(exc, "ctx", None) is not None else str(exc))
        code = 2
    except click_errors.ClickException as exc:  # usage errors: unknown or missing option, a value out of its range
        print(_usage_error(exc), file=sys.stderr)
        code = exc.exit_code
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        code = 130
    except UserError as exc:
        _debug(debug)
        print(f"error: {exc}", file=sys.stderr)  # one line, whatever the terminal width
        code = 2
    except OSError as exc:
        _debug(debug)
        if exc.errno in _USER_OS_ERRORS:  # the disk or the file system said no; writes are atomic, so nothing
            where = f": {exc.filename}" if exc.filename else ""  # half-written is left behind as if valid
            print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
            code = 2
        else:
            print(_bug(exc), file=sys.stderr)
            code = 1
    except MemoryError:
        _debug(debug)
        print("error: out of memory; use a smaller --batch or fewer cases", file=sys.stderr)
        code = 1
    except Exception as exc:  # anything else is a bug: say so, and where
        _debug(debug)
        print(_bug(exc), file=sys.stderr)
        code = 1
    if code == 0:
        from .distributed import close_world, exit_launched

        if close_world():  # a torchrun launch leaves its process group, then skips the native teardown
            exit_launched(code)
    sys.exit(code)


def _warnings_to_stderr() -> None:
    """Warnings as `warning: ...` lines on stderr: the package's own (through its logger, so a host that configured
    logging, such as pytest, does not swallow them) and other libraries' (through the root logger)."""
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", handlers=[_StderrHandler()])
    package = logging.getLogger("semisam_fast")
    if not any(isinstance(h, _StderrHandler) for h in package.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.WARNING)
        package.propagate = False  # said once, not again by the root logger's handler


class _StderrHandler(logging.StreamHandler):
    """Warnings go to whatever sys.stderr is now (an in-process runner swaps it), not the stream of the first call."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _bug(exc: BaseException) -> str:
    message = " ".join(str(exc).split())[:300]
    return (f"internal error (a bug in semisam-fast, please report it): {type(exc).__name__}: {message} "
            f"at {_where(exc)}; rerun with --debug for the traceback")


def _debug(debug: bool) -> None:
    if debug:
        traceback.print_exc()


if __name__ == "__main__":
    main()
