"""Metrics against hand-computed values on synthetic masks."""

import math

import numpy as np
import pytest

from medpy.metric import binary as mb
from scipy import ndimage

from semisam_fast.metrics import binary_metrics, format_table, summarize, undefined_counts, union_box


@pytest.mark.parametrize("k", [1, 3, 5])
def test_parallel_planes_distance_is_k(k):
    pred = np.zeros((12, 10, 10), bool)
    gt = np.zeros_like(pred)
    pred[2] = True
    gt[2 + k] = True
    m = binary_metrics(pred, gt)
    assert m["hd95"] == pytest.approx(k)
    assert m["asd"] == pytest.approx(k)
    assert m["dice"] == 0.0 and m["jaccard"] == 0.0


def test_parallel_lines_2d_with_spacing():
    pred = np.zeros((10, 10), bool)
    gt = np.zeros_like(pred)
    pred[:, 2] = True
    gt[:, 5] = True  # 3 columns apart
    assert binary_metrics(pred, gt)["hd95"] == pytest.approx(3)
    m = binary_metrics(pred, gt, spacing=(1.0, 0.5))
    assert m["hd95"] == pytest.approx(1.5)
    assert m["asd"] == pytest.approx(1.5)
    # spacing along the lines does not change the distance between them
    assert binary_metrics(pred, gt, spacing=(4.0, 1.0))["asd"] == pytest.approx(3)


def test_cube_shifted_by_one():
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[3:7, 3:7, 3:7] = 1
    pred = np.roll(gt, 1, axis=0)
    m = binary_metrics(pred, gt)
    # 4x4x4 cubes overlapping in 3x4x4 = 48 voxels: dice = 2*48/128, jaccard = 48/80
    assert m["dice"] == pytest.approx(0.75)
    assert m["jaccard"] == pytest.approx(0.6)
    # pred's surface has 64 - 8 = 56 voxels: its top face (16) is 1 from gt's top face; the 4 inner voxels
    # of its bottom face lie inside gt, 1 from gt's surface; the other 36 are on gt's surface
    assert m["hd95"] == pytest.approx(1.0)
    assert m["asd"] == pytest.approx(20 / 56)
    m2 = binary_metrics(pred, gt, spacing=(2.0, 1.0, 1.0))
    assert m2["dice"] == m["dice"]
    # with 2-unit slices the top face is 2 away; the 4 inner voxels stay 1 away (sideways to gt's wall)
    assert m2["hd95"] == pytest.approx(2.0)
    assert m2["asd"] == pytest.approx((16 * 2 + 4 * 1) / 56)


def test_overlaps_only_without_distances():
    """`distances=False`: the overlaps, the same as with the distances, and the same empty-mask conventions."""
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[3:7, 3:7, 3:7] = 1
    pred = np.roll(gt, 1, axis=0)
    full = binary_metrics(pred, gt)
    overlaps = ("dice", "jaccard", "precision", "recall")
    assert binary_metrics(pred, gt, distances=False) == {k: full[k] for k in overlaps}
    empty = np.zeros_like(gt)
    assert binary_metrics(empty, empty, distances=False) == dict.fromkeys(overlaps, 1.0)
    assert binary_metrics(gt, empty, distances=False) == dict.fromkeys(overlaps, 0.0)
    assert binary_metrics(empty, gt, distances=False) == dict.fromkeys(overlaps, 0.0)


def test_identical_masks():
    gt = np.zeros((8, 8, 8), bool)
    gt[2:6, 1:5, 3:7] = True
    assert binary_metrics(gt, gt.copy()) == {"dice": 1.0, "jaccard": 1.0, "precision": 1.0, "recall": 1.0,
                                             "hd95": 0.0, "asd": 0.0, "hd95_diag": 0.0, "asd_diag": 0.0}


def test_empty_cases():
    empty = np.zeros((6, 6, 6), bool)
    full = empty.copy()
    full[2:4, 2:4, 2:4] = True
    assert binary_metrics(empty, empty) == {"dice": 1.0, "jaccard": 1.0, "precision": 1.0, "recall": 1.0,
                                            "hd95": 0.0, "asd": 0.0, "hd95_diag": 0.0, "asd_diag": 0.0}
    for pred, gt in ((empty, full), (full, empty)):
        m = binary_metrics(pred, gt)
        assert m["dice"] == 0.0 and m["jaccard"] == 0.0
        assert m["precision"] == 0.0 and m["recall"] == 0.0
        assert math.isnan(m["hd95"]) and math.isnan(m["asd"])
        # the explicit column: an undefined distance scored as the volume's diagonal (5 voxels per axis here)
        assert m["hd95_diag"] == m["asd_diag"] == pytest.approx(math.sqrt(3 * 25))
        assert binary_metrics(pred, gt, spacing=(1.0, 1.0, 2.0))["hd95_diag"] == pytest.approx(math.sqrt(50 + 100))


