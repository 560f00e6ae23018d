"""nnU-Net style NIfTI layout: `imagesTr/<case>_0000.nii.gz` (+ optional `labelsTr/<case>.nii.gz`), and nnU-Net
v2's `dataset.json` where present (`labels`: the label values kept, as they are, when it lists more than one
foreground label; `file_ending`; `channel_names`: channel 0 is read).

Volumes are read in the closest canonical (RAS+) orientation, as nibabel's `as_closest_canonical` gives, so that
slices are axial whatever order the scanner wrote the axes in; masks are written back in the file's own orientation
with its affine, so they overlay the image in any viewer."""

from __future__ import annotations

import json
import logging
from functools import cached_property
from pathlib import Path

import nibabel as nib
import numpy as np

from semisam_fast.errors import UserError
from semisam_fast.fsutil import atomic_write

from .base import Case, Dataset, as_mask, reading

EXTS = (".nii.gz", ".nii")
CHANNEL = "_0000"
log = logging.getLogger(__name__)


def read_dataset_json(root: Path) -> dict | None:
    """nnU-Net v2's `<root>/dataset.json`, checked: `labels` maps names to integer values (background 0; "ignore"
    optional, the highest); None when the folder has none."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise UserError(f"{path} has no 'labels' mapping (nnU-Net v2: {{\"background\": 0, \"name\": 1, ...}})")
    if any(not isinstance(v, int) or isinstance(v, bool) for v in labels.values()):
        raise UserError(f"{path}: every label must be one integer value (region-based labels are not supported), "
                        f"got {labels}")
    if labels.get("background", 0) != 0 or 0 not in labels.values():
        raise UserError(f"{path}: 'labels' must map 'background' to 0, got {labels}")
    channels = meta.get("channel_names") or {"0": "image"}
    if len(channels) > 1:
        log.warning("%s lists %d channels (%s); semisam-fast reads channel 0 (%s) only", path, len(channels),
                    ", ".join(map(str, channels.values())), channels.get("0", "?"))
    return meta


def _orientation(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """How the file's array axes map onto RAS+ (nibabel's orientation array: output axis and flip per axis); the
    identity for an affine that names no direction (all-zero columns), which has no closest canonical."""
    ornt = nib.orientations.io_orientation(img.affine)
    if np.isnan(ornt).any():
        return nib.orientations.axcodes2ornt("RAS")
    return ornt


def _to_canonical(arr: np.ndarray, img: nib.spatialimages.SpatialImage) -> np.ndarray:
    return np.ascontiguousarray(nib.orientations.apply_orientation(arr, _orientation(img)))


def _from_canonical(arr: np.ndarray, img: nib.spatialimages.SpatialImage) -> np.ndarray:
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), _orientation(img))
    return np.ascontiguousarray(nib.orientations.apply_orientation(arr, back))


def _shape3d(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """(H, W) -> (H, W, 1); (H, W, Z, 1) -> (H, W, Z); anything else non-3D is an error."""
    s = tuple(int(x) for x in shape)
    if len(s) == 2:
        s = (s[0], s[1], 1)
    while len(s) > 3 and s[-1] == 1:
        s = s[:-1]
    if len(s) != 3:
        raise UserError(f"{path}: expected a 3D volume, got shape {tuple(shape)}")
    return s  # type: ignore[return-value]


def _to3d(arr: np.ndarray, path: Path) -> np.ndarray:
    return arr.reshape(_shape3d(arr.shape, path))


class NiftiDataset(Dataset):
    """NIfTI volumes; image as float32, label binarised (>0) to uint8, spacing from header zooms.
    Case list: `list_file`, else every `imagesTr/*_0000.nii[.gz]` sorted. Labels are optional."""

    format = "nifti"

    @cached_property
    def dataset_json(self) -> dict | None:
        return read_dataset_json(self.root)

    @property
    def exts(self) -> tuple[str, ...]:
        ending = (self.dataset_json or {}).get("file_ending")
        return (ending,) if ending in EXTS else EXTS

    @property
    def label_values(self) -> tuple[int, ...]:
        """The foreground values dataset.json lists (without "ignore"); (1,) without one (labels read as > 0)."""
        if self.dataset_json is None:
            return (1,)
        labels = self.dataset_json["labels"]
        return tuple(sorted(v for k, v in labels.items() if v != 0 and k != "ignore")) or (1,)

    @property
    def declares_ignore(self) -> bool:
        return "ignore" in (self.dataset_json or {}).get("labels", {})

    @property
    def ignore_value(self) -> int:
        labels = (self.dataset_json or {}).get("labels", {})
        return int(labels["ignore"]) if "ignore" in labels else max(self.label_values) + 1

    def _label_values_of(self, lab: np.ndarray, path: Path) -> np.ndarray:
        """A label volume as this data set's labels: with a dataset.json, its own values (values it does not list are
        an error; the ignore value only where it lists "ignore"); without one, foreground = any non-zero, as a binary
        data set always was (several values say so in a warning, once)."""
        if self.dataset_json is not None:
            allowed = {0, *self.label_values} | ({self.ignore_value} if self.declares_ignore else set())
            found = set(np.unique(lab).tolist()) - allowed
            if found:
                raise UserError(f"{path} holds label values {sorted(found)} that dataset.json does not list "
                                f"({self.dataset_json['labels']})")
            return lab.astype(np.uint8)
        if not getattr(self, "_warned_merged", False) and lab.size and int(lab.max()) > 1 and len(np.unique(lab)) > 2:
            log.warning("%s holds several label values %s; without a dataset.json listing them they are read as one "
                        "foreground (add nnU-Net's dataset.json to keep them apart)", path, np.unique(lab).tolist())
            self._warned_merged = True
        return (lab > 0).astype(np.uint8)

    @property
    def images_dir(self) -> Path:
        return self.root / "imagesTr"

    @property
    def labels_dir(self) -> Path:
        return self.root / "labelsTr"

    def _discover(self) -> list[str]:
        ids = set()
        for p in self.images_dir.iterdir():
            for ext in self.exts:
                if p.name.endswith(CHANNEL + ext):
                    ids.add(p.name[: -len(CHANNEL + ext)])
        return sorted(ids)

    def _find(self, folder: Path, name: str) -> Path | None:
        for ext in self.exts:
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
            image = _to_canonical(_to3d(np.asarray(img.dataobj, dtype=np.float32), ip), img)
            zooms = np.array((tuple(float(z) for z in img.header.get_zooms()[:3]) + (1.0, 1.0, 1.0))[:3])
        spacing = tuple(float(z) for z in zooms[np.argsort(_orientation(img)[:, 0])])  # zooms of canonical axes
        label = None
        lp = self.label_path(case_id) if with_label else None
        if lp is not None:
            with reading(lp):
                lab_img = nib.load(lp)
                lab = _to3d(np.asarray(lab_img.dataobj), lp)
            if lab.shape != _shape3d(img.shape, ip):
                raise UserError(f"{lp}: label shape {lab.shape} != image shape {img.shape}")
            label = self._label_values_of(_to_canonical(lab, img), lp)  # the image's orientation: voxels stay paired
        return Case(case_id=case_id, image=image, label=label, spacing=spacing)  # type: ignore[arg-type]

    def _case_has_label(self, case_id: str) -> bool:
        return self.label_path(case_id) is not None

    def shape(self, case_id: str) -> tuple[int, int, int]:
        """(H, W, Z) of the canonical volume, from the header only."""
        ip = self.image_path(case_id)
        with reading(ip):
            img = nib.load(ip)  # header only
        s = _shape3d(img.shape, ip)
        canonical = [0, 0, 0]
        for axis, (target, _) in enumerate(_orientation(img)):
            canonical[int(target)] = s[axis]
        return tuple(canonical)  # type: ignore[return-value]

    def mask_file(self, case_id: str, out_dir: Path) -> Path:
        return Path(out_dir) / f"{case_id}.nii.gz"

    def source_files(self, case_id: str) -> list[Path]:
        return [p for p in (self.image_path(case_id), self.label_path(case_id)) if p is not None]

    def read_mask(self, case_id: str, masks_dir: Path) -> np.ndarray:
        for name in (f"{case_id}.nii.gz", f"{case_id}.nii"):
            path = Path(masks_dir) / name
            if path.is_file():  # laid out as the image file (what write_mask writes): brought to canonical with it
                with reading(self.image_path(case_id)):
                    ref = nib.load(self.image_path(case_id))
                with reading(path):
                    data = _to3d(np.asarray(nib.load(path).dataobj), path)
                file_shape = _shape3d(ref.shape, path)
                if data.shape != file_shape:
                    raise UserError(f"{path}: mask shape {data.shape} != image shape {file_shape}")
                return as_mask(_to_canonical(data, ref), self.shape(case_id), case_id)  # its own values
        raise UserError(f"no mask for case {case_id} in {masks_dir} ({case_id}.nii.gz)")

    def write_mask(self, case_id: str, mask: np.ndarray, out_dir: Path) -> Path:
        """Write `<out_dir>/<case>.nii.gz` (uint8) with the image's affine and header."""
        self._known(case_id)
        ip = self.image_path(case_id)
        with reading(ip):
            ref = nib.load(ip)
        m = _from_canonical(as_mask(mask, self.shape(case_id), case_id), ref)  # back to the file's own axes
        m = m.reshape(ref.shape) if m.size == int(np.prod(ref.shape)) else m
        header = ref.header.copy()
        header.set_data_dtype(np.uint8)
        if isinstance(ref, nib.Nifti1Image):  # also Nifti2Image
            out = type(ref)(m, ref.affine, header)
            out.header.set_slope_inter(1, 0)
        else:
            out = nib.Nifti1Image(m, ref.affine)
        return atomic_write(self.mask_file(case_id, out_dir), lambda tmp: nib.save(out, tmp))
