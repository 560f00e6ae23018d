"""Tests for semisam_fast.data: readers/writers per format, detection, errors, phantom, splits."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from semisam_fast.data import (
    Case, LAH5Dataset, NiftiDataset, PngDataset, detect_format, make_phantom, open_dataset, read_list, split_cases,
)
from semisam_fast.errors import UserError
from semisam_fast.fsutil import atomic_write
from semisam_fast.samples import default_la_dir

# Real data: $SEMISAM_LA_DIR (conftest points it at ../shared/data/la2018 when that exists); read-only, never written.
LA_DIR = default_la_dir()


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


# -- LA h5 ---------------------------------------------------------------------------------------

def _write_h5(path: Path, image: np.ndarray, label: np.ndarray | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image, compression="gzip")
        if label is not None:
            f.create_dataset("label", data=label, compression="gzip")


def _la(tmp_path: Path, ids=("c1", "c0", "c2"), shape=(20, 16, 6), list_file=True) -> Path:
    root = tmp_path / "la"
    for i, cid in enumerate(ids):
        img = _rng(i).standard_normal(shape).astype(np.float32)
        lab = (img > 1).astype(np.uint8) * (1 + i % 2)  # values 0/1 or 0/2: binarised on load
        _write_h5(root / cid / "mri_norm2.h5", img, lab)
    if list_file:
        (root / "train.list").write_text("\n".join(ids) + "\n")
    return root


def test_la_roundtrip(tmp_path: Path) -> None:
    root = _la(tmp_path)
    ds = open_dataset(root)
    assert isinstance(ds, LAH5Dataset) and ds.format == "la_h5" and detect_format(root) == "la_h5"
    assert ds.case_ids == ["c1", "c0", "c2"]  # train.list order
    assert ds.has_labels and len(ds) == 3
    case = ds.load("c0")
    assert isinstance(case, Case) and case.case_id == "c0"
    assert case.image.dtype == np.float32 and case.image.shape == (20, 16, 6)
    assert case.label is not None and case.label.dtype == np.uint8 and case.label.shape == (20, 16, 6)
    assert set(np.unique(case.label)) <= {0, 1}
    with h5py.File(root / "c1" / "mri_norm2.h5") as f:
        np.testing.assert_array_equal(ds.load("c1").image, f["image"][()])
        np.testing.assert_array_equal(ds.load("c1").label, f["label"][()] > 0)
    assert ds.num_slices("c0") == 6 and ds.shape("c0") == (20, 16, 6)
    assert ds.load("c0", with_label=False).label is None

    out = tmp_path / "out"
    mask = (case.image > 0).astype(np.uint8)
    p = ds.write_mask("c0", mask, out)
    assert p == out / "c0" / "mask.h5"
    with h5py.File(p) as f:
        assert f["mask"].dtype == np.uint8 and f["mask"].compression == "gzip"
        np.testing.assert_array_equal(f["mask"][()], mask)
    ds.write_mask("c0", mask.astype(bool), out)  # overwrite in place, bool accepted
    assert not _leftovers(out)
    with pytest.raises(UserError, match="has shape"):
        ds.write_mask("c0", mask[:, :, :3], out)


def test_la_without_label_never_reads_label(tmp_path: Path) -> None:
    # The label lives in an external raw file which we then delete: reading it would fail.
    root = tmp_path / "la"
    (root / "c0").mkdir(parents=True)
    img = _rng().standard_normal((8, 8, 3)).astype(np.float32)
    raw = tmp_path / "label.raw"
    with h5py.File(root / "c0" / "mri_norm2.h5", "w") as f:
        f.create_dataset("image", data=img)
        f.create_dataset("label", shape=img.shape, dtype=np.uint8, external=[(str(raw), 0, img.size)])
        f["label"][...] = 1
    raw.unlink()
    ds = LAH5Dataset(root)
    case = ds.load("c0", with_label=False)
    assert case.label is None and case.image.shape == (8, 8, 3)
    with pytest.raises(UserError, match="mri_norm2.h5"):
        ds.load("c0", with_label=True)


def test_la_discovery_and_any_h5(tmp_path: Path) -> None:
    root = _la(tmp_path, ids=("b", "a"), list_file=False)
    (root / "a" / "mri_norm2.h5").rename(root / "a" / "volume.h5")  # any single *.h5 works
    (root / "notes").mkdir()  # folder without h5: not a case
    ds = LAH5Dataset(root)
    assert ds.case_ids == ["a", "b"]
    assert ds.load("a").image.shape == (20, 16, 6)
    # an explicit list file wins; comments and blanks ignored
    lst = tmp_path / "my.list"
    lst.write_text("# header\n\nb\n")
    assert open_dataset(root, lst).case_ids == ["b"]


def test_la_unlabelled(tmp_path: Path) -> None:
    root = tmp_path / "la"
    _write_h5(root / "x" / "mri_norm2.h5", np.zeros((4, 4, 2), np.float32), None)
    ds = open_dataset(root)
    assert not ds.has_labels and ds.load("x").label is None


# -- NIfTI ---------------------------------------------------------------------------------------

def _nifti(tmp_path: Path, with_labels: bool = True) -> Path:
    root = tmp_path / "nn"
    (root / "imagesTr").mkdir(parents=True)
    affine = np.diag([0.8, 0.7, 2.5, 1.0])
    affine[:3, 3] = [10, -5, 3]
    for i, (cid, ext) in enumerate([("b", ".nii.gz"), ("a", ".nii")]):
        img = (_rng(i).standard_normal((12, 10, 5)) * 100).astype(np.int16)
        nib.save(nib.Nifti1Image(img, affine), root / "imagesTr" / f"{cid}_0000{ext}")
        if with_labels:
            (root / "labelsTr").mkdir(exist_ok=True)
            lab = np.zeros((12, 10, 5), np.uint8)
            lab[3:8, 2:6, 1:4] = 2
            nib.save(nib.Nifti1Image(lab, affine), root / "labelsTr" / f"{cid}{ext}")
    return root


def test_nifti_roundtrip(tmp_path: Path) -> None:
    root = _nifti(tmp_path)
    ds = open_dataset(root)
    assert isinstance(ds, NiftiDataset) and ds.format == "nifti"
    assert ds.case_ids == ["a", "b"] and ds.has_labels
    case = ds.load("b")
    assert case.image.dtype == np.float32 and case.image.shape == (12, 10, 5)
    ref = np.asanyarray(nib.load(root / "imagesTr" / "b_0000.nii.gz").dataobj)
    np.testing.assert_array_equal(case.image, ref.astype(np.float32))
    assert case.label.dtype == np.uint8 and case.label.sum() == 5 * 4 * 3 and case.label.max() == 1
    assert case.spacing == pytest.approx((0.8, 0.7, 2.5))
    assert ds.num_slices("a") == 5
    assert ds.load("a", with_label=False).label is None

    out = tmp_path / "out"
    for cid in ds.case_ids:
        mask = (ds.load(cid).image > 0).astype(np.uint8)
        p = ds.write_mask(cid, mask, out)
        assert p == out / f"{cid}.nii.gz"
        back = nib.load(p)
        np.testing.assert_array_equal(np.asanyarray(back.dataobj), mask)
        assert back.get_data_dtype() == np.uint8
        np.testing.assert_allclose(back.affine, nib.load(ds.image_path(cid)).affine)
    assert not _leftovers(out)


def test_nifti_reoriented_to_canonical_and_written_back(tmp_path: Path) -> None:
    """A non-RAS volume (x flipped, y and z swapped) is read as nibabel's closest canonical, with the zooms of the
    canonical axes; its label stays paired voxel for voxel; a mask is written back in the file's own orientation."""
    root = tmp_path / "lpi"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    image = rng.normal(size=(10, 12, 7)).astype(np.float32)
    label = (image > 1).astype(np.uint8)
    affine = np.array([[-0.5, 0, 0, 10], [0, 0, 2.5, 0], [0, 0.8, 0, 0], [0, 0, 0, 1]], float)
    assert nib.aff2axcodes(affine) == ("L", "S", "A")
    nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / "c_0000.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / "c.nii.gz")

    ds = open_dataset(root)
    case = ds.load("c")
    canonical = nib.as_closest_canonical(nib.load(root / "imagesTr" / "c_0000.nii.gz"))
    np.testing.assert_array_equal(case.image, canonical.get_fdata(dtype=np.float32))
    assert case.image.shape == ds.shape("c") == (10, 7, 12)  # the header-only shape agrees
    assert case.spacing == pytest.approx(tuple(float(z) for z in canonical.header.get_zooms()))
    assert case.spacing == pytest.approx((0.5, 2.5, 0.8))
    np.testing.assert_array_equal(case.label > 0, case.image > 1)  # label reoriented with its image

    written = nib.load(ds.write_mask("c", case.label, tmp_path / "out"))
    np.testing.assert_array_equal(np.asarray(written.dataobj), label)  # the file's own axes again
    np.testing.assert_allclose(written.affine, affine)
    np.testing.assert_array_equal(ds.read_mask("c", tmp_path / "out"), case.label)


