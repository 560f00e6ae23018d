"""What a student's geometry decides, in one object: how its samples are stored and drawn, how it predicts a whole
volume, which config key records its size, and how SAM's targets reach its samples (stored round targets looked up
per sample, or made per step). The trainer, inference and the checkpoint loader ask the student's geometry and never
which student they have (`nets.STUDENTS` pairs each network with its geometry).

Also here: the batch every geometry draws, and the inference helpers both geometries' predictions share.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data.student_input import StudentInput
from ..errors import UserError

if TYPE_CHECKING:
    from ..data import Dataset
    from ..sam_targets import CaseTargets

Table = Any  # a pseudo-label round's targets in the geometry's own layout (what `round_table` makes)


@dataclass
class Batch:
    images: torch.Tensor  # (B,1,...) student input
    labels: torch.Tensor | None  # (B,...) long, labelled batches only
    refs: list  # SliceRef per sample (2D) or (case_id, z0, y0, x0, H, W, Z) per sample (3D)
    transforms: list | None = None  # 2D: each sample's crop/flip/rot90 (`augment.Transform2D`)
    index: list[int] | None = None  # 2D: the store rows drawn (stored SAM targets are looked up by row)

    def take(self, rows: slice) -> "Batch":
        """The samples `rows` of this batch (a process's share of a global batch)."""
        return Batch(self.images[rows], None if self.labels is None else self.labels[rows], self.refs[rows],
                     None if self.transforms is None else self.transforms[rows],
                     None if self.index is None else self.index[rows])


def intensity_jitter(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random contrast (x0.8-1.2) and brightness (+-0.2 of the z-scored unit) per sample of a (B, 1, ...) batch:
    the student's input only (SAM's targets come from the original slice)."""
    shape = (images.shape[0],) + (1,) * (images.ndim - 1)
    contrast = 0.8 + 0.4 * torch.rand(shape, generator=generator)
    brightness = 0.4 * torch.rand(shape, generator=generator) - 0.2
    return images * contrast + brightness


def agreement(targets: CaseTargets) -> np.ndarray:
    """Per pixel, 1 where a round's target and the teacher's mask agree (`--sam-pixels agree`)."""
    return (targets.target().astype(bool) == targets.teacher).astype(np.uint8)


def recorded(config: dict, key: str):
    """A value every checkpoint of this version records; a config without it is of an older layout, refused."""
    if config.get(key) is None:
        raise UserError(f"config of a {config.get('student')} student has no {key!r} (a checkpoint of an older "
                        "semisam-fast, or not a training run's): train it again with this version")
    return config[key]


class StudentGeometry:
    """The contract; `Slices2D` and `Volumes3D` implement it. `config` is a run's TrainConfig as a dict (what
    every checkpoint records)."""

    config_key: str  # the config entry holding the student's input size ("in_plane", "patch")

    # ---- configuration and preprocessing ----------------------------------------------------------------------
    def check(self, config: dict) -> None:
        """Refuse sizes this geometry cannot train with (UserError)."""

    def checkpoint_config(self, config: dict) -> dict:
        """The config a checkpoint records (sizes that do not apply to this geometry cleared)."""
        return dict(config)

    def student_input(self, config: dict) -> StudentInput:
        """The run's preprocessing: its normalisation (StudentInput's default where a hand-made config has none)
        and this geometry's canvas."""
        normalization = {"normalization": config["normalization"]} if config.get("normalization") else {}
        return StudentInput(**normalization, in_plane=self.canvas_size(config), context=int(config.get("context") or 0))

    def canvas_size(self, config: dict) -> int | None:
        """The in-plane side every slice is resized to; None: the volume at its own size."""
        return None

    # ---- prediction -------------------------------------------------------------------------------------------
    def predict(self, net: nn.Module, image: np.ndarray, config: dict, keep: list[int] | None, device: str,
                classes: bool) -> np.ndarray:
        """Probabilities of an already normalised (H, W, Z) volume (`keep`: only these z, last axis)."""
        raise NotImplementedError

    # ---- training data ----------------------------------------------------------------------------------------
    def store(self, dataset: Dataset, case_ids: list[str], student_input: StudentInput, labelled: bool,
              every: int = 1, desc: str = "load") -> Any:
        """The cases in memory as this geometry draws from them (labels only when `labelled`)."""
        raise NotImplementedError

    def draw(self, store: Any, n: int, config: dict, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def uncached(self, cached: list[int], wanted: list[int]) -> list[int]:
        """Slices a run would draw that an embedding cache lacks and must have (3D patches skip uncached slices)."""
        return []

    # ---- SAM's targets ----------------------------------------------------------------------------------------
    def round_table(self, rounds: dict[str, CaseTargets], store: Any, student_input: StudentInput) -> Table:
        raise NotImplementedError

    def table_parts(self, table: Table, store: Any) -> dict[str, dict[str, torch.Tensor]]:
        """A round's table as {case: its targets}: what checkpoints keep, so a run resumes under any number of
        processes (each takes its own cases' parts)."""
        raise NotImplementedError

    def table_from_parts(self, parts: dict[str, dict[str, torch.Tensor]], store: Any) -> Table:
        raise NotImplementedError

    def stored_targets(self, table: Table, batch: Batch, prob: Tensor,
                       config: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The batch's stored targets as per-slice maps: (prob, masks, agree) (N, h, w) and valid (N,)."""
        raise NotImplementedError

    def step_targets(self, sam: Any, prob: Tensor, source: Tensor, batch: Batch,
                     config: dict) -> tuple[Tensor, Tensor, Tensor]:
        """SAM prompted from `source` (foreground probabilities of the batch) now: (prob, targets) (N, h, w) per
        slice and valid (N,)."""
        raise NotImplementedError


# ---- helpers both geometries' predictions share ---------------------------------------------------------------
@contextmanager
def eval_mode(net: nn.Module, channels_last: bool = False) -> Iterator[None]:
    """Eval mode under inference_mode; `channels_last`: the 2D net's weights in channels-last layout meanwhile
    (oneDNN's faster convolutions on the CPU: 1.35x for la-cpu's U-Net, outputs equal to ~1e-7). The layout changes
    outside inference_mode, so the restored weights stay ordinary tensors that training can use."""
    was_training = net.training
    net.eval()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            yield
    finally:
        if channels_last:
            net.to(memory_format=torch.contiguous_format)
        net.train(was_training)


def foreground_prob(logits: Tensor) -> Tensor:
    """(B, C, ...) logits -> (B, ...) foreground probability: sigmoid for C=1, softmax class 1 for C=2,
    1 - P(background) for C>2."""
    c = logits.shape[1]
    if c == 1:
        return torch.sigmoid(logits[:, 0])
    probs = torch.softmax(logits.float(), dim=1)
    return probs[:, 1] if c == 2 else 1.0 - probs[:, 0]


def class_probs(logits: Tensor) -> Tensor:
    """(B, C, ...) logits -> (B, C, ...) softmax probabilities (a multi-class student's output)."""
    return torch.softmax(logits.float(), dim=1)


def check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, Z) volume, got shape {image.shape}")
    return image.astype(np.float32, copy=False)


def positive_ints(value: object, n: int, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise UserError(f"{name} must be {n} positive integers, got {value!r}") from None
    if len(out) != n or min(out) < 1:
        raise UserError(f"{name} must be {n} positive integers, got {value!r}")
    return out
