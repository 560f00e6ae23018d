"""Pseudo-labels as an nnU-Net v2 raw data set: `<DatasetNNN_NAME>/imagesTr/<case>_0000.nii.gz` (links to the input's
own NIfTI images; LA h5 / PNG images written as NIfTI), `labelsTr/<case>.nii.gz` (the masks pseudo-label wrote) and
`dataset.json` (the input's labels and channels, the `ignore` label where a mask marks voxels without a target), so
that `nnUNetv2_plan_and_preprocess` and `nnUNetv2_train` run on it as it is."""
from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from .data import Dataset, NiftiDataset
from .errors import UserError
from .fsutil import atomic_write, write_json

NAME = re.compile(r"Dataset\d{3}_[A-Za-z0-9_-]+")


def nnunet_folder(target: str | Path, out: str | Path) -> Path:
    """Where `--as-nnunet TARGET` writes: TARGET itself when it is a path, else `<out>/TARGET`; its name must be
    nnU-Net's `DatasetNNN_NAME`."""
    target = Path(target)
    if not NAME.fullmatch(target.name):
        raise UserError(f"--as-nnunet {target}: nnU-Net names a data set DatasetNNN_NAME (three digits, e.g. "
                        "Dataset501_LAPseudo)")
    return target if target.is_absolute() or len(target.parts) > 1 else Path(out) / target


def export_nnunet(dataset: Dataset, case_ids: list[str], masks_dir: str | Path, folder: str | Path,
                  description: str = "") -> Path:
    """Write the nnU-Net v2 raw folder of `case_ids` from the masks under `masks_dir` (as `Dataset.write_mask` laid
    them out); returns the folder. Existing files of the same names are replaced."""
    folder = Path(folder)
    images, labels = folder / "imagesTr", folder / "labelsTr"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    found: set[int] = set()
    for case_id in case_ids:
        mask = dataset.read_mask(case_id, Path(masks_dir))
        found |= set(np.unique(mask).tolist())
        if isinstance(dataset, NiftiDataset):  # the image as it is (linked), the mask as written, on its affine
            _link(dataset.image_path(case_id).resolve(), images / f"{case_id}_0000.nii.gz")
            written = Path(masks_dir) / f"{case_id}.nii.gz"
            atomic_write(labels / f"{case_id}.nii.gz", lambda tmp, src=written: tmp.write_bytes(src.read_bytes()))
        else:  # h5 / PNG: the canonical arrays, on a diagonal affine of the case's spacing (else 1 mm)
            case = dataset.load(case_id, with_label=False)
            affine = np.diag([*(case.spacing or (1.0, 1.0, 1.0)), 1.0])
            for path, array in ((images / f"{case_id}_0000.nii.gz", case.image), (labels / f"{case_id}.nii.gz", mask)):
                volume = nib.Nifti1Image(array, affine)
                atomic_write(path, lambda tmp, volume=volume: nib.save(volume, tmp))
    meta = getattr(dataset, "dataset_json", None) or {}
    label_map = {k: v for k, v in (meta.get("labels") or {"background": 0, "foreground": 1}).items() if k != "ignore"}
    if dataset.ignore_value in found:
        label_map["ignore"] = dataset.ignore_value  # nnU-Net: the highest value; those voxels train nothing
    write_json(folder / "dataset.json", {
        "channel_names": meta.get("channel_names") or {"0": "image"}, "labels": label_map,
        "numTraining": len(case_ids), "file_ending": ".nii.gz",
        "name": folder.name, "description": description or "pseudo-labels written by semisam-fast"})
    return folder


def _link(source: Path, link: Path) -> None:
    """A symbolic link `link` -> `source`, replacing an old one atomically (a temp link renamed onto it)."""
    tmp = link.with_name(f".{link.name}.tmp-link")
    tmp.unlink(missing_ok=True)
    os.symlink(source, tmp)
    os.replace(tmp, link)
