"""The student's commands: train (its options generated from TrainConfig), evaluate, predict."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Literal, Optional

import typer

from .. import choices
from ..errors import UserError
from ..cli_options import option_parameters, with_options
from ..target_options import TargetOptions
from .app import app, by_world, log
from ..train.config import PRESETS, TARGETS_PREFIX, TrainConfig, recipe_for


def _preset_default(name: str, prefix: str = "") -> str:
    """A training option's real default: each preset's value (the same for all: one value)."""
    values = {p: getattr(c.targets if prefix else c, name) for p, c in PRESETS.items()}
    if len(set(map(repr, values.values()))) == 1:
        return f"default {next(iter(values.values()))}"
    return "; ".join(f"{p}: {v}" for p, v in values.items())


@app.command()
@with_options("target_flags", option_parameters(TargetOptions, TARGETS_PREFIX,
                                                 lambda name: "rounds; " + _preset_default(name, TARGETS_PREFIX)))
@with_options("config_flags", option_parameters(TrainConfig, default_text=_preset_default))
def train(
    ctx: typer.Context,
    data: Path = typer.Option(..., help="LA h5 / NIfTI / PNG folder"),
    config_file: Optional[Path] = typer.Option(None, "--config",
                                               help="TOML file of TrainConfig options (and preset); the flags given "
                                                    "here override it"),
    list_file: Optional[Path] = typer.Option(None, "--list", help="case list; its first N cases are labelled"),
    labeled: int = typer.Option(..., "--labelled", "--labeled", min=1,
                                help="number of labelled cases (the first N of the list)"),
    preset: Literal[choices.PRESETS] = typer.Option("la-cpu",
                               help="la-cpu: 2D U-Net on 96x96 slices, CPU, for volumes of LA's kind (~100-200 px "
                                    "in-plane, 40-90 slices); la-paper: the paper's 3D V-Net, 112x112x80 patches, GPU"),
    val: int = typer.Option(8, min=0, help="validation cases: the last N of the list, never trained on"),
    sam_recipe: Optional[Literal[choices.SAM_RECIPES]] = typer.Option(
        None, help="semisam's SAM-term settings, under the options given: frozen (the preset's: weight 0.1, "
                   "agreement gate 0.7, SAM's mask) or adapted (for a decoder from `adapt`: weight 1, no gate, "
                   "SAM and teacher averaged; train/config.py: SAM_RECIPES). Default: adapted when --checkpoint "
                   "is a decoder from `adapt`, else frozen"),
    cache: Optional[Path] = typer.Option(None, help="embedding cache (semisam)"),
    backend: Literal[choices.BACKENDS] = typer.Option("torch", help="SAM decoder runtime"),
    artefact: Optional[Path] = typer.Option(None, help="decoder artefact or export folder"),
    precision: Optional[Literal[choices.RUNTIME_PRECISIONS]] = typer.Option(
        None, help="SAM decoder: torch / openvino compute precision, or which onnx / engine export (default fp32)"),
    checkpoint: Optional[Path] = typer.Option(None, help="SAM weights (medsam / vit_*)"),
    device: Literal[choices.DEVICES] = typer.Option("cpu"),
    out: Path = typer.Option(..., help="run folder (rerun the same command to resume)"),
    config_flags: dict = None,
    target_flags: dict = None,
) -> None:
    """Train a student (sup, MT, UA-MT or SemiSAM); checkpoints resume exactly; TensorBoard logs in the run folder.
    Under torchrun (`torchrun --nproc-per-node N -m semisam_fast.cli train ...`): DDP, the batches being global."""
    from ..checkpoints import finish_run_record
    from ..distributed import world_from_env
    from ..interrupts import Interrupted
    from ..locks import folder_lock
    from ..provenance import run_log
    from ..train import build_trainer
    from ..train import preset as make_preset
    from ..train.config_file import read_config_file

    from_file = read_config_file(config_file) if config_file is not None else {}
    source = ctx.get_parameter_source("preset")
    if "preset" in from_file and (source is None or source.name in ("DEFAULT", "DEFAULT_MAP")):
        preset = from_file["preset"]  # a flag's default never overrides the file
    recipe = sam_recipe or from_file.get("sam_recipe") or recipe_for(checkpoint)
    given = {**config_flags, **target_flags}  # flat names, as the file's
    from_file = {k: v for k, v in from_file.items() if k not in ("preset", "sam_recipe")}
    config = make_preset(preset, sam_recipe=recipe, **{**from_file, **given})
    world = world_from_env()
    with folder_lock(out, "train", enabled=world.leader):  # one run per folder (rank 0 holds it under torchrun)
        trainer = build_trainer(config, data, list_file, labeled, val, out, cache, backend, artefact, checkpoint,
                                world.device(device), world=world, precision=precision)
        effective = json.dumps(trainer.config.as_dict(), sort_keys=True)  # with the student's classes from the data
        with run_log(out) if world.leader else contextlib.nullcontext() as logger:
            if world.leader:
                log(f"config ({preset} preset, {recipe or 'frozen'} SAM recipe, with the options given): {effective}")
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
            line = (f"{config.method}{by_world(world)}: {result['iteration']} iterations, validation Dice "
                    f"{result['val_dice']:.4f}, {result['seconds']:.0f} s")
            logger.info("trained %s", line)
        finish_run_record(out, {"iteration": result["iteration"], "val_dice": result["val_dice"]})
    log(f"[green]trained[/green] {line} -> {out}")


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
    """Per-volume Dice, Jaccard, precision, recall, 95% Hausdorff, ASD (medpy semantics), mean ± sd; JSON + CSV + table."""
    from ..data import open_dataset, read_list
    from ..evaluate import evaluate_cases, evaluate_run
    from ..nets import load_student
    from ..results import check_result_outputs, write_results
    from ..metrics import format_table

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
    from ..data import open_dataset
    from ..predict import predict as predict_masks

    if (run is None) == (checkpoint is None):
        raise UserError("give --run RUN_DIR or --checkpoint FILE (one of them)")
    written = predict_masks(run if run is not None else checkpoint, open_dataset(data, list_file), out,
                            weights=weights, keep_largest=largest)
    log(f"[green]wrote[/green] {len(written)} masks to {out}")


def _parse_spacing(text: Optional[str]) -> Optional[tuple]:
    if text is None:
        return None
    from ..metrics import check_spacing

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise UserError(f"--spacing must be three positive numbers 'x,y,z', got {text!r}")
    return check_spacing(values, "--spacing")
