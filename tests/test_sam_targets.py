"""SAM targets from a teacher's prediction: prompts, gates, negatives (real LiteMedSAM on a phantom), the stored-
target SAM loss, and `pseudo-label --prompt teacher` as a user runs it."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from semisam_fast.backends import TorchBackend
from semisam_fast.cache import EmbeddingCache
from semisam_fast.data import make_phantom, open_dataset
from semisam_fast.embed import build_cache
from semisam_fast.metrics import binary_metrics
from semisam_fast.models import load_model
from semisam_fast.pseudo_label import teacher_pseudo_label
from semisam_fast.sam_targets import TargetOptions, case_targets, score_targets
from semisam_fast.train import build_trainer, preset
from semisam_fast.train.losses import sam_loss

from .conftest import invoke


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("p"), n_cases=1, shape=(96, 80, 12), seed=5)


@pytest.fixture(scope="module")
def lite(phantom, tmp_path_factory):
    dataset = open_dataset(phantom)
    backend = TorchBackend(load_model("litemedsam"))
    cache_dir = tmp_path_factory.mktemp("c")
    build_cache(dataset, backend, cache_dir, batch=12, progress=False)
    case = dataset.load(dataset.case_ids[0])
    return case, EmbeddingCache(cache_dir), backend


def test_targets_from_a_perfect_teacher(lite):
    case, cache, backend = lite
    label = case.label
    targets = case_targets(case.case_id, label.astype(np.float32), cache, backend)
    has = label.any(axis=(0, 1))
    assert np.array_equal(targets.prompted, has) and np.array_equal(targets.kept, has)
    assert binary_metrics(targets.sam[:, :, has], label[:, :, has])["dice"] > 0.75
    assert np.all(targets.iou_pred[has] > 0) and np.all(np.isnan(targets.iou_pred[~has]))
    # negatives: exactly the slices outside the teacher's z-range, and those hold no foreground
    zs = np.flatnonzero(has)
    assert np.array_equal(targets.negative, (np.arange(len(has)) < zs.min()) | (np.arange(len(has)) > zs.max()))
    assert not targets.target()[:, :, targets.negative].any()
    assert np.array_equal(targets.valid, targets.kept | targets.negative)
    score = score_targets(targets, label)
    assert score["negatives_wrong"] == 0 and score["target_dice_on_valid"] > 0.75
    assert score["teacher_dice"] == pytest.approx(1.0)
    kept_sam, kept_label = targets.sam[:, :, targets.kept], label[:, :, targets.kept].astype(bool)
    assert score["target_precision"] == pytest.approx((kept_sam & kept_label).sum() / kept_sam.sum())
    assert 0.5 < score["target_precision"] < 1.0  # SAM's mask, not the label


def test_gates_and_largest_component(lite):
    case, cache, backend = lite
    label = case.label.astype(bool)
    has = label.any(axis=(0, 1))
    strict = case_targets(case.case_id, label.astype(np.float32), cache, backend, TargetOptions(min_agreement=1.01))
    assert not strict.kept.any() and np.array_equal(strict.valid, strict.negative)
    # no target kept: precision is undefined (nan, left out of a table's mean), not metrics' both-empty 1
    assert np.isnan(score_targets(strict, label)["target_precision"])
    strict_iou = case_targets(case.case_id, label.astype(np.float32), cache, backend, TargetOptions(min_iou_pred=2.0))
    assert not strict_iou.kept.any()
    # a spurious blob on a slice the structure does not reach: the largest 3D component drops it
    spurious = label.copy()
    z = int(np.flatnonzero(~has)[-1])
    spurious[5:12, 5:12, z] = True
    clean = case_targets(case.case_id, spurious.astype(np.float32), cache, backend, TargetOptions(largest_3d=True))
    assert not clean.prompted[z] and clean.negative[z]
    raw = case_targets(case.case_id, spurious.astype(np.float32), cache, backend, TargetOptions(largest_3d=False))
    assert raw.prompted[z] and not raw.negative[z]


def test_targets_from_the_cached_slices_equal_those_from_the_whole_volume(phantom, lite, tmp_path):
    # a round predicts only the slices SAM sees (every 2nd here); the whole volume's prediction must give the
    # same targets, so the teacher's mask and its largest component are formed over the cached stack either way
    case, _, backend = lite
    build_cache(open_dataset(phantom), backend, tmp_path / "c2", batch=6, every=2, progress=False)
    every2 = EmbeddingCache(tmp_path / "c2")
    slices = every2.slices(case.case_id)
    assert slices == list(range(0, case.label.shape[2], 2))
    prob = case.label.astype(np.float32)
    prob[5:12, 5:12, 1] = 1.0  # a blob on an uncached slice only: never prompted
    whole = case_targets(case.case_id, prob, every2, backend)
    cached = case_targets(case.case_id, prob[:, :, slices], every2, backend)
    for field in ("teacher", "sam", "prompted", "kept", "negative"):
        assert np.array_equal(getattr(whole, field), getattr(cached, field)), field
    assert whole.slices == cached.slices == slices and whole.prompted.any()
    with pytest.raises(ValueError, match="cached slices"):
        case_targets(case.case_id, prob[:, :, :3], every2, backend)


def test_mean_fusion_and_the_composite_score(lite):
    """Fusion "mean": the mean of SAM's and the teacher's probabilities. A certain teacher (probability 1 on its mask,
    0 elsewhere) outvotes SAM everywhere, so the target is the teacher's mask; an unsure one (0.6) is overruled where
    SAM is confident. The composite (target where kept, teacher elsewhere) of a perfect teacher scores 1."""
    case, cache, backend = lite
    label = case.label.astype(bool)
    sure = case_targets(case.case_id, label.astype(np.float32), cache, backend, TargetOptions(fusion="mean"))
    assert np.array_equal(sure.target()[:, :, sure.kept].astype(bool), label[:, :, sure.kept])
    assert score_targets(sure, label)["composite_dice"] == pytest.approx(1.0)
    plain = case_targets(case.case_id, label.astype(np.float32), cache, backend)
    unsure = case_targets(case.case_id, label * np.float32(0.6), cache, backend, TargetOptions(fusion="mean"))
    kept = plain.kept & unsure.kept
    # an unsure teacher's pixel survives only where SAM gives it at least 0.4: a subset of the teacher's mask ...
    assert not (unsure.sam[:, :, kept] & ~label[:, :, kept]).any()
    # ... and SAM's confident background removes some of it
    assert (unsure.sam[:, :, kept].sum() < label[:, :, kept].sum()) or np.array_equal(plain.sam, label)
    # fusion "teacher", the control without SAM: an unsure teacher's own mask (prob 0.6 > 0.5) wherever it has one
    control = case_targets(case.case_id, label * np.float32(0.6), cache, backend, TargetOptions(fusion="teacher"))
    assert np.array_equal(control.sam, control.teacher) and np.array_equal(control.sam, label)
    assert np.array_equal(control.kept, label.any(axis=(0, 1)))
    with pytest.raises(ValueError):
        case_targets(case.case_id, label.astype(np.float32), cache, backend, TargetOptions(fusion="median"))


def test_sam_loss_pixel_weights_and_negatives():
    prob = torch.tensor([[[0.9, 0.2], [0.1, 0.8]], [[0.3, 0.3], [0.3, 0.3]]], requires_grad=True)
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    valid = torch.tensor([True, True])
    weight = torch.tensor([[[1.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    mse = sam_loss(prob, mask, valid, "mse", weight)
    expected = ((0.1 ** 2 + 0.2 ** 2 + 0.1 ** 2) + 4 * 0.3 ** 2) / 7
    assert mse.item() == pytest.approx(expected, rel=1e-5)
    # an empty target (a negative slice) still pulls the student's foreground down
    loss = sam_loss(prob[1:], mask[1:], valid[1:], "dicece")
    loss.backward()
    assert loss.item() > 0 and bool((prob.grad[1] > 0).all())


def test_pseudo_label_teacher_cli_never_reads_labels_for_targets(tmp_path):
    """A trained run's teacher -> gated SAM masks written per case; scrambling the labels changes the report's
    scores but not one voxel of the masks."""
    root = make_phantom(tmp_path / "p", n_cases=4, shape=(64, 64, 8), seed=1)
    dataset = open_dataset(root)
    cache = tmp_path / "cache"
    build_cache(dataset, TorchBackend(load_model("tiny")), cache, case_ids=dataset.case_ids[2:3], progress=False)
    config = preset("la-cpu", method="mt", iterations=4, in_plane=64, crop=48, labelled_batch=2, unlabelled_batch=2,
                    unlabelled_cases=None, unlabelled_every=1, student_kwargs={"base": 8}, val_every=4, save_every=4)
    build_trainer(config, root, None, labeled=2, val=1, run_dir=tmp_path / "run", tensorboard=False).run(
        progress=False)
    scrambled = tmp_path / "scrambled"
    shutil.copytree(root, scrambled)
    with h5py.File(scrambled / dataset.case_ids[2] / "mri_norm2.h5", "r+") as f:
        f["label"][...] = np.random.default_rng(0).integers(0, 2, f["label"].shape, dtype=np.uint8)
    outputs = []
    for data, out in ((root, tmp_path / "pl"), (scrambled, tmp_path / "pl_scrambled")):
        result = invoke("pseudo-label", "--cache", str(cache), "--data", str(data), "--prompt", "teacher",
                         "--run", str(tmp_path / "run"), "--margin", "2", "--out", str(out))
        assert result.returncode == 0, result.stderr
        report = json.loads((out / "report.json").read_text())
        assert report["weights"] == "teacher" and report["options"]["margin"] == 2.0
        assert {"teacher_dice", "target_dice_on_valid", "coverage", "target_precision"} <= set(report["cases"][0])
        with h5py.File(out / dataset.case_ids[2] / "mask.h5") as f:
            outputs.append(f["mask"][()])
    assert np.array_equal(outputs[0], outputs[1])
    # a run prompted by the mt run's network (--sam-prompt-run): its targets are that network's, as in its rounds
    prompted = tmp_path / "prompted"
    trained = invoke("train", "--data", str(root), "--labeled", "2", "--val", "1", "--method", "semisam", "--cache",
                     str(cache), "--sam-prompt-run", str(tmp_path / "run"), "--unlabelled-every", "1", "--iterations",
                     "1", "--in-plane", "64", "--crop", "48", "--out", str(prompted))
    assert trained.returncode == 0, trained.stderr[-2000:]
    result = invoke("pseudo-label", "--cache", str(cache), "--data", str(root), "--prompt", "teacher", "--run",
                    str(prompted), "--margin", "2", "--out", str(tmp_path / "pl_prompted"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "pl_prompted" / "report.json").read_text())
    assert report["weights"] == f"student of {tmp_path / 'run'}"
    direct = teacher_pseudo_label(dataset, EmbeddingCache(cache), TorchBackend(load_model("tiny")), tmp_path / "run",
                                  tmp_path / "pl_direct", options={"margin": 2.0}, weights="student", progress=False)
    assert report["cases"] == json.loads((tmp_path / "pl_direct" / "report.json").read_text())["cases"]
    with h5py.File(tmp_path / "pl_prompted" / dataset.case_ids[2] / "mask.h5") as f, \
            h5py.File(tmp_path / "pl_direct" / dataset.case_ids[2] / "mask.h5") as g:
        assert np.array_equal(f["mask"][()], g["mask"][()])
    # a recipe's target options over the run's own, the flags given over the recipe
    result = invoke("pseudo-label", "--cache", str(cache), "--data", str(root), "--prompt", "teacher", "--run",
                    str(tmp_path / "run"), "--sam-recipe", "adapted", "--min-agreement", "0.4", "--no-distances",
                    "--out", str(tmp_path / "pl_adapted"))
    assert result.returncode == 0, result.stderr
    options = json.loads((tmp_path / "pl_adapted" / "report.json").read_text())["options"]
    assert (options["fusion"], options["min_agreement"]) == ("mean", 0.4)
    missing = invoke("pseudo-label", "--cache", str(cache), "--data", str(root), "--prompt", "teacher",
                      "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "--run" in missing.stderr and "Traceback" not in missing.stderr
