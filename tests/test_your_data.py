"""Issue 25, "your own data, right": what a new user's own folder gets wrong without a word, each case through the
real entry point (`cli.main` in-process) on real computations (the tiny SAM's encoder and decoder, nibabel files)."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from semisam_fast.data import open_dataset
from semisam_fast.metrics import binary_metrics

from .conftest import invoke
from .test_failure_modes import user_error

ZOOMS = (0.625, 0.625, 2.5)


def _volume(shape: tuple[int, int, int], seed: int, values: tuple[int, ...] = (1,)) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with one bright block per label value (value v: a block shifted by v), and its label."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    h, w, z = shape
    for i, value in enumerate(values):
        top, left = h // 5 + i * (h // 3), w // 4
        label[top:top + h // 4, left:left + w // 3, 1:z - 1] = value
    image = label.astype(np.float32) * 40.0 + 100.0 + rng.normal(0, 3.0, shape).astype(np.float32)
    return image, label


def nifti_folder(root: Path, shapes: dict[str, tuple[int, int, int]], seed: int = 0,
                 values: tuple[int, ...] = (1,)) -> Path:
    """An nnU-Net style folder (imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, int16, 0.625 x 0.625 x 2.5 mm)."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    affine = np.diag([*ZOOMS, 1.0])
    for i, (case, shape) in enumerate(shapes.items()):
        image, label = _volume(shape, seed + i, values)
        nib.save(nib.Nifti1Image(image.astype(np.int16), affine), root / "imagesTr" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"{case}.nii.gz")
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return nifti_folder(tmp_path_factory.mktemp("small") / "data", {"LA_001": (48, 40, 8), "LA_002": (44, 48, 8)})


# ---- 2: the cache serves another scan under the same case name -------------------------------------------------
def test_cache_refuses_another_scan_under_the_same_case_name(small, tmp_path):
    cache = tmp_path / "cache"
    assert invoke("embed", "--data", str(small), "--model", "tiny", "--every", "2", "--cache",
                  str(cache)).returncode == 0
    ok = invoke("pseudo-label", "--cache", str(cache), "--data", str(small), "--out", str(tmp_path / "ok"))
    assert ok.returncode == 0, ok.stderr[-2000:]
    # LA_001 is another scan now: another shape
    other = nifti_folder(tmp_path / "other", {"LA_001": (46, 37, 8), "LA_002": (44, 48, 8)})
    line = user_error(invoke("pseudo-label", "--cache", str(cache), "--data", str(other), "--out",
                             str(tmp_path / "p1")), "LA_001", "shape")
    assert "(48, 40, 8)" in line and "(46, 37, 8)" in line
    # ... or the same shape with other voxels
    edited = nifti_folder(tmp_path / "edited", {"LA_001": (48, 40, 8), "LA_002": (44, 48, 8)}, seed=7)
    user_error(invoke("pseudo-label", "--cache", str(cache), "--data", str(edited), "--out", str(tmp_path / "p2")),
               "LA_001", "voxels differ")
    # completing the build (every slice now) on the other scan does not add its rows to the old scan's
    user_error(invoke("embed", "--data", str(other), "--model", "tiny", "--every", "1", "--cache", str(cache),
                      "--batch", "8"), "LA_001")
    assert not (tmp_path / "p1").exists() and not (tmp_path / "p2").exists()


# ---- 4: files only their owner can read ------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_are_written_with_the_process_umask(small, tmp_path, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / "out"
        result = invoke("pseudo-label", "--data", str(small), "--model", "tiny", "--no-distances", "--out", str(out))
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr[-2000:]
    written = [out / "LA_001.nii.gz", out / "LA_002.nii.gz", out / "report.json", out / "report.csv"]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
