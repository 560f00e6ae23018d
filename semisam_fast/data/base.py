"""Format-independent pieces: the `Case` record, the `Dataset` interface, reading errors as one-line UserErrors."""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semisam_fast.errors import UserError

from .splits import read_list

log = logging.getLogger(__name__)


@dataclass
class Case:
    """One volume. `image` is float32 (H, W, Z), slices along the last axis (`image[:, :, z]`);
    2D images are (H, W, 1). `label` is uint8 0/1 of the same shape, or None when not loaded/absent.
    `spacing` is the voxel size in mm per axis when the format stores it, else None."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None = None
    spacing: tuple[float, float, float] | None = None


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn any library error raised while reading `path` into a one-line UserError naming it."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # h5py/nibabel/PIL/gzip/zlib raise a zoo of types
        raise UserError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc


def as_mask(mask: np.ndarray, shape: tuple[int, ...], case_id: str) -> np.ndarray:
    """Check `mask` matches the case's image shape and return it as uint8."""
    mask = np.asarray(mask)
    if tuple(mask.shape) != tuple(shape):
        raise UserError(f"mask for {case_id} has shape {mask.shape}, image has {tuple(shape)}")
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8)
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise UserError(f"mask for {case_id} has values outside 0..255")
    return mask.astype(np.uint8, copy=False)


def _not_empty(shape: tuple[int, ...], case_id: str) -> tuple[int, ...]:
    if 0 in tuple(shape):  # nothing downstream has a meaning for a volume without voxels
        raise UserError(f"case {case_id}: the image has shape {tuple(shape)}, no voxels; fix the file or leave it out")
    return shape


class Dataset(ABC):
    """A folder of cases in one on-disk format.

    `case_ids` is the ordered case list (from a list file, or discovered). Subclasses implement
    `_discover`, `_check_case`, `_load`, `shape`, `_case_has_label`, `write_mask`, `read_mask`, `mask_file`
    and `source_files`."""

    format: str = ""

    def __init__(self, root: str | Path, list_file: str | Path | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"data folder not found: {self.root}")
        self.list_file: Path | None = Path(list_file) if list_file is not None else self._default_list()
        if self.list_file is not None:
            ids = read_list(self.list_file)
        else:
            ids = self._discover()
        if not ids:
            where = self.list_file if self.list_file is not None else self.root
            raise UserError(f"no cases found in {where}")
        seen: set[str] = set()
        for cid in ids:
            if cid in seen:
                raise UserError(f"case {cid!r} is listed twice in {self.list_file}")
            seen.add(cid)
            self._check_case(cid)
        self.case_ids: list[str] = ids
        self._has_labels: bool | None = None

    # -- to implement -------------------------------------------------------------------------
    def _default_list(self) -> Path | None:
        """List file used when none is given (None: discover cases from the folder)."""
        return None

    @abstractmethod
    def _discover(self) -> list[str]:
        """Sorted case ids found in the folder."""

    @abstractmethod
    def _check_case(self, case_id: str) -> None:
        """Raise UserError if the case's image file is missing."""

    @abstractmethod
    def _load(self, case_id: str, with_label: bool) -> Case: ...

    @abstractmethod
    def _case_has_label(self, case_id: str) -> bool: ...

    @abstractmethod
    def shape(self, case_id: str) -> tuple[int, int, int]:
        """Image shape (H, W, Z), read from the file header only."""

    @abstractmethod
    def write_mask(self, case_id: str, mask: np.ndarray, out_dir: Path) -> Path:
        """Atomically write `mask` (same shape as the image) in this format under `out_dir`."""

    @abstractmethod
    def mask_file(self, case_id: str, out_dir: Path) -> Path:
        """Where `write_mask` puts (and `read_mask` finds) the case's mask under `out_dir`."""

    @abstractmethod
    def source_files(self, case_id: str) -> list[Path]:
        """The files a case is read from (image, label): what no output may overwrite."""

    # -- public -------------------------------------------------------------------------------
    @abstractmethod
    def read_mask(self, case_id: str, masks_dir: Path) -> np.ndarray:
        """Read back a mask volume written by `write_mask` (or laid out the same way by the user), as uint8 with
        its own values (label values, and the ignore value where pseudo-label marked one)."""

    def load(self, case_id: str, with_label: bool = True) -> Case:
        """Read one case. with_label=False never opens/reads the label (no ground-truth leak)."""
        self._known(case_id)
        case = self._load(case_id, with_label)
        _not_empty(case.image.shape, case_id)
        bad = int(np.size(case.image) - np.count_nonzero(np.isfinite(case.image)))
        if bad:  # a NaN voxel would turn a whole z-scored volume, and then the loss, into NaN
            raise UserError(f"case {case_id}: {bad} image voxels are NaN or infinite; fix the file or leave it out")
        return case

    def load_labelled(self, case_id: str) -> Case:
        """Read a case that must carry a label (training's labelled cases, evaluation)."""
        case = self.load(case_id, with_label=True)
        if case.label is None:
            raise UserError(f"case {case_id} has no label, but is used as a labelled case")
        if self.declares_ignore and (case.label == self.ignore_value).any():
            raise UserError(f"case {case_id}: {int((case.label == self.ignore_value).sum())} voxels carry the ignore "
                            f"label ({self.ignore_value}); training and evaluation take fully labelled cases only: "
                            "leave the case out of the list or label those voxels")
        if not case.label.any():
            log.warning("case %s has an empty label (no foreground voxel)", case_id)
        return case

    def num_slices(self, case_id: str) -> int:
        """Number of 2D slices (Z) of the case, from the header."""
        self._known(case_id)
        return int(_not_empty(self.shape(case_id), case_id)[2])

    def has_label(self, case_id: str) -> bool:
        """True when the case has a label file (from file presence / headers)."""
        self._known(case_id)
        return self._case_has_label(case_id)

    @property
    def label_values(self) -> tuple[int, ...]:
        """The foreground label values, in order (a binary data set: (1,))."""
        return (1,)

    @property
    def declares_ignore(self) -> bool:
        """Whether the data set's labels may hold the ignore value (nnU-Net's dataset.json lists "ignore")."""
        return False

    @property
    def ignore_value(self) -> int:
        """The value written where a mask has no target (nnU-Net's ignore label: one above the highest label)."""
        return max(self.label_values) + 1

    @property
    def has_labels(self) -> bool:
        """True when every case has a label (checked from file presence/headers, cached)."""
        if self._has_labels is None:
            self._has_labels = all(self._case_has_label(c) for c in self.case_ids)
        return self._has_labels

    def __len__(self) -> int:
        return len(self.case_ids)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self.case_ids)} cases)"

    def _known(self, case_id: str) -> None:
        if case_id not in self.case_ids:
            raise UserError(f"unknown case {case_id!r} in {self.root}")
