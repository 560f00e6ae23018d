"""One training loop for sup, mt, uamt and semisam; checkpoints resume bit for bit.

Under torchrun (`world`) the student is wrapped in DDP with its BatchNorm over the global batch; the configured
batch sizes are the global ones: each process draws its share of the labelled batch from the same stream (so the
labelled samples are those of one process with the same seed) and its share of the unlabelled batch from its own
cases, with its own stream. Only rank 0 validates, logs and writes checkpoints (docs/architecture.md)."""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..checkpoints import checkpoint_path, latest_checkpoint
from ..data import Dataset, Split, process_unlabelled
from ..errors import UserError
from ..distributed import World, rank_seed
from ..fsutil import remove_stale_temps
from ..interrupts import Interrupted, stop_between_steps
from ..nets import build_student, student_geometry
from ..nets.sync_batchnorm import sync_batchnorm
from ..provenance import RUN_LOG
from .config import TrainConfig
from .losses import sigmoid_rampup, supervised_loss
from .methods import METHODS, teacher_mode
from .sam_rounds import prompt_network, teacher_precision
from .sam_term import SamTeacher
from .state import Checkpointing

run_log = logging.getLogger(RUN_LOG)  # a run's train.log (provenance.run_log), when the caller opened it


class Trainer(Checkpointing):
    def __init__(self, config: TrainConfig, dataset: Dataset, split: Split, run_dir: str | Path,
                 sam: SamTeacher | None = None, device: str = "cpu", log_tensorboard: bool = True,
                 world: World | None = None) -> None:
        self.config = config.check()
        self.method = METHODS[config.method]  # what the method adds to the supervised loss (methods.py)
        self.dataset, self.split, self.device = dataset, split, device
        self.world = world = world or World()
        self.run_dir = Path(run_dir)
        self.sam = sam
        if self.method.needs_sam and sam is None:
            raise UserError(f"--method {config.method} needs SAM: an embedding cache (--cache) or --sam-online")
        for name in ("labelled_batch", "unlabelled_batch"):
            if getattr(config, name) % world.size:
                raise UserError(f"--{name.replace('_', '-')} {getattr(config, name)} is the global batch; it must "
                                f"be a multiple of the {world.size} processes")
        self.geometry = student_geometry(config.as_dict())  # how this student's samples are stored and drawn
        # the config every checkpoint records and the geometry reads (a dict, made once: the step reads it)
        self.settings = self.geometry.checkpoint_config(config.as_dict())
        torch.manual_seed(config.seed)  # the student's initial weights: the same in every process
        self.generator = torch.Generator().manual_seed(config.seed)  # labelled draws: one stream for all processes
        # unlabelled draws and the teacher's noise: each process its own stream (one process: the same as above)
        self.own_generator = (torch.Generator().manual_seed(rank_seed(config.seed, world.rank))
                              if world.distributed else self.generator)
        self.unlabelled_ids = (process_unlabelled(dataset, split, config.unlabelled_cases, config.unlabelled_every,
                                                  world) if self.method.uses_unlabelled else [])
        self.student_input = self.geometry.student_input(self.settings)
        self._load_data()
        self.student = build_student(config.student, in_channels=self.student_input.channels,
                                     **config.student_kwargs).to(device)
        self.model = self.student  # what the step calls: the student, or its DDP wrapper under torchrun
        if world.distributed:
            self.student = sync_batchnorm(self.student, device)
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.student, device_ids=[world.local_rank] if str(device).startswith("cuda") else None)
            torch.manual_seed(rank_seed(config.seed, world.rank))  # dropout: each process its own
        self.teacher = None
        if self.method.uses_unlabelled:
            self.teacher = copy.deepcopy(self.student).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.student.parameters(), lr=config.lr, momentum=config.momentum,
                                             weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(self.student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.iteration = 0
        self.history: list[dict] = []
        self.sam_table: dict[str, torch.Tensor] | None = None  # targets of the latest pseudo-label round
        self.round_logs: dict = {}
        self.on_round: list = []  # callbacks(seconds) after each pseudo-label round (benchmarks time them here)
        # the rounds' teacher precision: the setting with "auto" resolved for this machine, once
        self.round_precision = teacher_precision(config.sam_teacher_precision, self.device)
        # a finished run's network and config that prompts the rounds instead of the EMA teacher (--sam-prompt-run)
        self.prompt_teacher = (prompt_network(config.sam_prompt_run, self.split.labeled, device)
                               if self.rounds and config.sam_prompt_run else None)
        self.writer = None
        if log_tensorboard and world.leader:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    # ---- data ----------------------------------------------------------------------------------------------------
    def _load_data(self) -> None:
        c = self.config
        self.unlabelled_volumes = {}
        if self.rounds:  # a round's teacher normalises each raw volume whole, as inference does (no labels loaded)
            self.unlabelled_volumes = {cid: self.dataset.load(cid, with_label=False).image
                                       for cid in self.unlabelled_ids}
            if self.sam is not None and self.sam.cache is not None:  # the cached rows are these volumes' own
                for cid, image in self.unlabelled_volumes.items():
                    self.sam.cache.check_source(cid, image)
        self.labelled = self.geometry.store(self.dataset, self.split.labeled, self.student_input, labelled=True,
                                            desc="labelled")
        self.unlabelled = None
        if self.method.uses_unlabelled:  # the unlabelled store never receives a label: with_label=False all the way
            self.unlabelled = self.geometry.store(self.dataset, self.unlabelled_ids, self.student_input,
                                                  labelled=False, every=c.unlabelled_every, desc="unlabelled")

    @property
    def rounds(self) -> bool:
        """SAM's targets made in pseudo-label rounds (not in every step)."""
        return self.method.makes_rounds(self.config)

    def _draw(self, store, n: int, generator: torch.Generator):
        return self.geometry.draw(store, n, self.settings, generator)

    def _draw_labelled(self):
        """This process's share of the global labelled batch: every process draws the whole batch from the shared
        stream (cheap: crops of slices held in memory) and keeps its rows."""
        batch = self._draw(self.labelled, self.config.labelled_batch, self.generator)
        share = self.config.labelled_batch // self.world.size
        return batch.take(slice(self.world.rank * share, (self.world.rank + 1) * share))

    # ---- one step ------------------------------------------------------------------------------------------------
    def start_at(self, iteration: int) -> None:
        """Take the schedules (ramps, learning rate, rounds) from `iteration` on, the weights as they are: for a
        measurement of steps late in a run (SAM prompted past the ramp's start) without training to get there."""
        self.iteration = iteration

    def ramp(self, kind: str = "up") -> float:
        length = self.config.consistency_rampup * self.config.iterations
        up = sigmoid_rampup(self.iteration, length)
        return {"up": up, "down": 1.0 - up + sigmoid_rampup(0, length), "none": 1.0}[kind]

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's input noise (UA-MT's: N(0, 0.1) clipped to +-0.2), drawn from the run's generator."""
        return (torch.randn(x.shape, generator=self.own_generator) * 0.1).clamp(-0.2, 0.2).to(x.device)

    def _set_lr(self) -> None:
        c = self.config
        # clamped: an iteration past the schedule's end (a run resumed with fewer --iterations) keeps the last rate
        lr = c.lr * (1 - min(self.iteration / c.iterations, 1.0)) ** 0.9 if c.lr_schedule == "poly" else c.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def forward(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A training forward pass of the student (or its DDP wrapper) or the teacher, in `train_precision`; the
        logits come back float32, so every loss is computed in float32."""
        with torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16,
                            enabled=self.config.train_precision == "bf16"):
            return net(x).float()

    def step(self) -> dict:
        c, dev = self.config, self.device
        method = self.method
        self.student.train()
        self._set_lr()
        lab = self._draw_labelled()
        logs: dict = {}
        if not method.uses_unlabelled:
            logits = self.forward(self.model, lab.images.to(dev))
            loss = supervised_loss(logits, lab.labels.to(dev))
            logs["loss_sup"] = loss.item()
        else:
            unl = self._draw(self.unlabelled, c.unlabelled_batch // self.world.size, self.own_generator)
            if unl.labels is not None:  # nothing of an unlabelled case's label exists in this process
                raise RuntimeError("an unlabelled batch carries labels")
            unl_images = unl.images.to(dev)  # copied to the device once: student, teacher and UA-MT passes share it
            n_lab = len(lab.images)
            if c.student_batch == "joint":  # one forward: BatchNorm statistics over labelled + unlabelled
                logits = self.forward(self.model, torch.cat([lab.images.to(dev), unl_images]))
                logits_l, student_u = logits[:n_lab], logits[n_lab:]
            else:  # "split": each group normalised by its own batch statistics
                logits_l = self.forward(self.model, lab.images.to(dev))
                student_u = self.forward(self.model, unl_images)
            loss = supervised_loss(logits_l, lab.labels.to(dev))
            logs["loss_sup"] = loss.item()
            with torch.no_grad(), teacher_mode(self.teacher, c.teacher_mode):
                teacher_u = self.forward(self.teacher, unl_images + self.noise(unl_images))
            terms, extra = method.unlabelled_terms(self, student_u, teacher_u, unl_images, unl, lab)
            for name, weight, term in terms:
                loss = loss + weight * term
                logs.update({f"loss_{name}": term.item(), f"w_{name}": weight})
            logs.update(extra)
        logs["loss"] = loss.item()
        # the global batch's logs (each process logged its share): one all-reduce, which also carries a non-finite
        # loss of any process to all of them, so they stop together
        logs = self.world.mean(logs)
        if not math.isfinite(logs["loss"]):
            terms = ", ".join(f"{k} {v:.4g}" for k, v in logs.items() if k.startswith("loss"))
            last = latest_checkpoint(self.run_dir)
            kept = f"the last good checkpoint, {last.name}, is kept" if last else "no checkpoint was written yet"
            raise UserError(f"the loss became {logs['loss']} at iteration {self.iteration + 1} ({terms}); training "
                            f"stopped and {kept}: check the data, or train with a lower --lr into a new --out")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        if self.teacher is not None:
            self._ema()
        logs.update(method.after_step(self))
        return logs

    @torch.no_grad()
    def _ema(self) -> None:
        alpha = min(1 - 1 / (self.iteration + 1), self.config.ema_decay)
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(alpha).add_(s.detach(), alpha=1 - alpha)
        for t, s in zip(self.teacher.buffers(), self.student.buffers()):
            t.copy_(s)  # BatchNorm statistics follow the student

    # ---- loop ----------------------------------------------------------------------------------------------------
    def validate(self) -> float:
        from ..evaluate import evaluate_cases

        if not self.split.val:
            return float("nan")
        rows = evaluate_cases(self.student, self.settings, self.dataset, self.split.val,
                              device=self.device, progress=False)
        return float(np.mean([r["dice"] for r in rows]))

    def checkpoint_config(self) -> dict:
        """The config every checkpoint records; the student's geometry reads its preprocessing from it."""
        return self.settings

    @contextlib.contextmanager
    def _closing(self, bar):
        try:
            yield
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.flush()

    def run(self, until: int | None = None, progress: bool = True) -> dict:
        """Train to `config.iterations` (or stop early at `until`, saving a checkpoint to resume from)."""
        leader = self.world.leader
        if leader:
            remove_stale_temps(checkpoint_path(self.run_dir).parent)  # half-written by a killed run; never valid
        self.world.barrier()
        last = latest_checkpoint(self.run_dir)
        if last is not None:
            self.load(last)
        stop = min(until or self.config.iterations, self.config.iterations)
        val_dice = self.history[-1]["val_dice"] if self.history else float("nan")
        bar = tqdm(total=stop, initial=self.iteration, desc=self.config.method, unit="it",
                   disable=not (progress and leader), dynamic_ncols=True)
        start = time.perf_counter()
        first = self.iteration
        # Ctrl-C stops between steps (several processes stop at different points: there it interrupts at once)
        with stop_between_steps(enabled=not self.world.distributed) as requested, self._closing(bar):
            while self.iteration < stop and not requested():
                logs = self.step()
                if self.writer is not None:
                    for key, value in logs.items():
                        self.writer.add_scalar(f"train/{key}", value, self.iteration)
                validating = self.iteration % self.config.val_every == 0 or self.iteration == self.config.iterations
                if validating and leader:
                    val_dice = self.validate()
                    self.history.append({"iteration": self.iteration, "val_dice": val_dice})
                    run_log.info("iteration %d: loss %.4f, validation Dice %.4f", self.iteration, logs["loss"],
                                 val_dice)
                    if self.writer is not None:
                        self.writer.add_scalar("val/dice", val_dice, self.iteration)
                if self.iteration % self.config.save_every == 0:
                    self.save()
                bar.set_postfix(loss=f"{logs['loss']:.3f}", val_dice=f"{val_dice:.3f}")
                bar.update(1)
            if requested() and self.iteration < stop:
                if self.iteration > first and self.iteration % self.config.save_every:
                    self.save()  # the state after exactly `iteration` steps
                raise Interrupted(f"interrupted at iteration {self.iteration}, resume with the same command")
        self.save()
        if self.iteration >= self.config.iterations:
            self.save(final=True)
        return {"iteration": self.iteration, "val_dice": val_dice, "seconds": time.perf_counter() - start}
