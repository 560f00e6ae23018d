"""Training configuration and the presets (la-cpu: 2D U-Net on 2 CPU cores; la-paper: the paper's 3D V-Net)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .. import choices
from ..errors import UserError
from ..options import check_options, option
from ..target_options import TargetOptions

METHODS = choices.METHODS
# larger learning rates overflow the optimiser's float32 arithmetic (Adam divides lr by 1 - beta1) before any loss
# can be seen to diverge
MAX_LR = 1e30
TARGETS_PREFIX = "sam_"  # TargetOptions' fields as flat option names: --sam-margin, `sam_margin = 4` in TOML


def _round_targets() -> TargetOptions:
    # 0.7 gave the best targets of a frozen decoder on the development cases (bench/results/target_quality_dev.md:
    # target Dice 0.785, precision 0.72, 55% of slices)
    return TargetOptions(min_agreement=0.7)


@dataclass
class TrainConfig:
    method: str = option("semisam", "sup, mt (mean teacher), uamt (UA-MT) or semisam", choices=choices.METHODS)
    student: str = option("unet2d", "the student network (nets registry)")
    student_kwargs: dict = option(help="the student's constructor arguments", factory=lambda: {"base": 16}, cli=False)
    normalization: str = option(choices.DEFAULT_NORMALIZATION, "the student's intensity normalisation, per volume",
                                choices=choices.NORMALIZATIONS)
    in_plane: int = option(96, "2D: slices are resized to this canvas side (aspect not kept; SAM sees the original "
                               "slice)", at_least=16)
    crop: int = option(80, "2D: the random crop side inside the canvas, a multiple of 16", at_least=16)
    context: int = option(0, "2D: the slices on each side of a slice that come with it as input channels (2.5D)",
                          at_least=0)
    patch: list | None = option(None, "3D: the patch size (V-Net)", cli=False)
    iterations: int = option(2000, "training iterations", at_least=1)
    labelled_batch: int = option(4, "labelled samples per step (under torchrun: the global batch)", at_least=1)
    unlabelled_batch: int = option(4, "unlabelled samples per step (under torchrun: the global batch)", at_least=1)
    optimizer: str = option("adam", "the optimiser", choices=("adam", "sgd"))
    lr: float = option(1e-3, "learning rate")
    lr_schedule: str = option("poly", "poly: lr * (1 - t/T)^0.9 (UA-MT, SSL4MIS); constant",
                              choices=("poly", "constant"))
    intensity_aug: bool = option(True, "random contrast/brightness of the student's input (SAM never sees it)")
    momentum: float = option(0.9, "SGD momentum", at_least=0, at_most=1)
    weight_decay: float = option(1e-4, "weight decay", at_least=0)
    ema_decay: float = option(0.99, "the EMA teacher's decay", at_least=0, at_most=1)
    student_batch: str = option("joint", "joint: one student forward over labelled + unlabelled (official codes), "
                                         "BatchNorm statistics shared; split", choices=("joint", "split"))
    teacher_mode: str = option("eval", "BatchNorm of the EMA teacher in the consistency passes: eval (running "
                                       "statistics) or train", choices=("eval", "train"))
    consistency: float = option(0.1, "consistency term weight (mt, uamt)", at_least=0)
    consistency_rampup: float = option(0.4, "fraction of the run over which the sigmoid ramp reaches 1", at_least=0)
    uamt_samples: int = option(4, "stochastic teacher passes for UA-MT's uncertainty (the paper uses 8)", at_least=1)
    # SAM term: ramped UP by default, like the consistency term: early on the student's boxes are poor, and SAM
    # prompted with a poor box gives a confidently wrong mask; by the time boxes are good SAM's masks are worth most.
    sam_weight: float = option(0.1, "SAM term weight", at_least=0)
    sam_ramp: str = option("up", "the SAM weight's ramp", choices=("up", "down", "none"))
    sam_loss: str = option("dicece", "dicece (0.5 BCE + 0.5 soft Dice) or mse", choices=("dicece", "mse"))
    sam_prompt_from: str = option("student", "step mode: whose prediction prompts SAM",
                                  choices=("student", "teacher"))
    # rounds: every sam_round_every iterations the EMA teacher predicts every unlabelled volume, SAM decodes all
    # cached slices in large batches, the gated masks are stored and the step reads them through its geometry
    # (sam_targets.py); step: the decoder runs inside every step on the augmented crop's prediction (the old way)
    sam_mode: str = option("rounds", "rounds: targets made every --sam-round-every iterations and stored; step: the "
                                     "decoder in every step", choices=("rounds", "step"))
    sam_round_every: int = option(200, "rounds: iterations between pseudo-label rounds", at_least=1)
    # rounds: how the teacher's prediction becomes SAM's targets (TargetOptions; flags --sam-margin, ...)
    targets: TargetOptions = option(help="SAM target options", factory=_round_targets, cli=False)
    sam_pixels: str = option("all", "rounds: all, or agree (train only on pixels where SAM and the teacher agree)",
                             choices=("all", "agree"))
    sam_mix: str = option("none", "rounds: also train on copy-paste pairs of unlabelled and labelled crops (BCP): "
                                  "SAM's stored target in the pasted box, the label around it, and the reverse",
                          choices=("none", "copy-paste"))
    # a teacher trained on SAM's targets learns their over-segmentation and prompts looser boxes in the next round;
    # a finished run's network never saw them, so the loop cannot feed back (docs/results.md, round 5)
    sam_prompt_run: str | None = option(None, "rounds: a finished run (sup or mt, on this run's labelled cases) "
                                              "whose network prompts SAM instead of the EMA teacher; its targets are "
                                              "made once, after the first step")
    # auto = bf16 on a CPU with bf16 matmuls (~2x; it moved 0.01-0.05% of the target pixels on the development
    # cases, bench/results/round_teacher_dev.md), fp32 elsewhere
    sam_teacher_precision: str = option("auto", "rounds: the teacher's prediction (auto: bf16 on a CPU with bf16 "
                                                "matmuls)", choices=("auto", "fp32", "bf16"))
    # bf16 autocast of the forwards (student and teacher; the losses stay float32): measured on the development split
    # before it could be a default (docs/results.md, "SAM that helps", round 4)
    train_precision: str = option("fp32", "the student's and the teacher's forward passes in training: fp32, or "
                                          "bf16 autocast (faster on a CPU with bf16 matmuls or a GPU with bf16)",
                                  choices=("fp32", "bf16"))
    sam_online: bool = option(False, "run SAM's encoder every step instead of the cache (the official code's way; "
                                     "for benchmarks)")
    unlabelled_every: int = option(1, "use every k-th slice of the unlabelled cases (must match the cache's embed "
                                      "--every)", at_least=1)
    unlabelled_cases: int | None = option(None, "use only the first k unlabelled cases", at_least=1)
    val_every: int = option(500, "iterations between validations", at_least=1)
    save_every: int = option(500, "iterations between checkpoints (resume points)", at_least=1)
    seed: int = option(0, "random seed")

    def check(self) -> "TrainConfig":
        from ..nets import STUDENTS, student_geometry  # torch: not when the CLI reads the declarations

        if self.student not in STUDENTS:  # the registry, which a caller may have extended
            raise UserError(f"--student must be one of {', '.join(STUDENTS)}, not {self.student!r}")
        check_options(self)
        if not isinstance(self.targets, TargetOptions):
            raise UserError(f"targets must be TargetOptions, not {type(self.targets).__name__}")
        self.targets.check(TARGETS_PREFIX)
        if not 0 < self.lr <= MAX_LR:  # also refuses nan and inf
            raise UserError(f"--lr must be a positive number up to {MAX_LR:g}, got {self.lr}")
        if not 0 <= int(self.seed) < 2**63:  # torch's seeds are 64-bit
            raise UserError(f"--seed must be in [0, 2^63), got {self.seed}")
        if self.sam_online and self.sam_mode == "rounds":
            raise UserError("--sam-online runs the encoder inside the step: use it with --sam-mode step")
        if self.sam_mix != "none" and self.sam_mode != "rounds":
            raise UserError("--sam-mix pastes the rounds' stored targets: use it with --sam-mode rounds")
        if self.sam_prompt_run is not None and (self.method != "semisam" or self.sam_mode != "rounds"):
            raise UserError("--sam-prompt-run prompts the pseudo-label rounds: use it with --method semisam and "
                            "--sam-mode rounds")
        as_dict = self.as_dict()
        geometry = student_geometry(as_dict)
        geometry.check(as_dict)
        geometry.student_input(as_dict)  # StudentInput refuses what no student can take (--context for a 3D one)
        return self

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, TrainConfig] = {
    # 2 CPU cores: 2D U-Net on 96x96 slices (80x80 crops), 16 unlabelled LA cases with every 2nd slice cached
    # (~700 slices: the one-time LiteMedSAM cache build takes about 15 minutes here); 1000 iterations of 4+4 slices.
    "la-cpu": TrainConfig(iterations=1000, unlabelled_cases=16, unlabelled_every=2, val_every=250, save_every=250),
    # The paper: V-Net on 112x112x80 patches, batch 2+2, SGD 0.01, 6000 iterations (GPU).
    "la-paper": TrainConfig(student="vnet", student_kwargs={"n_filters": 16, "dropout": 0.5}, patch=[112, 112, 80],
                            iterations=6000, labelled_batch=2, unlabelled_batch=2, optimizer="sgd", lr=0.01,
                            consistency_rampup=40 * 150 / 6000, uamt_samples=8, val_every=1000, save_every=1000),
}


# Named settings of the SAM term (`--sam-recipe`), applied under the options given. frozen: the preset's own (weight
# 0.1, agreement >= 0.7, SAM's mask alone), for a frozen decoder, whose targets do not beat the teacher. adapted: for a
# decoder from `semisam-fast adapt`: its masks averaged with the teacher's probabilities inside the prompt box,
# ungated, beat the teacher for every development teacher (docs/results.md, "SAM that helps": +0.03 to +0.045
# all-slice Dice, 6-8 of 8 cases), so they count at weight 1.
SAM_RECIPES: dict[str, dict] = {
    "frozen": {},
    "adapted": {"sam_weight": 1.0, "sam_min_agreement": 0.0, "sam_fusion": "mean"},
}


def recipe_options(name: str | None) -> dict:
    """A recipe's flat options (`sam_weight`, `sam_fusion`, ...); None is the preset's own."""
    if name is None:
        return {}
    if name not in SAM_RECIPES:
        raise UserError(f"unknown SAM recipe {name!r}; choose one of {', '.join(SAM_RECIPES)}")
    return dict(SAM_RECIPES[name])


def recipe_for(checkpoint: str | Path | None) -> str | None:
    """The recipe a SAM checkpoint brings when none is given: adapted for a decoder from `adapt`, else None (the
    preset's own)."""
    if checkpoint is None:
        return None
    from ..models.checkpoint import is_adapted  # torch: only when a checkpoint is given

    return "adapted" if is_adapted(checkpoint) else None


def recipe_targets(name: str | None) -> dict:
    """A recipe's target options by TargetOptions' own names (`fusion`, as pseudo-label's flags)."""
    return target_overrides(recipe_options(name))[1]


def target_overrides(options: dict) -> tuple[dict, dict]:
    """Split flat option names (`sam_margin`) of TargetOptions' fields from TrainConfig's own."""
    names = {TARGETS_PREFIX + f.name: f.name for f in fields(TargetOptions)}
    targets = {names[k]: v for k, v in options.items() if k in names}
    return {k: v for k, v in options.items() if k not in names}, targets


def preset(name: str, sam_recipe: str | None = None, **overrides) -> TrainConfig:
    """A preset's config with a SAM recipe (SAM_RECIPES) and the non-None options given over it."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    overrides, targets = target_overrides({**recipe_options(sam_recipe), **given})
    if overrides.get("sam_online") and "sam_mode" not in overrides:
        overrides["sam_mode"] = "step"  # the encoder online only makes sense inside the step
    config = replace(PRESETS[name], **overrides)
    return replace(config, targets=replace(config.targets, **targets)).check()


assert tuple(PRESETS) == choices.PRESETS, "choices.PRESETS must list train.config.PRESETS"
assert tuple(SAM_RECIPES) == choices.SAM_RECIPES, "choices.SAM_RECIPES must list train.config.SAM_RECIPES"
