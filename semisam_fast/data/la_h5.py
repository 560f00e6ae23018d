"""LA 2018 / UA-MT HDF5 layout: `<root>/<case>/mri_norm2.h5` with `image` and `label` datasets."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from semisam_fast.errors import UserError
from semisam_fast.fsutil import atomic_write

from .base import Case, Dataset, as_mask, reading

H5_NAME = "mri_norm2.h5"
MASK_NAME = "mask.h5"


def case_h5(case_dir: Path) -> Path | None:
    """The volume file of a case folder: mri_norm2.h5, else its only other *.h5 (not mask.h5)."""
    p = case_dir / H5_NAME
    if p.is_file():
        return p
    found = sorted(q for q in case_dir.glob("*.h5") if q.is_file() and q.name != MASK_NAME)
    return found[0] if len(found) == 1 else None


class LAH5Dataset(Dataset):
    """HDF5 volumes, `image` float32 (X, Y, Z) and optional `label` uint8 (binarised on load).
    Case list: `list_file`, else `<root>/train.list` if present, else all case folders sorted."""

    format = "la_h5"

    def _default_list(self) -> Path | None:
        p = self.root / "train.list"
        return p if p.is_file() else None

    def _discover(self) -> list[str]:
        return sorted(d.name for d in self.root.iterdir() if d.is_dir() and case_h5(d) is not None)

    def path(self, case_id: str) -> Path:
        """The case's .h5 file."""
        case_dir = self.root / case_id
        p = case_h5(case_dir) if case_dir.is_dir() else None
        if p is None:
            raise UserError(f"case {case_id!r}: no {H5_NAME} (or single *.h5) in {case_dir}")
        return p

    def _check_case(self, case_id: str) -> None:
        self.path(case_id)

    def _load(self, case_id: str, with_label: bool) -> Case:
        p = self.path(case_id)
        with reading(p), h5py.File(p, "r") as f:
            if "image" not in f:
                raise UserError(f"{p} has no 'image' dataset (found: {', '.join(f.keys())})")
            image = np.asarray(f["image"][()], dtype=np.float32)
            if image.ndim == 2:
                image = image[:, :, None]
            if image.ndim != 3:
                raise UserError(f"{p}: 'image' must be 3D, got shape {image.shape}")
            label = None
            if with_label and "label" in f:
                lab = np.asarray(f["label"][()])
                if lab.ndim == 2:
                    lab = lab[:, :, None]
                if lab.shape != image.shape:
                    raise UserError(f"{p}: label shape {lab.shape} != image shape {image.shape}")
                label = (lab > 0).astype(np.uint8)
            spacing = None
            sp = f.attrs.get("spacing")
            if sp is not None and len(sp) == 3:
                spacing = tuple(float(s) for s in sp)
        return Case(case_id=case_id, image=image, label=label, spacing=spacing)

    def _case_has_label(self, case_id: str) -> bool:
        p = self.path(case_id)
        with reading(p), h5py.File(p, "r") as f:
            return "label" in f

    def shape(self, case_id: str) -> tuple[int, int, int]:
        p = self.path(case_id)
        with reading(p), h5py.File(p, "r") as f:
            if "image" not in f:
                raise UserError(f"{p} has no 'image' dataset")
            s = tuple(int(x) for x in f["image"].shape)
        return (s[0], s[1], 1) if len(s) == 2 else s  # type: ignore[return-value]

    def mask_file(self, case_id: str, out_dir: Path) -> Path:
        return Path(out_dir) / case_id / MASK_NAME

    def source_files(self, case_id: str) -> list[Path]:
        return [self.path(case_id)]

    def read_mask(self, case_id: str, masks_dir: Path) -> np.ndarray:
        path = self.mask_file(case_id, masks_dir)
        if not path.is_file():
            raise UserError(f"no mask for case {case_id}: {path} not found")
        with reading(path), h5py.File(path, "r") as f:
            return as_mask(np.asarray(f["mask"]), self.shape(case_id), case_id)  # its own values

    def write_mask(self, case_id: str, mask: np.ndarray, out_dir: Path) -> Path:
        """Write `<out_dir>/<case>/mask.h5` with dataset `mask` (uint8, gzip)."""
        self._known(case_id)
        m = as_mask(mask, self.shape(case_id), case_id)

        def _w(tmp: Path) -> None:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("mask", data=m, compression="gzip")

        return atomic_write(self.mask_file(case_id, out_dir), _w)
