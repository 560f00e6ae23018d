"""nnU-Net style NIfTI layout: `imagesTr/<case>_0000.nii.gz` (+ optional `labelsTr/<case>.nii.gz`)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from semisam_fast.errors import UserError
from semisam_fast.fsutil import atomic_write

from .base import Case, Dataset, as_mask, reading

EXTS = (".nii.gz", ".nii")
CHANNEL = "_0000"


def _to3d(arr: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) -> (H, W, 1); (H, W, Z, 1) -> (H, W, Z); anything else non-3D is an error."""
    if arr.ndim == 2:
        return arr[:, :, None]
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise UserError(f"{path}: expected a 3D volume, got shape {arr.shape}")
    return arr


class NiftiDataset(Dataset):
    """NIfTI volumes; image as float32, label binarised (>0) to uint8, spacing from header zooms.
    Case list: `list_file`, else every `imagesTr/*_0000.nii[.gz]` sorted. Labels are optional."""

    format = "nifti"

    @property
    def images_dir(self) -> Path:
        return self.root / "imagesTr"

    @property
    def labels_dir(self) -> Path:
        return self.root / "labelsTr"

    def _discover(self) -> list[str]:
        ids = set()
        for p in self.images_dir.iterdir():
            for ext in EXTS:
                if p.name.endswith(CHANNEL + ext):
                    ids.add(p.name[: -len(CHANNEL + ext)])
        return sorted(ids)

    def _find(self, folder: Path, name: str) -> Path | None:
        for ext in EXTS:
            p = folder / (name + ext)
            if p.is_file():
                return p
        return None

    def image_path(self, case_id: str) -> Path:
        p = self._find(self.images_dir, case_id + CHANNEL)
        if p is None:
            raise UserError(f"case {case_id!r}: {self.images_dir / (case_id + CHANNEL + '.nii.gz')} not found")
        return p

    def label_path(self, case_id: str) -> Path | None:
        return self._find(self.labels_dir, case_id) if self.labels_dir.is_dir() else None

    def _check_case(self, case_id: str) -> None:
        self.image_path(case_id)

    def _load(self, case_id: str, with_label: bool) -> Case:
        ip = self.image_path(case_id)
        with reading(ip):
            img = nib.load(ip)
            image = _to3d(np.asarray(img.dataobj, dtype=np.float32), ip)
            zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        spacing = (zooms + (1.0, 1.0, 1.0))[:3] if zooms else None
        label = None
        lp = self.label_path(case_id) if with_label else None
        if lp is not None:
            with reading(lp):
                lab = _to3d(np.asarray(nib.load(lp).dataobj), lp)
            if lab.shape != image.shape:
                raise UserError(f"{lp}: label shape {lab.shape} != image shape {image.shape}")
            label = (lab > 0).astype(np.uint8)
        return Case(case_id=case_id, image=image, label=label, spacing=spacing)  # type: ignore[arg-type]

    def _case_has_label(self, case_id: str) -> bool:
        return self.label_path(case_id) is not None

    def shape(self, case_id: str) -> tuple[int, int, int]:
        ip = self.image_path(case_id)
        with reading(ip):
            s = tuple(int(x) for x in nib.load(ip).shape)  # header only
        if len(s) == 2:
            return (s[0], s[1], 1)
        while len(s) > 3 and s[-1] == 1:
            s = s[:-1]
        if len(s) != 3:
            raise UserError(f"{ip}: expected a 3D volume, got shape {s}")
        return s  # type: ignore[return-value]

    def read_mask(self, case_id: str, masks_dir: Path) -> np.ndarray:
        for name in (f"{case_id}.nii.gz", f"{case_id}.nii"):
            path = Path(masks_dir) / name
            if path.is_file():
                with reading(path):
                    data = np.asarray(nib.load(path).dataobj)
                data = data.reshape(self.shape(case_id)) if data.size == int(np.prod(self.shape(case_id))) else data
                return as_mask((data > 0).astype(np.uint8), self.shape(case_id), case_id)
        raise UserError(f"no mask for case {case_id} in {masks_dir} ({case_id}.nii.gz)")

    def write_mask(self, case_id: str, mask: np.ndarray, out_dir: Path) -> Path:
        """Write `<out_dir>/<case>.nii.gz` (uint8) with the image's affine and header."""
        self._known(case_id)
        ip = self.image_path(case_id)
        with reading(ip):
            ref = nib.load(ip)
        m = as_mask(mask, self.shape(case_id), case_id)
        m = m.reshape(ref.shape) if m.size == int(np.prod(ref.shape)) else m
        header = ref.header.copy()
        header.set_data_dtype(np.uint8)
        if isinstance(ref, nib.Nifti1Image):  # also Nifti2Image
            out = type(ref)(m, ref.affine, header)
            out.header.set_slope_inter(1, 0)
        else:
            out = nib.Nifti1Image(m, ref.affine)
        return atomic_write(Path(out_dir) / f"{case_id}.nii.gz", lambda tmp: nib.save(out, tmp))
