"""Issue 25, "your own data, right": what a new user's own folder gets wrong without a word, each case through the
real entry point (`cli.main` in-process) on real computations (the tiny SAM's encoder and decoder, nibabel files)."""
from __future__ import annotations

import json
import os
import re
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


# ---- 3: pseudo-labels from a cache built --every K -------------------------------------------------------------
def _written(dataset, case: str, out: Path) -> np.ndarray:
    return dataset.read_mask(case, out)


def test_every_k_cache_pseudo_labels_are_never_silently_empty_and_the_report_scores_the_file(small, tmp_path):
    cache = tmp_path / "cache"
    assert invoke("embed", "--data", str(small), "--model", "tiny", "--every", "2", "--cache",
                  str(cache)).returncode == 0
    dataset = open_dataset(small)
    outs = {}
    for unseen in ("ignore", "nearest", "encode"):
        outs[unseen] = tmp_path / unseen
        result = invoke("pseudo-label", "--cache", str(cache), "--data", str(small), "--unseen", unseen,
                        "--out", str(outs[unseen]))
        assert result.returncode == 0, result.stderr[-2000:]
    live = tmp_path / "live"  # no cache: the encoder on every prompted slice
    assert invoke("pseudo-label", "--data", str(small), "--model", "tiny", "--out", str(live)).returncode == 0
    for case in dataset.case_ids:
        label = dataset.load(case).label
        labelled = np.flatnonzero(label.any(axis=(0, 1)))
        unseen = [z for z in labelled if z % 2]  # prompted, and not in the cache
        assert unseen
        ignore = _written(dataset, case, outs["ignore"])
        assert (ignore[:, :, unseen] == dataset.ignore_value).all() and dataset.ignore_value == 2
        assert set(np.unique(ignore[:, :, [z for z in range(label.shape[2]) if z % 2 == 0]])) <= {0, 1}
        nearest = _written(dataset, case, outs["nearest"])
        seen = np.array([z for z in labelled if z % 2 == 0])  # the slices SAM labelled
        for z in unseen:  # each takes the nearest one's mask (the lower one on a tie)
            assert np.array_equal(nearest[:, :, z], nearest[:, :, seen[np.argmin(np.abs(seen - z))]])
            assert nearest[:, :, z].max() <= 1
        encoded = _written(dataset, case, outs["encode"])
        assert np.array_equal(encoded[:, :, unseen], _written(dataset, case, live)[:, :, unseen])
    for unseen, out in outs.items():
        report = json.loads((out / "report.json").read_text())
        assert report["distance_unit"] == "mm" and report["unseen"] == unseen and report["ignore_value"] == 2
        for row in report["cases"]:
            assert row["spacing"] == "0.625,0.625,2.5"
            written = _written(dataset, row["case"], out)
            label = dataset.load(row["case"]).label
            again = binary_metrics(np.where(written == 2, 0, written), np.where(written == 2, 0, label), ZOOMS)
            for key, value in again.items():  # exactly the written file's figures, in mm
                assert row[key] == pytest.approx(value, nan_ok=True), (unseen, key)


# ---- predict, evaluate --save-masks, python -m semisam_fast ------------------------------------------------------
@pytest.fixture(scope="module")
def lps_run(tmp_path_factory) -> tuple[Path, Path]:
    """Four NIfTI cases on an LPS affine (0.625 mm, shifted origin) and a finished 2-iteration sup run on them."""
    root = tmp_path_factory.mktemp("lps")
    data = nifti_folder(root / "data", {f"LA_{i:03d}": (48, 40, 8) for i in range(1, 5)})
    affine = np.array([[-0.625, 0, 0, 30.0], [0, -0.625, 0, 20.0], [0, 0, 2.5, -10.0], [0, 0, 0, 1]])
    for path in list((data / "imagesTr").iterdir()) + list((data / "labelsTr").iterdir()):
        img = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), path)
    run = root / "run"
    result = invoke("train", "--data", str(data), "--labeled", "2", "--val", "1", "--method", "sup",
                    "--iterations", "2", "--out", str(run))
    assert result.returncode == 0, result.stderr[-2000:]
    return data, run


