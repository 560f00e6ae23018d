"""Training configuration and the presets (la-cpu: 2D U-Net on 2 CPU cores; la-paper: the paper's 3D V-Net)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .. import choices
from ..errors import UserError
from ..nets import STUDENTS, student_geometry
from ..prompter import BOX_MARGIN

METHODS = choices.TRAIN["method"]
# larger learning rates overflow the optimiser's float32 arithmetic (Adam divides lr by 1 - beta1) before any loss
# can be seen to diverge
MAX_LR = 1e30


@dataclass
class TrainConfig:
    method: str = "semisam"
    student: str = "unet2d"
    student_kwargs: dict = field(default_factory=lambda: {"base": 16})
    normalization: str = "zscore"  # the student's intensity normalisation (data/student_input.py), per volume
    in_plane: int = 96  # 2D: slices are resized to this canvas (aspect not kept; SAM sees the original slice)
    crop: int = 80  # 2D: random crop side inside the canvas
    patch: list | None = None  # 3D: patch size (V-Net)
    iterations: int = 2000
    labelled_batch: int = 4
    unlabelled_batch: int = 4
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_schedule: str = "poly"  # poly: lr * (1 - t/T)^0.9 (UA-MT, SSL4MIS) | constant
    intensity_aug: bool = True  # random contrast/brightness of the student's input (SAM never sees it)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    ema_decay: float = 0.99
    student_batch: str = "joint"  # joint: one student forward over labelled + unlabelled (official codes) | split
    teacher_mode: str = "eval"  # BatchNorm of the EMA teacher in the consistency passes: eval (running stats) | train
    consistency: float = 0.1
    consistency_rampup: float = 0.4  # fraction of the run over which the sigmoid ramp reaches 1
    uamt_samples: int = 4  # stochastic teacher passes for UA-MT's uncertainty (the paper uses 8)
    # SAM term: ramped UP by default, like the consistency term: early on the student's boxes are poor, and SAM
    # prompted with a poor box gives a confidently wrong mask; by the time boxes are good SAM's masks are worth most.
    sam_weight: float = 0.1
    sam_ramp: str = "up"  # up | down | none
    sam_loss: str = "dicece"  # dicece (0.5 BCE + 0.5 soft Dice) | mse
    sam_margin: float = BOX_MARGIN  # SAM-input pixels around the prompt box (~3 px of a 180 px LA slice)
    sam_prompt_from: str = "student"  # per-step mode: student | teacher
    # rounds: every sam_round_every iterations the EMA teacher predicts every unlabelled volume, SAM decodes all
    # cached slices in large batches, the gated masks are stored and the step reads them through its geometry
    # (sam_targets.py); step: the decoder runs inside every step on the augmented crop's prediction (the old way)
    sam_mode: str = "rounds"  # rounds | step
    sam_round_every: int = 200
    sam_largest_3d: bool = True  # rounds: prompts from the teacher's largest 3D connected component
    sam_min_iou_pred: float = 0.0  # rounds: gate on SAM's predicted IoU
    # rounds: gate on IoU(SAM mask, teacher mask) per slice; 0.7 gave the best targets on the development cases
    # (bench/results/target_quality_dev.md: target Dice 0.785, precision 0.72, 55% of slices)
    sam_min_agreement: float = 0.7
    sam_negatives: bool = True  # rounds: slices outside the teacher's z-range get an empty target
    sam_pixels: str = "all"  # rounds: all | agree (train only on pixels where SAM and the teacher agree)
    sam_fusion: str = "sam"  # rounds: the target is SAM's mask (sam) or the mean of SAM's and the teacher's (mean)
    # rounds: the teacher's prediction; auto = bf16 on a CPU with bf16 matmuls (~2x; it moved 0.01-0.05% of the
    # target pixels on the development cases, bench/results/round_teacher_dev.md), fp32 elsewhere
    sam_teacher_precision: str = "auto"
    sam_online: bool = False  # run the encoder every step (the official code's way; for benchmarks)
    unlabelled_every: int = 1  # use every k-th slice of the unlabelled cases (must match the cache's embed --every)
    unlabelled_cases: int | None = None  # use only the first k unlabelled cases (documented subsets)
    val_every: int = 500
    save_every: int = 500
    seed: int = 0

    def check(self) -> "TrainConfig":
        for name, allowed in {**choices.TRAIN, "student": tuple(STUDENTS)}.items():  # registered students too
            if getattr(self, name) not in allowed:
                raise UserError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, "
                                f"not {getattr(self, name)!r}")
        positive = {"iterations": self.iterations, "labelled_batch": self.labelled_batch,
                    "unlabelled_batch": self.unlabelled_batch, "val_every": self.val_every,
                    "save_every": self.save_every, "sam_round_every": self.sam_round_every,
                    "unlabelled_every": self.unlabelled_every, "uamt_samples": self.uamt_samples}
        if self.unlabelled_cases is not None:
            positive["unlabelled_cases"] = self.unlabelled_cases
        for name, value in positive.items():
            if int(value) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if not 0 < self.lr <= MAX_LR:  # also refuses nan and inf
            raise UserError(f"--lr must be a positive number up to {MAX_LR:g}, got {self.lr}")
        if not 0 <= int(self.seed) < 2**63:  # torch's seeds are 64-bit
            raise UserError(f"--seed must be in [0, 2^63), got {self.seed}")
        for name in ("consistency", "sam_weight", "sam_margin", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("ema_decay", "sam_min_iou_pred", "sam_min_agreement", "momentum"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if self.sam_online and self.sam_mode == "rounds":
            raise UserError("--sam-online runs the encoder inside the step: use it with --sam-mode step")
        student_geometry(self.as_dict()).check(self.as_dict())
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


# The SAM-term settings for a decoder adapted on the labelled cases (`semisam-fast adapt`): its masks averaged with the
# teacher's probabilities inside the prompt box, ungated, beat the teacher for every development teacher (docs/results.md,
# "SAM that helps": +0.03 to +0.045 all-slice Dice, 6-8 of 8 cases), so they count at weight 1. The preset defaults
# (weight 0.1, agreement >= 0.7, SAM's mask alone) stay those of a frozen decoder, whose targets do not beat the teacher.
ADAPTED_SAM = {"sam_weight": 1.0, "sam_min_agreement": 0.0, "sam_fusion": "mean"}


def preset(name: str, **overrides) -> TrainConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides.get("sam_online") and "sam_mode" not in overrides:
        overrides["sam_mode"] = "step"  # the encoder online only makes sense inside the step
    return replace(PRESETS[name], **overrides).check()


assert tuple(PRESETS) == choices.PRESETS, "choices.PRESETS must list train.config.PRESETS"
