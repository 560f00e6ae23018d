"""Where real images come from when the tool needs some (parity gate, demo): LA when present, else the phantom."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .prompts import mask_to_box

LA_ENV = "SEMISAM_LA_DIR"


def default_la_dir() -> Path | None:
    """The LA folder named by $SEMISAM_LA_DIR when it holds a train.list; None otherwise (the library does not guess
    where a machine keeps its data; commands take --data)."""
    value = os.environ.get(LA_ENV)
    if value and (Path(value) / "train.list").is_file():
        return Path(value)
    return None


@dataclass
class Samples:
    slices: torch.Tensor  # (N, H, W) float32
    labels: np.ndarray  # (N, H, W) uint8
    boxes: torch.Tensor  # (N, 4) (x0, y0, x1, y1), label box + margin
    source: str


def phantom_dir() -> Path:
    """The built-in synthetic sample (generated once per machine into the temp folder; deterministic)."""
    from .data import make_phantom

    root = Path(tempfile.gettempdir()) / "semisam-fast-phantom-v1"
    if not (root / "train.list").is_file():
        make_phantom(root, n_cases=8, seed=0)
    return root


def load_samples(n: int = 4, data: str | Path | None = None, margin: float = 3.0, case: int = 0) -> Samples:
    """`n` labelled 2D slices with foreground, evenly spread over one case (the first by default; the parity gate
    uses it, so int8 calibration takes another), with their label boxes."""
    from .data import open_dataset

    root = Path(data) if data else default_la_dir()
    source = f"LA ({root})" if root and not data else str(root)
    if root is None:
        root, source = phantom_dir(), "built-in synthetic phantom"
    dataset = open_dataset(root)
    case = dataset.load(dataset.case_ids[case % len(dataset.case_ids)])
    label = case.label
    area = label.reshape(-1, label.shape[2]).sum(axis=0)
    candidates = np.flatnonzero(area >= max(20, 0.2 * area.max()))
    chosen = candidates[np.linspace(0, len(candidates) - 1, n).round().astype(int)]
    slices = torch.from_numpy(np.ascontiguousarray(case.image[:, :, chosen].transpose(2, 0, 1))).float()
    labels = np.ascontiguousarray(label[:, :, chosen].transpose(2, 0, 1))
    boxes = torch.from_numpy(np.stack([mask_to_box(m, margin) for m in labels]))
    return Samples(slices, labels, boxes, f"{source}, case {case.case_id}, slices {chosen.tolist()}")
