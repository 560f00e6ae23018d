"""Overlay PNGs: a slice in grey, the reference label in green, a predicted mask in red, boxes in yellow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .fsutil import atomic_write


def to_uint8(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.5, 99.5])
    return (np.clip((image - lo) / max(hi - lo, 1e-8), 0, 1) * 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    mask = mask.astype(bool)
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner


def overlay(image: np.ndarray, path: str | Path, prediction: np.ndarray | None = None,
            label: np.ndarray | None = None, boxes: list | None = None, scale: int = 2) -> Path:
    grey = to_uint8(image)
    rgb = np.stack([grey] * 3, axis=-1)
    if prediction is not None:
        rgb[prediction.astype(bool)] = (0.6 * rgb[prediction.astype(bool)] + [100, 0, 0]).clip(0, 255)
        rgb[_outline(prediction)] = (255, 40, 40)
    if label is not None:
        rgb[_outline(label)] = (40, 255, 40)
    picture = Image.fromarray(rgb.astype(np.uint8)).resize((rgb.shape[1] * scale, rgb.shape[0] * scale),
                                                          Image.NEAREST)
    draw = ImageDraw.Draw(picture)
    for box in boxes or []:
        x0, y0, x1, y1 = (float(v) * scale for v in box)
        draw.rectangle([x0, y0, x1, y1], outline=(255, 220, 0), width=2)
    path = Path(path)
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
    return path