def test_predict_writes_the_students_masks_on_the_images_affine(lps_run, tmp_path):
    from semisam_fast.checkpoints import find_checkpoint
    from semisam_fast.inference import largest_component, predict_case
    from semisam_fast.nets import load_student

    data, run = lps_run
    dataset = open_dataset(data)
    net, config = load_student(find_checkpoint(run))
    result = invoke("predict", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "p"))
    assert result.returncode == 0, result.stderr[-2000:]
    largest = invoke("predict", "--checkpoint", str(find_checkpoint(run)), "--data", str(data), "--largest",
                     "--out", str(tmp_path / "l"))
    assert largest.returncode == 0, largest.stderr[-2000:]
    for case in dataset.case_ids:  # every case, labelled or not
        image_file = nib.load(data / "imagesTr" / f"{case}_0000.nii.gz")
        written = nib.load(tmp_path / "p" / f"{case}.nii.gz")
        assert np.array_equal(written.affine, image_file.affine) and written.shape == image_file.shape
        prob = predict_case(net, dataset.load(case, with_label=False).image, config)
        assert np.array_equal(dataset.read_mask(case, tmp_path / "p"), (prob > 0.5).astype(np.uint8))
        assert np.array_equal(dataset.read_mask(case, tmp_path / "l"), largest_component(prob > 0.5))
    record = json.loads((tmp_path / "p" / "predict.json").read_text())
    assert record["cases"] == dataset.case_ids and record["checkpoint"] == str(find_checkpoint(run))
    # evaluate --save-masks writes exactly what it scored
    saved = tmp_path / "saved"
    result = invoke("evaluate", "--run", str(run), "--save-masks", str(saved), "--out", str(tmp_path / "e.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "e.json").read_text())["cases"]
    assert [row["case"] for row in rows] == ["LA_004"]
    mask = dataset.read_mask("LA_004", saved)
    assert np.array_equal(mask, dataset.read_mask("LA_004", tmp_path / "p"))
    assert rows[0]["dice"] == pytest.approx(binary_metrics(mask, dataset.load("LA_004").label, ZOOMS)["dice"])
    user_error(invoke("predict", "--data", str(data), "--out", str(tmp_path / "x")), "--run", "--checkpoint")


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-m", "semisam_fast", "predict", "--help"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0 and "--checkpoint" in result.stdout and "--largest" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "semisam_fast", "embed", "--data", "/nonexistent", "--cache", "/tmp/c"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error:")


# ---- provenance ------------------------------------------------------------------------------------------------
def test_run_json_records_provenance_and_resume_names_the_setting_that_differs(small, tmp_path):
    import subprocess

    import torch

    run = tmp_path / "run"
    args = ["train", "--data", str(small), "--labeled", "1", "--val", "1", "--method", "sup", "--iterations", "2",
            "--out", str(run)]
    first = invoke(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "config (la-cpu preset" in first.stderr and '"iterations": 2' in first.stderr  # the effective config
    record = json.loads((run / "run.json").read_text())
    [session] = record["sessions"]
    assert session["command"] == ["semisam-fast", *args] and session["versions"]["torch"] == torch.__version__
    assert session["versions"]["python"] and session["versions"]["numpy"] == np.__version__
    head = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert session["git_commit"].split("-")[0] == head
    assert session["started"] <= session["finished"] and session["iteration"] == 2
    log = (run / "train.log").read_text()
    assert "config: {" in log and "iteration 2: loss" in log and "trained sup" in log
    # a different setting is refused by name; the same command resumes and adds a session
    changed = user_error(invoke(*args[:-2], "--lr", "0.01", "--out", str(run)), "lr", "0.001", "0.01")
    assert "iterations" not in changed
    assert invoke(*args).returncode == 0
    assert len(json.loads((run / "run.json").read_text())["sessions"]) == 2


# ---- 1: multi-class labels ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> Path:
    from semisam_fast.data import make_multiclass_phantom

    return make_multiclass_phantom(tmp_path_factory.mktemp("multi") / "Dataset002_Two", n_cases=5,
                                   shape=(64, 64, 10))


@pytest.mark.slow  # pseudo-label, train and score end to end (~30 s)
def test_multiclass_labels_are_kept_pseudo_labelled_trained_and_scored_per_class(multi, tmp_path):
    from semisam_fast.metrics import class_metrics

    dataset = open_dataset(multi)
    assert dataset.label_values == (1, 2) and set(np.unique(dataset.load("multi_00").label)) == {0, 1, 2}
    (tmp_path / "three.list").write_text("multi_00\nmulti_01\nmulti_02\n")
    out = tmp_path / "pl"
    result = invoke("pseudo-label", "--data", str(multi), "--list", str(tmp_path / "three.list"), "--out", str(out),
                    "--as-nnunet", "Dataset502_Two")
    assert result.returncode == 0, result.stderr[-2000:]
    exported = json.loads((out / "Dataset502_Two" / "dataset.json").read_text())
    assert exported["labels"] == {"background": 0, "atrium": 1, "vessel": 2} and exported["numTraining"] == 3
    _nnunet_integrity(out / "Dataset502_Two")
    report = json.loads((out / "report.json").read_text())
    assert report["labels"] == [1, 2] and report["ignore_value"] == 3
    for row in report["cases"]:
        written = dataset.read_mask(row["case"], out)
        label = dataset.load(row["case"]).label
        assert set(np.unique(written)) == {0, 1, 2}  # the label's own values, each structure its own
        assert row["dice_1"] > 0.8 and row["dice_2"] > 0.8  # LiteMedSAM from each structure's own box
        assert row["dice"] == pytest.approx((row["dice_1"] + row["dice_2"]) / 2)
        again = class_metrics(written, label, (1, 2), ZOOMS)
        assert all(row[k] == pytest.approx(v) for k, v in again.items())
    # a student with a class per label value, trained, evaluated per class, predicting label values
    run = tmp_path / "run"
    trained = invoke("train", "--data", str(multi), "--labeled", "2", "--val", "2", "--method", "mt",
                     "--iterations", "4", "--out", str(run))
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads((run / "run.json").read_text())["config"]["student_kwargs"]["n_classes"] == 3
    assert invoke("evaluate", "--run", str(run)).returncode == 0
    rows = json.loads((run / "eval.json").read_text())["cases"]
    assert [r["case"] for r in rows] == ["multi_03", "multi_04"]
    assert all({"dice_1", "dice_2", "hd95_1", "hd95_2"} <= set(r) for r in rows)
    assert invoke("predict", "--run", str(run), "--data", str(multi), "--out", str(tmp_path / "pred")).returncode == 0
    assert set(np.unique(dataset.read_mask("multi_03", tmp_path / "pred"))) <= {0, 1, 2}
    user_error(invoke("train", "--data", str(multi), "--labeled", "2", "--val", "2", "--method", "semisam",
                      "--out", str(tmp_path / "s")), "semisam", "2 labels")


def test_a_binary_data_set_keeps_its_config_and_labels(small):
    from semisam_fast.train import preset, with_classes

    config = preset("la-cpu", method="sup")
    assert with_classes(config, (1,)) is config  # the same student, so the same weights as before
    assert open_dataset(small).label_values == (1,)


# ---- train --config run.toml -------------------------------------------------------------------------------------
def test_train_config_file_with_flags_overriding_it(small, tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "la-cpu"\nmethod = "sup"\niterations = 2\nlr = 0.002\nseed = 3\nin_plane = 64\n'
                    'crop = 48\nintensity_aug = false\nstudent_kwargs = {base = 8}\nsam_recipe = "adapted"\n'
                    'sam_weight = 0.5\n')
    run = tmp_path / "run"
    result = invoke("train", "--config", str(toml), "--data", str(small), "--labeled", "1", "--val", "1",
                    "--lr", "0.003", "--sam-min-agreement", "0.2", "--out", str(run))
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["lr"] == 0.003  # the flag given wins
    # the recipe sits under the file's options, which sit under the flags
    assert (config["sam_weight"], config["targets"]["fusion"], config["targets"]["min_agreement"]) == (0.5, "mean", 0.2)
    assert (config["method"], config["iterations"], config["seed"], config["in_plane"], config["crop"],
            config["intensity_aug"], config["student_kwargs"]) == ("sup", 2, 3, 64, 48, False, {"base": 8})
    assert '"lr": 0.003' in result.stderr and '"in_plane": 64' in result.stderr  # the effective config, printed
    base = ["train", "--data", str(small), "--labeled", "1", "--val", "1", "--out", str(tmp_path / "x"), "--config"]
    for text, needles in (("lr_rate = 1\n", ("unknown option", "lr_rate")), ('iterations = "2"\n', ("iterations",)),
                          ("lr = \n", ("cannot read config file",)), ('preset = "big"\n', ("preset", "big")),
                          ('sam_recipe = "tuned"\n', ("recipe", "tuned"))):
        toml.write_text(text)
        user_error(invoke(*base, str(toml)), *needles)
    user_error(invoke(*base, str(tmp_path / "none.toml")), "not found")


# ---- pseudo-labels as an nnU-Net v2 data set ---------------------------------------------------------------------
def _nnunet_integrity(folder: Path) -> None:
    """nnU-Net's own check of a raw data set (`nnUNetv2_plan_and_preprocess --verify_dataset_integrity`)."""
    integrity = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    integrity.verify_dataset_integrity(str(folder), num_processes=1)  # raises on any problem


def test_pseudo_labels_as_an_nnunet_dataset_with_the_ignore_label(small, tmp_path):
    cache = tmp_path / "cache"
    assert invoke("embed", "--data", str(small), "--model", "tiny", "--every", "2", "--cache",
                  str(cache)).returncode == 0
    out = tmp_path / "pl"
    result = invoke("pseudo-label", "--cache", str(cache), "--data", str(small), "--as-nnunet", "Dataset501_Small",
                    "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    folder = out / "Dataset501_Small"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "foreground": 1, "ignore": 2}  # the every-2nd-slice gaps
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    for case in ("LA_001", "LA_002"):
        image = folder / "imagesTr" / f"{case}_0000.nii.gz"
        assert image.is_symlink() and image.resolve() == (small / "imagesTr" / f"{case}_0000.nii.gz").resolve()
        assert (folder / "labelsTr" / f"{case}.nii.gz").read_bytes() == (out / f"{case}.nii.gz").read_bytes()
    _nnunet_integrity(folder)
    user_error(invoke("pseudo-label", "--data", str(small), "--model", "tiny", "--as-nnunet", "LA_pseudo",
                      "--out", str(tmp_path / "bad")), "DatasetNNN_NAME")
    assert not (tmp_path / "bad").exists()


def test_label_values_dataset_json_checks(small, tmp_path):
    import shutil

    data = nifti_folder(tmp_path / "three", {"A_001": (40, 40, 6), "A_002": (40, 40, 6)}, values=(1, 2))
    assert set(np.unique(open_dataset(data).load("A_001").label)) == {0, 1}  # no dataset.json: merged ...
    said = invoke("pseudo-label", "--data", str(data), "--model", "tiny", "--no-distances", "--out",
                  str(tmp_path / "merged"))
    assert said.returncode == 0, said.stderr[-2000:]
    warnings = re.findall(r"warning: [^\r\n]*", said.stderr)  # (a progress bar may share its line)
    assert len(warnings) == 1 and "without a dataset.json" in warnings[0] and "[0, 1, 2]" in warnings[0], said.stderr
    (data / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0,
                                                   "a": 1}, "numTraining": 2, "file_ending": ".nii.gz"}))
    user_error(invoke("pseudo-label", "--data", str(data), "--model", "tiny", "--out", str(tmp_path / "o")),
               "A_001.nii.gz", "[2]", "dataset.json")
    (data / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": [1, 2]}}))
    user_error(invoke("pseudo-label", "--data", str(data), "--model", "tiny", "--out", str(tmp_path / "o")),
               "region-based")
    # a data set whose labels carry nnU-Net's ignore label (as --as-nnunet writes one) is refused for training
    folder = tmp_path / "Dataset503_Ignore"
    shutil.copytree(small, folder, symlinks=True)
    label = nib.load(folder / "labelsTr" / "LA_001.nii.gz")
    array = np.asarray(label.dataobj).copy()
    array[:, :, 0] = 2
    nib.save(nib.Nifti1Image(array, label.affine), folder / "labelsTr" / "LA_001.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {
        "background": 0, "la": 1, "ignore": 2}, "numTraining": 2, "file_ending": ".nii.gz"}))
    assert open_dataset(folder).ignore_value == 2
    user_error(invoke("train", "--data", str(folder), "--labeled", "1", "--val", "1", "--method", "sup",
                      "--iterations", "1", "--out", str(tmp_path / "r")), "LA_001", "ignore label")