def test_nifti_labels_optional_and_not_read(tmp_path: Path) -> None:
    root = _nifti(tmp_path, with_labels=False)
    ds = open_dataset(root)
    assert not ds.has_labels and ds.load("a").label is None
    root2 = _nifti(tmp_path / "2")
    (root2 / "labelsTr" / "b.nii.gz").write_bytes(b"garbage")  # corrupt label
    ds2 = open_dataset(root2)
    assert ds2.load("b", with_label=False).label is None  # label file never opened
    with pytest.raises(UserError, match="b.nii.gz"):
        ds2.load("b")


# -- PNG -----------------------------------------------------------------------------------------

def _png(tmp_path: Path) -> Path:
    root = tmp_path / "png"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rgb = _rng().integers(0, 256, (14, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "images" / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(root / "images" / "gray.png")
    m = np.zeros((14, 9), np.uint8)
    m[2:6, 3:7] = 255
    Image.fromarray(m).save(root / "masks" / "rgb.png")
    return root


def test_png_roundtrip(tmp_path: Path) -> None:
    root = _png(tmp_path)
    ds = open_dataset(root)
    assert isinstance(ds, PngDataset) and ds.format == "png"
    assert ds.case_ids == ["gray", "rgb"]
    assert not ds.has_labels  # gray has no mask
    case = ds.load("rgb")
    assert case.image.dtype == np.float32 and case.image.shape == (14, 9, 1)
    gray = np.asarray(Image.open(root / "images" / "rgb.png").convert("L"), np.float32)
    np.testing.assert_array_equal(case.image[:, :, 0], gray)
    assert case.label.dtype == np.uint8 and case.label.shape == (14, 9, 1) and case.label.sum() == 16
    g = ds.load("gray")
    assert g.label is None and g.image.shape == (14, 9, 1)
    assert ds.load("rgb", with_label=False).label is None
    assert ds.num_slices("rgb") == 1 and ds.shape("rgb") == (14, 9, 1)

    out = tmp_path / "out"
    p = ds.write_mask("rgb", case.label, out)
    assert p == out / "rgb.png"
    np.testing.assert_array_equal((np.asarray(Image.open(p)) > 0)[:, :, None], case.label)
    # written masks can be used as a masks/ folder again
    ds.write_mask("gray", np.ones((14, 9), np.uint8), root / "masks")
    assert ds.load("gray").label.all()
    assert not _leftovers(out) and not _leftovers(root)


# -- errors --------------------------------------------------------------------------------------

def test_errors_missing_and_unrecognised(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(UserError, match="unrecognised data layout"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(UserError, match="not a folder"):
        open_dataset(tmp_path / "empty" / "readme.txt")
    with pytest.raises(UserError, match="case list not found"):
        open_dataset(_la(tmp_path), tmp_path / "missing.list")


def test_errors_list_names_missing_case(tmp_path: Path) -> None:
    root = _la(tmp_path)
    (root / "train.list").write_text("c0\nghost\n")
    with pytest.raises(UserError, match="ghost"):
        open_dataset(root)
    nn = _nifti(tmp_path)
    (tmp_path / "l").write_text("a\nzz\n")
    with pytest.raises(UserError, match="zz"):
        open_dataset(nn, tmp_path / "l")
    with pytest.raises(UserError, match="qq"):
        open_dataset(_png(tmp_path), _write(tmp_path / "l2", "qq\n"))
    with pytest.raises(UserError, match="unknown case"):
        open_dataset(root, _write(tmp_path / "l3", "c0\n")).load("c1")


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_errors_truncated_and_corrupt_files(tmp_path: Path) -> None:
    root = _la(tmp_path, shape=(40, 40, 10))
    h5 = root / "c0" / "mri_norm2.h5"
    data = h5.read_bytes()
    h5.write_bytes(data[: len(data) // 3])  # truncated
    ds = open_dataset(root)  # opening the folder is cheap and does not read volumes
    with pytest.raises(UserError, match=r"c0.*mri_norm2\.h5"):
        ds.load("c0")
    with pytest.raises(UserError, match="mri_norm2.h5"):
        ds.num_slices("c0")
    assert ds.load("c1").image.shape == (40, 40, 10)  # other cases unaffected

    nn = _nifti(tmp_path)
    p = nn / "imagesTr" / "b_0000.nii.gz"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(UserError, match="b_0000.nii.gz"):
        open_dataset(nn).load("b")

    png = _png(tmp_path)
    (png / "images" / "gray.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserError, match="gray.png"):
        open_dataset(png).load("gray")


def test_atomic_write_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "d" / "x.nii.gz"
    atomic_write(target, lambda t: t.write_bytes(b"old"))

    def boom(t: Path) -> None:
        t.write_bytes(b"partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.nii.gz"]


# -- phantom -------------------------------------------------------------------------------------

def test_phantom(tmp_path: Path) -> None:
    shape = (48, 48, 12)
    a = make_phantom(tmp_path / "a", n_cases=3, shape=shape, seed=1)
    b = make_phantom(tmp_path / "b", n_cases=3, shape=shape, seed=1)
    c = make_phantom(tmp_path / "c", n_cases=1, shape=shape, seed=2)
    assert read_list(a / "train.list") == ["phantom_00", "phantom_01", "phantom_02"]
    da, db, dc = open_dataset(a), open_dataset(b), open_dataset(c)
    assert isinstance(da, LAH5Dataset) and da.has_labels
    for cid in da.case_ids:
        x, y = da.load(cid), db.load(cid)
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.label, y.label)
        img, lab = x.image, x.label
        assert img.shape == shape and img.dtype == np.float32 and lab.dtype == np.uint8
        assert abs(img.mean()) < 1e-3 and abs(img.std() - 1) < 1e-3  # z-scored
        assert 0.005 < lab.mean() < 0.2
        zs = np.flatnonzero(lab.any(axis=(0, 1)))
        assert shape[2] // 2 <= len(zs) < shape[2]  # most but not all slices
        ext = np.flatnonzero(lab.any(axis=(1, 2)))
        assert 0.15 * shape[0] <= len(ext) <= 0.55 * shape[0]
        assert img[lab > 0].mean() > img[lab == 0].mean() + 2  # high contrast
    assert not np.array_equal(da.load("phantom_00").image, da.load("phantom_01").image)
    assert not np.array_equal(da.load("phantom_00").image, dc.load("phantom_00").image)


# -- splits --------------------------------------------------------------------------------------

def test_split_cases() -> None:
    ids = [f"c{i}" for i in range(20)]
    s = split_cases(ids, labeled=4, val=8)
    assert s.val == ids[12:] and s.labeled == ids[:4] and s.unlabeled == ids[4:12]
    s = split_cases(ids, labeled=12, val=8)
    assert s.unlabeled == [] and s.labeled == ids[:12]
    s = split_cases(ids, labeled=3, val=0)
    assert s.val == [] and s.unlabeled == ids[3:]
    for lab, val in [(13, 8), (0, 8), (2, -1), (21, 0)]:
        with pytest.raises(UserError):
            split_cases(ids, labeled=lab, val=val)
    with pytest.raises(UserError):
        split_cases(["a", "a", "b"], labeled=1, val=1)


def test_read_list(tmp_path: Path) -> None:
    p = _write(tmp_path / "x.list", "# cases\n\n a \nb  # trailing note\n\n")
    assert read_list(p) == ["a", "b"]
    with pytest.raises(UserError):
        read_list(tmp_path / "nope.list")


# -- real LA data (read-only) --------------------------------------------------------------------

@pytest.mark.skipif(LA_DIR is None, reason="LA data not found (set SEMISAM_LA_DIR)")
def test_real_la() -> None:
    ds = open_dataset(LA_DIR)
    assert isinstance(ds, LAH5Dataset) and len(ds.case_ids) == 80
    assert all(ds.num_slices(c) == 88 for c in ds.case_ids)
    cid = ds.case_ids[0]
    case = ds.load(cid)
    assert case.image.shape[2] == 88 == ds.num_slices(cid)
    assert case.image.shape == ds.shape(cid) and case.image.dtype == np.float32
    assert case.label is not None and case.label.shape == case.image.shape and 0 < case.label.mean() < 0.5
    assert ds.load(cid, with_label=False).label is None
