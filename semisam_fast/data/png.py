"""2D PNG layout: `images/<case>.png` (+ optional `masks/<case>.png`, mask > 0 is foreground)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from semisam_fast.errors import UserError
from semisam_fast.fsutil import atomic_write

from .base import Case, Dataset, as_mask, reading


def _gray(im: Image.Image) -> np.ndarray:
    """Grayscale float32 (H, W); RGB/RGBA/palette via PIL's luma, 16-bit/float kept as is."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F", "L"):
        return np.asarray(im, dtype=np.float32)
    return np.asarray(im.convert("L"), dtype=np.float32)


class PngDataset(Dataset):
    """2D images stored as (H, W, 1) cases. Case list: `list_file`, else every `images/*.png` sorted."""

    format = "png"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def masks_dir(self) -> Path:
        return self.root / "masks"

    def _discover(self) -> list[str]:
        return sorted(p.stem for p in self.images_dir.glob("*.png") if p.is_file())

    def image_path(self, case_id: str) -> Path:
        p = self.images_dir / f"{case_id}.png"
        if not p.is_file():
            raise UserError(f"case {case_id!r}: {p} not found")
        return p

    def mask_path(self, case_id: str) -> Path | None:
        p = self.masks_dir / f"{case_id}.png"
        return p if p.is_file() else None

    def _check_case(self, case_id: str) -> None:
        self.image_path(case_id)

    def _load(self, case_id: str, with_label: bool) -> Case:
        ip = self.image_path(case_id)
        with reading(ip), Image.open(ip) as im:
            image = _gray(im)[:, :, None]
        label = None
        mp = self.mask_path(case_id) if with_label else None
        if mp is not None:
            with reading(mp), Image.open(mp) as im:
                m = np.asarray(im)
            if m.ndim == 3:  # RGB(A) mask: foreground where any colour channel is set
                m = m[..., :3].max(axis=-1)
            if m.shape != image.shape[:2]:
                raise UserError(f"{mp}: mask size {m.shape} != image size {image.shape[:2]}")
            label = (m > 0).astype(np.uint8)[:, :, None]
        return Case(case_id=case_id, image=image, label=label, spacing=None)

    def _case_has_label(self, case_id: str) -> bool:
        return self.mask_path(case_id) is not None

    def shape(self, case_id: str) -> tuple[int, int, int]:
        ip = self.image_path(case_id)
        with reading(ip), Image.open(ip) as im:  # lazy: reads the header only
            w, h = im.size
        return (h, w, 1)

    def mask_file(self, case_id: str, out_dir: Path) -> Path:
        return Path(out_dir) / f"{case_id}.png"

    def source_files(self, case_id: str) -> list[Path]:
        return [p for p in (self.image_path(case_id), self.mask_path(case_id)) if p is not None]

    def read_mask(self, case_id: str, masks_dir: Path) -> np.ndarray:
        path = self.mask_file(case_id, masks_dir)
        if not path.is_file():
            raise UserError(f"no mask for case {case_id}: {path} not found")
        with reading(path), Image.open(path) as picture:
            data = np.asarray(picture.convert("L"))
        if np.isin(data, (0, 255)).all():  # a binary mask as write_mask stores it (0/255), or as viewers draw one
            data = (data > 0).astype(np.uint8)
        return as_mask(np.asarray(data)[:, :, None], self.shape(case_id), case_id)  # else its own values

    def write_mask(self, case_id: str, mask: np.ndarray, out_dir: Path) -> Path:
        """Write `<out_dir>/<case>.png` (8-bit gray). Binary 0/1 masks are stored as 0/255 so they
        are visible in viewers; read them back with `> 0`. Other values are stored unchanged.
        Accepts (H, W, 1) or (H, W)."""
        self._known(case_id)
        shape = self.shape(case_id)
        mask = np.asarray(mask)
        if mask.ndim == 2:
            mask = mask[:, :, None]
        m = as_mask(mask, shape, case_id)[:, :, 0]
        if m.size and m.max() <= 1:
            m = m * np.uint8(255)
        return atomic_write(self.mask_file(case_id, out_dir),
                            lambda tmp: Image.fromarray(np.ascontiguousarray(m)).save(tmp, format="PNG"))