def test_a_missed_case_is_counted_and_scored_not_hidden():
    """An empty prediction drops out of the hd95 mean (undefined) but is counted beside it, and the _diag column
    gives it the worst value, so a student that misses a structure cannot look better on distances."""
    gt = np.zeros((10, 10, 10), bool)
    gt[3:7, 3:7, 3:7] = True
    near = np.zeros_like(gt)
    near[3:7, 3:7, 4:8] = True
    rows = [{"case": "hit", **binary_metrics(near, gt)}, {"case": "miss", **binary_metrics(np.zeros_like(gt), gt)}]
    summary = summarize(rows)
    assert summary["hd95"][0] == pytest.approx(rows[0]["hd95"])  # the mean alone hides the miss...
    assert undefined_counts(rows)["hd95"] == 1 and undefined_counts(rows)["dice"] == 0  # ...so it is counted
    assert summary["hd95_diag"][0] == pytest.approx((rows[0]["hd95"] + math.sqrt(3 * 81)) / 2)
    text = format_table(rows, summary)
    assert text.splitlines()[-1].split()[:3] == ["left", "out", "(undefined)"]
    assert "1 of 2" in text.splitlines()[-1]


def _blobs(shape, seed, level):
    """Smoothed noise thresholded: several irregular components, some touching the array's edge."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma=3, mode="wrap")
    return noise > level * noise.std()


@pytest.mark.parametrize("shape,spacing", [((40, 64, 56), (1.0, 0.625, 0.625)), ((30, 33, 29), None),
                                           ((96, 80), (0.5, 2.0))])
def test_metrics_are_medpys_on_the_whole_volume(shape, spacing):
    """The union box and the shared surface distances are optimisations, not approximations: every value equals
    medpy's on the uncropped masks, for masks with many components, masks that touch the volume's edge, single
    voxels, and anisotropic spacing."""
    voxel, other = np.zeros(shape, bool), np.zeros(shape, bool)
    voxel[(1,) * len(shape)], other[(3,) * len(shape)] = True, True
    pairs = [(voxel, other), (other, _blobs(shape, 7, 1.0))]
    for seed in range(3):
        gt = _blobs(shape, seed, 1.0)
        pred = ndimage.binary_dilation(gt, iterations=1 + seed) ^ _blobs(shape, 100 + seed, 2.0)
        assert any(gt.take(0, axis=a).any() or gt.take(-1, axis=a).any() for a in range(gt.ndim))
        pairs.append((pred, gt))
    for pred, gt in pairs:
        got = binary_metrics(pred, gt, spacing=spacing)
        assert got["hd95"] == mb.hd95(pred, gt, voxelspacing=spacing)
        assert got["asd"] == mb.asd(pred, gt, voxelspacing=spacing)
        assert got["dice"] == mb.dc(pred, gt) and got["jaccard"] == mb.jc(pred, gt)
        assert got["precision"] == mb.precision(pred, gt) and got["recall"] == mb.recall(pred, gt)


def test_union_box_is_the_tight_box_of_either_mask():
    pred = np.zeros((20, 30), bool)
    gt = np.zeros_like(pred)
    pred[5:8, 0:4] = True
    gt[10:12, 20:25] = True
    assert union_box(pred, gt) == (slice(5, 12), slice(0, 25))
    assert union_box(np.zeros_like(gt), gt) == (slice(10, 12), slice(20, 25))


def test_shape_and_spacing_checks():
    with pytest.raises(ValueError):
        binary_metrics(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError):
        binary_metrics(np.ones((4, 4)), np.ones((4, 4)), spacing=(1.0, 1.0, 1.0))


def test_summarize_population_sd_ignoring_nan():
    rows = [
        {"case": "a", "dice": 0.8, "hd95": 2.0},
        {"case": "b", "dice": 0.6, "hd95": math.nan},
        {"case": "c", "dice": 1.0, "hd95": 4.0},
    ]
    s = summarize(rows)
    assert set(s) == {"dice", "hd95"}
    assert s["dice"][0] == pytest.approx(0.8)
    assert s["dice"][1] == pytest.approx(math.sqrt((0.04 + 0 + 0.04) / 3))
    assert s["hd95"] == pytest.approx((3.0, 1.0))
    all_nan = summarize([{"asd": math.nan}])
    assert math.isnan(all_nan["asd"][0]) and math.isnan(all_nan["asd"][1])
    text = format_table(rows, s)
    assert "0.8000 ± 0.1633" in text and "3.0000 ± 1.0000" in text
    assert text.splitlines()[0].split() == ["case", "dice", "hd95"]
    assert len(text.splitlines()) == 1 + 1 + 3 + 1 + 1 + 1  # header, rule, rows, rule, mean, left out
