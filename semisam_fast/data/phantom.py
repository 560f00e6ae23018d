"""Synthetic stand-in for the LA data set (which may not be redistributed).

`make_phantom` writes SYNTHETIC volumes in the LA h5 layout, for demos, tests and CI: one smooth,
irregular bright blob per case (the "left atrium", = the label) on a textured, noisy, bias-field
corrupted background with dimmer distractor structures (blobs and a vessel-like tube). The blob is
high-contrast, so a box-prompted SAM segments it well. It is not real anatomy; numbers measured
on it say nothing about performance on real MRI.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

from semisam_fast.fsutil import atomic_write

from .la_h5 import H5_NAME


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], coarse: tuple[int, int, int]) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse Gaussian grid, upsampled separably with smooth
    (Gaussian-kernel) interpolation weights. Fast: three small matrix products."""
    g = rng.standard_normal(coarse)
    mats = []
    for n, c in zip(shape, coarse):
        x = (np.arange(n) + 0.5) / n * c - 0.5  # pixel centres in coarse-grid units
        w = np.exp(-0.5 * ((x[:, None] - np.arange(c)[None, :]) / 0.6) ** 2)
        mats.append(w / w.sum(axis=1, keepdims=True))
    up = np.einsum("ia,jb,kc,abc->ijk", *mats, g, optimize=True)
    return (up / (np.abs(up).max() + 1e-8)).astype(np.float32)


def _ellipsoid(grid: tuple[np.ndarray, np.ndarray, np.ndarray], center, radii, angle: float) -> np.ndarray:
    """Normalised radius (1 on the surface) of an ellipsoid rotated in-plane by `angle`."""
    x, y, z = (g - c for g, c in zip(grid, center))
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = ca * x + sa * y, -sa * x + ca * y
    return np.sqrt((u / radii[0]) ** 2 + (v / radii[1]) ** 2 + (z / radii[2]) ** 2)


def _case(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    H, W, Z = shape
    grid = tuple(np.arange(n, dtype=np.float32).reshape([-1 if i == a else 1 for i in range(3)])
                 for a, n in enumerate(shape))
    coarse = (4, 4, max(2, min(3, Z)))

    # Target blob: ellipsoid, in-plane diameter ~22-40% of the image (x0.7..1.3 from the
    # deformation), ~55-85% of the slices (so never all of them), deformed by smooth noise.
    amp = 0.3
    rx, ry = rng.uniform(0.11, 0.20) * H, rng.uniform(0.11, 0.20) * W
    rz = max(rng.uniform(0.27, 0.34) * Z, 1.0)
    reach = (1 + amp) * rz
    cx = rng.uniform(0.25 * H + rx * 0.5, 0.75 * H - rx * 0.5)
    cy = rng.uniform(0.25 * W + ry * 0.5, 0.75 * W - ry * 0.5)
    cz = rng.uniform(min(reach, (Z - 1) / 2), max(Z - 1 - reach, (Z - 1) / 2))
    d = _ellipsoid(grid, (cx, cy, cz), (rx, ry, rz), rng.uniform(0, np.pi))
    d = d + amp * _smooth_noise(rng, shape, (8, 8, max(2, min(4, Z))))
    label = ndimage.gaussian_filter((d < 1).astype(np.float32), (1.0, 1.0, 0.5)) > 0.5
    if not label.any():  # degenerate tiny shapes: fall back to the centre voxel
        label[int(cx), int(cy), int(cz)] = True
    keep_out = ndimage.binary_dilation(label, iterations=3)

    # Body: a large dim ellipse (air outside), textured.
    body = _ellipsoid(grid, (H / 2, W / 2, Z / 2), (0.47 * H, 0.45 * W, 1e6), 0.0) < 1
    img = 0.30 * body.astype(np.float32)
    img += 0.10 * body * _smooth_noise(rng, shape, (8, 8, coarse[2]))
    img += 0.08 * ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.2) * 3.0 * body

    # Distractors: 3-5 dimmer blobs and one vessel-like tube, not touching the target.
    for _ in range(int(rng.integers(3, 6))):
        for _try in range(20):
            r = rng.uniform(0.04, 0.09) * H
            c = (rng.uniform(0.1 * H, 0.9 * H), rng.uniform(0.1 * W, 0.9 * W), rng.uniform(0, Z - 1))
            m = _ellipsoid(grid, c, (r, r * rng.uniform(0.7, 1.3), rng.uniform(0.2, 0.6) * Z), rng.uniform(0, np.pi)) < 1
            if not (m & keep_out).any():
                img[m & body] = rng.uniform(0.45, 0.7)
                break
    for _try in range(20):
        r = rng.uniform(0.03, 0.05) * H
        c0 = np.array([rng.uniform(0.15 * H, 0.85 * H), rng.uniform(0.15 * W, 0.85 * W)])
        drift = rng.uniform(-0.3, 0.3, size=2) * r
        zz = np.arange(Z, dtype=np.float32)
        cx_z, cy_z = c0[0] + drift[0] * (zz - Z / 2), c0[1] + drift[1] * (zz - Z / 2)
        m = ((grid[0] - cx_z) ** 2 + (grid[1] - cy_z) ** 2) < r * r
        if not (m & keep_out).any():
            img[m & body] = 0.65
            break

    # Target: bright, slightly inhomogeneous.
    img[label] = 1.0 + 0.08 * _smooth_noise(rng, shape, coarse)[label]

    # Acquisition: bias field, partial-volume blur, noise; then z-score per volume.
    img *= 1.0 + 0.15 * _smooth_noise(rng, shape, (3, 3, 2))
    img = ndimage.gaussian_filter(img, (0.8, 0.8, 0.4))
    img += 0.06 * rng.standard_normal(shape).astype(np.float32)
    img = (img - img.mean()) / (img.std() + 1e-8)
    return img.astype(np.float32), label.astype(np.uint8)


