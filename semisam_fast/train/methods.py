"""One small object per training method: what it adds to the supervised loss on the unlabelled batch, and what it does
after a step (SemiSAM's pseudo-label rounds). The trainer does the shared part (draw, student forward, supervised
loss, the EMA teacher's prediction) and holds the run's state; the methods hold none. A new method is one new class
here and its name in `choices.METHODS`. SemiSAM's SAM term asks the student's geometry where the targets of
the batch's samples are (`geometry/`): it never asks which student it trains."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import choices
from ..distributed import global_sum
from ..sam_targets import CaseTargets
from .losses import sam_loss, softmax_mse, uamt_threshold, uncertainty_mask
from .mixing import copy_paste, random_boxes
from .sam_rounds import make_round, round_summary

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
    needs_sam = False

    def makes_rounds(self, config) -> bool:
        """Whether the method makes pseudo-label rounds (the trainer then loads the unlabelled volumes whole)."""
        return False

    def unlabelled_terms(self, trainer: Trainer, student_u: Tensor, teacher_u: Tensor, unl_images: Tensor,
                         unl, lab) -> tuple[Terms, dict]:
        return [], {}

    def after_step(self, trainer: Trainer) -> dict:
        """Work between steps (after the optimiser and EMA updates); returns logs for the step's record."""
        return {}


class MeanTeacher(Method):
    """Consistency (softmax MSE) between the student and its EMA teacher on the unlabelled batch."""

    uses_unlabelled = True

    def consistency(self, trainer: Trainer, student_u: Tensor, teacher_u: Tensor, unl_images: Tensor) -> Tensor:
        return softmax_mse(student_u, teacher_u)

    def unlabelled_terms(self, trainer: Trainer, student_u: Tensor, teacher_u: Tensor, unl_images: Tensor,
                         unl, lab) -> tuple[Terms, dict]:
        weight = trainer.config.consistency * trainer.ramp("up")
        return [("cons", weight, self.consistency(trainer, student_u, teacher_u, unl_images))], {}


class UncertaintyAwareMT(MeanTeacher):
    """UA-MT: the consistency only where T stochastic teacher passes (noise and dropout) are certain."""

    def consistency(self, trainer: Trainer, student_u: Tensor, teacher_u: Tensor, unl_images: Tensor) -> Tensor:
        c = trainer.config
        with torch.no_grad(), teacher_mode(trainer.teacher, c.teacher_mode), dropout_on(trainer.teacher):
            passes = [F.softmax(trainer.forward(trainer.teacher, unl_images + trainer.noise(unl_images)), dim=1)
                      for _ in range(max(1, c.uamt_samples))]
            mask, _ = uncertainty_mask(torch.stack(passes), uamt_threshold(trainer.iteration, c.iterations))
        mse = softmax_mse(student_u, teacher_u, reduction="none")
        return global_sum((mask * mse).sum()) / (mse.shape[1] * global_sum(mask.sum()) + 1e-16)


