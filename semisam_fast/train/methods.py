"""One small object per training method: what it adds to the supervised loss on the unlabelled batch. The trainer
does the shared part (draw, student forward, supervised loss, the EMA teacher's prediction); a new method is one new
class here and its name in `choices.TRAIN["method"]`."""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import choices
from ..distributed import global_sum
from .losses import softmax_mse, uamt_threshold, uncertainty_mask

if TYPE_CHECKING:
    from .loop import Trainer

Terms = list[tuple[str, float, Tensor]]  # (name, weight, loss): added to the supervised loss in this order
# unlabelled_terms returns (terms, extra logs for the step's record)


@contextmanager
def dropout_on(net: nn.Module):
    """Dropout layers in train mode (BatchNorm stays in eval): UA-MT's stochastic teacher passes."""
    drops = [m for m in net.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    for m in drops:
        m.train()
    try:
        yield
    finally:
        for m in drops:
            m.eval()


@contextmanager
def teacher_mode(net: nn.Module, mode: str):
    """mode "train": the teacher's BatchNorm uses the batch's statistics (as UA-MT's and SSL4MIS's official code,
    whose EMA model is never put in eval mode); "eval": the running statistics it copies from the student."""
    if mode == "train":
        net.train()
    try:
        yield
    finally:
        net.eval()


class Method:
    """Supervised-only: no unlabelled batch, no teacher."""

    uses_unlabelled = False

    def unlabelled_terms(self, trainer: Trainer, student_u: Tensor, teacher_u: Tensor, unl_images: Tensor,
                         unl) -> tuple[Terms, dict]:
        return [], {}


class MeanTeacher(Method):
    """Consistency (softmax MSE) between the student and its EMA teacher on the unlabelled batch."""

    uses_unlabelled = True

    def consistency(self, trainer: Trainer, student_u: Tensor, teacher_u: Tensor, unl_images: Tensor) -> Tensor:
        return softmax_mse(student_u, teacher_u)

    def unlabelled_terms(self, trainer: Trainer, student_u: Tensor, teacher_u: Tensor, unl_images: Tensor,
                         unl) -> tuple[Terms, dict]:
        weight = trainer.config.consistency * trainer.ramp("up")
        return [("cons", weight, self.consistency(trainer, student_u, teacher_u, unl_images))], {}


class UncertaintyAwareMT(MeanTeacher):
    """UA-MT: the consistency only where T stochastic teacher passes (noise and dropout) are certain."""

    def consistency(self, trainer: Trainer, student_u: Tensor, teacher_u: Tensor, unl_images: Tensor) -> Tensor:
        c = trainer.config
        with torch.no_grad(), teacher_mode(trainer.teacher, c.teacher_mode), dropout_on(trainer.teacher):
            passes = [F.softmax(trainer.teacher(unl_images + trainer.noise(unl_images)), dim=1)
                      for _ in range(max(1, c.uamt_samples))]
            mask, _ = uncertainty_mask(torch.stack(passes), uamt_threshold(trainer.iteration, c.iterations))
        mse = softmax_mse(student_u, teacher_u, reduction="none")
        return global_sum((mask * mse).sum()) / (mse.shape[1] * global_sum(mask.sum()) + 1e-16)


class SemiSAM(MeanTeacher):
    """Mean teacher plus the SAM term: SAM's masks, prompted from the network's prediction, as targets."""

    def unlabelled_terms(self, trainer: Trainer, student_u: Tensor, teacher_u: Tensor, unl_images: Tensor,
                         unl) -> tuple[Terms, dict]:
        terms, logs = super().unlabelled_terms(trainer, student_u, teacher_u, unl_images, unl)
        loss_sam, sam_logs = trainer.sam_term(student_u, teacher_u, unl)
        weight = trainer.config.sam_weight * trainer.ramp(trainer.config.sam_ramp)
        return terms + [("sam", weight, loss_sam)], {**logs, **sam_logs}


METHODS: dict[str, Method] = {"sup": Method(), "mt": MeanTeacher(), "uamt": UncertaintyAwareMT(), "semisam": SemiSAM()}

assert tuple(METHODS) == choices.TRAIN["method"], "choices.TRAIN['method'] must list the registered methods"
