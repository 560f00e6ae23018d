"""How a teacher's prediction becomes SAM's targets: the prompt box, the gates and the fusion, declared once. The
training rounds hold them as `TrainConfig.targets` (flags `train --sam-margin ...`), `pseudo-label --prompt teacher`
takes them as `--margin ...`, and the benches build them directly. Free of heavy imports (the CLI reads it)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from .errors import UserError
from .options import check_options, option

# SAM-input pixels around a prompt box: ~3 px of a ~180 px LA slice (the LA ceiling check); every box prompt uses it
BOX_MARGIN = 4.0
# adapt's training boxes: sides 0.8-1.4 of the label box's, about how wrong a teacher's box is on LA (docs/training.md)
ADAPT_BOX_SCALE = (0.8, 1.4)
FUSIONS = ("sam", "mean", "teacher")


@dataclass(frozen=True)
class TargetOptions:
    margin: float = option(BOX_MARGIN, "box margin in SAM-input pixels", at_least=0)
    largest_3d: bool = option(True, "prompt from the largest 3D connected component of the teacher's mask")
    min_iou_pred: float = option(0.0, "keep SAM's mask only where SAM's own predicted IoU reaches this",
                                 at_least=0, at_most=1)
    min_agreement: float = option(0.0, "keep SAM's mask only where its IoU with the teacher's mask on that slice "
                                       "reaches this", at_least=0, at_most=1)
    negatives: bool = option(True, "cached slices outside the teacher's z-range get an empty target")
    threshold: float = option(0.5, "teacher probability -> mask", at_least=0, at_most=1)
    # "mean": SAM corrects the teacher where it is confident, defers where it is not; outside the box, where SAM was
    # not asked, neither counts. "teacher": SAM's mask is decoded but not used, the control that says what SAM adds
    # over the prompting network's own pseudo-labels
    fusion: str = option("sam", "the target: SAM's mask (sam), the mean of SAM's and the teacher's probabilities "
                                "inside the prompt box (mean), or the teacher's own mask (teacher: a control "
                                "without SAM)", choices=FUSIONS)

    def check(self, prefix: str = "") -> "TargetOptions":
        check_options(self, prefix)
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict, **overrides) -> "TargetOptions":
        """The options a training run's rounds use, from its config (as every checkpoint records it); `overrides`
        that are not None win."""
        if not isinstance(config.get("targets"), dict):
            raise UserError("the run's config records no SAM target options ('targets'; it was written by an older "
                            "semisam-fast): train it again, or give every option here")
        return replace(cls(**config["targets"]), **{k: v for k, v in overrides.items() if v is not None}).check()