def make_phantom(out_dir: Path, n_cases: int = 8, shape: tuple[int, int, int] = (128, 128, 24),
                 seed: int = 0) -> Path:
    """Write a SYNTHETIC data set in the LA h5 layout: `<out>/phantom_XX/mri_norm2.h5` (`image`
    float32 z-scored, `label` uint8, gzip) and `<out>/train.list`. Deterministic by `seed`.
    Returns `out_dir`."""
    out_dir = Path(out_dir)
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 1 or min(shape[:2]) < 16:
        raise ValueError(f"phantom shape must be (H>=16, W>=16, Z>=1), got {shape}")
    if n_cases < 1:
        raise ValueError("n_cases must be >= 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = [f"phantom_{i:02d}" for i in range(n_cases)]
    for i, cid in enumerate(ids):
        image, label = _case(np.random.default_rng([seed, i]), shape)  # type: ignore[arg-type]

        def _w(tmp: Path, image=image, label=label) -> None:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("image", data=image, compression="gzip")
                f.create_dataset("label", data=label, compression="gzip")
                f.attrs["synthetic"] = "semisam_fast phantom (not real MRI)"

        atomic_write(out_dir / cid / H5_NAME, _w)
    atomic_write(out_dir / "train.list", lambda tmp: tmp.write_text("\n".join(ids) + "\n"))
    return out_dir


MULTICLASS_LABELS = {"background": 0, "atrium": 1, "vessel": 2}


def _second_structure(rng: np.random.Generator, image: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Label 2 beside the blob of `_case`: a tube through most slices, away from label 1, at its own intensity."""
    H, W, Z = label.shape
    keep_out = ndimage.binary_dilation(label > 0, iterations=3)
    xx, yy = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    for _try in range(200):
        r = rng.uniform(0.07, 0.10) * min(H, W)
        cx, cy = rng.uniform(r + 2, H - r - 2), rng.uniform(r + 2, W - r - 2)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        tube = np.repeat(disc[:, :, None], Z, axis=2)
        tube[:, :, : max(1, Z // 6)] = False  # not every slice: like the blob, a structure with a z-range
        if tube.any() and not (tube & keep_out).any():
            break
    else:
        raise ValueError(f"no room for a second structure in a {label.shape} phantom")
    level = float(image[label > 0].mean()) if label.any() else float(image.max())
    image[tube] = 0.6 * level + 0.05 * rng.standard_normal(int(tube.sum())).astype(np.float32)
    out = label.copy()
    out[tube] = 2
    return out


def make_multiclass_phantom(out_dir: Path, n_cases: int = 6, shape: tuple[int, int, int] = (96, 96, 12),
                            seed: int = 0, spacing: tuple[float, float, float] = (0.625, 0.625, 2.5)) -> Path:
    """Write a SYNTHETIC two-structure data set as nnU-Net v2 lays one out: `imagesTr/<case>_0000.nii.gz`,
    `labelsTr/<case>.nii.gz` (0 background, 1 the blob of `make_phantom`, 2 a dimmer tube beside it) and
    `dataset.json`. Deterministic by `seed`. Returns `out_dir`."""
    import nibabel as nib

    from semisam_fast.fsutil import write_json

    out_dir = Path(out_dir)
    affine = np.diag([*spacing, 1.0])
    ids = [f"multi_{i:02d}" for i in range(n_cases)]
    for i, cid in enumerate(ids):
        rng = np.random.default_rng([seed, i, 2])
        image, label = _case(rng, tuple(int(s) for s in shape))  # type: ignore[arg-type]
        label = _second_structure(rng, image, label)
        for folder, name, array in (("imagesTr", f"{cid}_0000.nii.gz", image), ("labelsTr", f"{cid}.nii.gz", label)):
            volume = nib.Nifti1Image(array, affine)
            atomic_write(out_dir / folder / name, lambda tmp, volume=volume: nib.save(volume, tmp))
    write_json(out_dir / "dataset.json", {"channel_names": {"0": "MRI"}, "labels": MULTICLASS_LABELS,
                                          "numTraining": n_cases, "file_ending": ".nii.gz",
                                          "name": "semisam-fast multi-class phantom (synthetic)"})
    return out_dir
