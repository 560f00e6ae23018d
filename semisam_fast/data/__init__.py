"""Data sets: LA h5, NIfTI (nnU-Net layout) and PNG readers behind one `Dataset` interface,
a synthetic phantom generator, and the labelled / unlabelled / validation split."""

from __future__ import annotations

from pathlib import Path

from semisam_fast.errors import UserError

from .base import Case, Dataset
from .la_h5 import LAH5Dataset, case_h5
from .nifti import NiftiDataset
from .phantom import make_multiclass_phantom, make_phantom
from .png import PngDataset
from .splits import Split, every_kth, process_unlabelled, read_list, run_unlabelled, split_cases

__all__ = [
    "Case", "Dataset", "LAH5Dataset", "NiftiDataset", "PngDataset", "Split",
    "detect_format", "every_kth", "make_multiclass_phantom", "make_phantom", "open_dataset", "process_unlabelled",
    "read_list", "run_unlabelled",
    "split_cases",
]

_LAYOUTS = (
    "LA h5 (<dir>/<case>/mri_norm2.h5), "
    "NIfTI (<dir>/imagesTr/<case>_0000.nii.gz [+ labelsTr/]), "
    "PNG (<dir>/images/<case>.png [+ masks/])"
)


def detect_format(path: str | Path) -> str:
    """'nifti', 'png' or 'la_h5' from the folder layout; UserError if none fits."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"data folder not found: {root}")
    if not root.is_dir():
        raise UserError(f"data path is not a folder: {root}")
    if (root / "imagesTr").is_dir():
        return "nifti"
    if (root / "images").is_dir():
        return "png"
    if any(d.is_dir() and case_h5(d) is not None for d in root.iterdir()):
        return "la_h5"
    raise UserError(f"unrecognised data layout in {root}; expected one of: {_LAYOUTS}")


def open_dataset(path: str | Path, list_file: str | Path | None = None) -> Dataset:
    """Open the data set at `path`, auto-detecting its format. All input problems raise UserError."""
    cls = {"nifti": NiftiDataset, "png": PngDataset, "la_h5": LAH5Dataset}[detect_format(path)]
    return cls(path, list_file)