class SemiSAM(MeanTeacher):
    """Mean teacher plus the SAM term: SAM's masks, prompted from the network's prediction, as targets. Rounds
    (default): every `sam_round_every` steps the teacher predicts every unlabelled volume and SAM's gated masks are
    stored in the student's geometry (`trainer.sam_table`); step mode: SAM is prompted inside every step."""

    needs_sam = True

    def makes_rounds(self, config) -> bool:
        return config.sam_mode == "rounds"

    def unlabelled_terms(self, trainer: Trainer, student_u: Tensor, teacher_u: Tensor, unl_images: Tensor,
                         unl, lab) -> tuple[Terms, dict]:
        terms, logs = super().unlabelled_terms(trainer, student_u, teacher_u, unl_images, unl, lab)
        c = trainer.config
        weight = c.sam_weight * trainer.ramp(c.sam_ramp)
        if not self.makes_rounds(c):
            loss_sam, sam_logs = self.step_term(trainer, student_u, teacher_u, unl)
            return terms + [("sam", weight, loss_sam)], {**logs, **sam_logs}
        prob = F.softmax(student_u, dim=1)[:, 1]
        if trainer.sam_table is None:  # no round yet
            return terms + [("sam", weight, prob.sum() * 0.0)], {**logs, "sam_valid": 0.0}
        # the latest round's stored targets of this batch, looked up once for the SAM term and the pasted pairs
        prob, masks, agree, valid = trainer.geometry.stored_targets(trainer.sam_table, unl, prob, trainer.settings)
        dev = prob.device
        masks, valid = masks.to(dev), valid.to(dev)
        pixels = agree.to(dev) if c.sam_pixels == "agree" else None
        terms = terms + [("sam", weight, sam_loss(prob, masks, valid, kind=c.sam_loss, weight=pixels))]
        if c.sam_mix == "copy-paste":
            terms.append(("sam_mix", weight, self.mix_term(trainer, unl_images, masks, valid, lab)))
        return terms, {**logs, "sam_valid": float(valid.float().mean())}

    def mix_term(self, trainer: Trainer, unl_images: Tensor, masks: Tensor, valid: Tensor, lab) -> Tensor:
        """The SAM loss on copy-paste pairs (`mixing.py`): the unlabelled crops with their stored targets, each
        paired with a labelled crop of this step (cycled) and its label."""
        dev = unl_images.device
        pick = torch.arange(len(unl_images)) % len(lab.images)
        box = random_boxes(masks.shape, trainer.own_generator).to(dev)
        images, targets, weights = copy_paste(unl_images, masks, valid, lab.images[pick].to(dev),
                                              (lab.labels[pick] > 0).to(dev), box)
        prob = F.softmax(trainer.forward(trainer.model, images), dim=1)[:, 1]
        every = torch.ones(len(images), dtype=torch.bool, device=dev)
        return sam_loss(prob, targets, every, kind=trainer.config.sam_loss, weight=weights)

    def step_term(self, trainer: Trainer, student_u: Tensor, teacher_u: Tensor, unl) -> tuple[Tensor, dict]:
        """Step mode: SAM prompted now from the student's (or the teacher's) prediction of the batch."""
        c = trainer.config
        prob = F.softmax(student_u, dim=1)[:, 1]
        source = prob if c.sam_prompt_from == "student" else F.softmax(teacher_u, dim=1)[:, 1]
        slices, targets, valid = trainer.geometry.step_targets(trainer.sam, prob, source, unl, trainer.settings)
        loss = sam_loss(slices, targets, valid.to(prob.device), kind=c.sam_loss)
        return loss, {"sam_prompted": float(valid.float().mean())}

    def after_step(self, trainer: Trainer) -> dict:
        c = trainer.config
        if not self.makes_rounds(c):
            return {}
        if trainer.prompt_teacher is not None:  # its prediction never changes: one round, after the first step
            due = trainer.sam_table is None
        else:
            due = trainer.iteration % c.sam_round_every == 0 and trainer.iteration < c.iterations
        if due:
            self.sam_round(trainer)
            return trainer.round_logs
        return {}

    def round_targets(self, trainer: Trainer) -> dict[str, CaseTargets]:
        """A round's targets per unlabelled case: the teacher's (or the prompt run's) predictions -> gated SAM
        masks (`make_round`)."""
        net, settings = trainer.prompt_teacher or (trainer.teacher, trainer.settings)
        return make_round(net, trainer.unlabelled_volumes, settings, trainer.sam.cache,
                          trainer.sam.backend, trainer.config.targets, trainer.device,
                          progress=trainer.world.leader, precision=trainer.round_precision)

    def sam_round(self, trainer: Trainer) -> None:
        """A pseudo-label round: the teacher's predictions -> gated SAM targets, stored for the next steps."""
        start = time.perf_counter()
        rounds = self.round_targets(trainer)
        trainer.sam_table = trainer.geometry.round_table(rounds, trainer.unlabelled, trainer.student_input)
        # each process made its own cases' targets
        trainer.round_logs = (trainer.world.mean(round_summary(rounds))
                              | {"sam_teacher_bf16": float(trainer.round_precision == "bf16")})
        for callback in trainer.on_round:
            callback(time.perf_counter() - start)


METHODS: dict[str, Method] = {"sup": Method(), "mt": MeanTeacher(), "uamt": UncertaintyAwareMT(), "semisam": SemiSAM()}

assert tuple(METHODS) == choices.METHODS, "choices.METHODS must list the registered methods"
