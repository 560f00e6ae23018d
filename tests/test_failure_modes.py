"""The bad-input matrix, each case through the real entry point (`cli.main`, run in-process by typer's runner; in a
subprocess where the process itself matters: a file-size limit): a user error is one `error:` line and exit 2 (no
traceback unless --debug), a bug is exit 1 with where it happened, and nothing already written is lost or left
half-written as if valid."""
from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from semisam_fast.cache import EmbeddingCache
from semisam_fast.models import load_model
from semisam_fast.checkpoints import iteration_checkpoints, read_checkpoint

from .conftest import invoke


def user_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, exactly one `error:` line (the last thing said), no traceback; returns that line."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines[-5:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


class Crafted:
    """Unpickling this runs a shell command: what a malicious .pt downloaded from the internet would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def trained(phantom, tmp_path_factory) -> Path:
    """A finished 2-iteration sup run on the phantom (checkpoints at 1 and 2, final.pt)."""
    run = tmp_path_factory.mktemp("fm") / "run"
    result = invoke("train", "--data", str(phantom), "--labeled", "2", "--val", "1", "--method", "sup",
                     "--iterations", "2", "--save-every", "1", "--out", str(run))
    assert result.returncode == 0, result.stderr
    return run


def _nifti_case(root: Path, case: str, image: np.ndarray, label: np.ndarray | None) -> None:
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), root / "imagesTr" / f"{case}_0000.nii.gz")
    if label is not None:
        (root / "labelsTr").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), root / "labelsTr" / f"{case}.nii.gz")


def _blob(shape=(32, 32, 4)) -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros(shape, np.uint8)
    label[10:20, 12:22, 1:3] = 1
    return label * 2.0 + np.random.default_rng(0).normal(0, 0.1, shape), label


def test_usage_errors_and_out_of_range_options(phantom, tmp_path):
    data = str(phantom)
    user_error(invoke("train", "--data", data, "--labeled", "2", "--method", "supervised"), "--method", "sup")
    user_error(invoke("train", "--data", data, "--labeled", "2", "--bogus"), "--bogus")
    user_error(invoke("train", "--labeled", "2"), "--data")
    user_error(invoke("train", "--data", data, "--labeled", "2", "--iterations", "0"), "--iterations")
    user_error(invoke("train", "--data", data, "--labeled", "2", "--iterations", "-5"), "--iterations")
    user_error(invoke("train", "--data", data, "--labeled", "2", "--method", "sup", "--val", "100",
                       "--out", str(tmp_path / "r")))
    user_error(invoke("train", "--data", data, "--labeled", "0"), "--labeled")
    user_error(invoke("embed", "--data", data, "--cache", str(tmp_path / "c"), "--batch", "0"), "--batch")
    user_error(invoke("evaluate"), "--run")
    user_error(invoke("bench", "everything"), "encoder")
    # --debug adds the traceback; the exit code and the error line stay
    debug = invoke("evaluate", "--run", str(tmp_path / "nope"), "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("error: run folder not found")


def test_a_bug_exits_1_and_says_where(monkeypatch):
    """An internal error (injected here: only a real bug would reach this path) is not dressed as a user error."""
    from semisam_fast import doctor

    monkeypatch.setattr(doctor, "report", lambda: {}["missing"])
    result = invoke("doctor")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("internal error (a bug in semisam-fast") and "KeyError" in line and "--debug" in line


def test_student_checkpoint_files(trained, phantom, tmp_path):
    """Missing, truncated, not a checkpoint, another model's weights, a crafted pickle: refused, nothing runs."""
    def evaluate(path: Path) -> subprocess.CompletedProcess:  # what invoke returns
        return invoke("evaluate", "--checkpoint", str(path), "--data", str(phantom), "--out", str(tmp_path / "e.json"))

    final = trained / "checkpoints" / "final.pt"
    user_error(evaluate(tmp_path / "missing.pt"), "not found")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(final.read_bytes()[: final.stat().st_size // 2])
    user_error(evaluate(truncated), "cannot read checkpoint")
    user_error(evaluate(trained / "run.json"), "cannot read checkpoint")
    sam_weights = tmp_path / "sam.pt"
    torch.save(load_model("tiny").encoder.state_dict(), sam_weights)  # SAM weights, not a student checkpoint
    user_error(evaluate(sam_weights), "lacks 'config'")

    marker = tmp_path / "code-ran"
    crafted = tmp_path / "crafted.pt"
    torch.save({"config": {"student": "unet2d"}, "student": Crafted(marker)}, crafted)
    user_error(evaluate(crafted), "refused", "system")
    assert not marker.exists()
    assert not (tmp_path / "e.json").exists()


def test_crafted_sam_checkpoint(tmp_path):
    marker = tmp_path / "code-ran"
    crafted = tmp_path / "medsam_vit_b.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": Crafted(marker)}, crafted)
    user_error(invoke("export", "--model", "medsam", "--checkpoint", str(crafted), "--out", str(tmp_path / "e")),
               "cannot read checkpoint")
    assert not marker.exists()


def test_crafted_run_checkpoint_on_resume(trained, phantom, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    marker = tmp_path / "code-ran"
    latest = iteration_checkpoints(run)[-1][1]
    torch.save({"student": Crafted(marker), "iteration": 2}, latest)
    result = invoke("train", "--data", str(phantom), "--labeled", "2", "--val", "1", "--method", "sup",
                     "--iterations", "2", "--save-every", "1", "--out", str(run))
    user_error(result, "refused", latest.name)
    assert not marker.exists()


def test_corrupt_and_truncated_data_files(phantom, trained, tmp_path):
    la = tmp_path / "la"
    shutil.copytree(phantom, la)
    first = sorted(la.glob("*/mri_norm2.h5"))[0]
    first.write_bytes(first.read_bytes()[:2000])
    user_error(invoke("embed", "--data", str(la), "--model", "tiny", "--cache", str(tmp_path / "c")),
               first.parent.name)

    image, label = _blob()
    nifti = tmp_path / "nifti"
    _nifti_case(nifti, "a", image, label)
    broken = nifti / "imagesTr" / "a_0000.nii.gz"
    broken.write_bytes(gzip.compress(b"not a nifti header" * 20))
    ckpt = str(trained / "checkpoints" / "final.pt")
    out = str(tmp_path / "e.json")
    user_error(invoke("evaluate", "--checkpoint", ckpt, "--data", str(nifti), "--out", out), "a_0000.nii.gz")
    _nifti_case(nifti, "a", image, label)
    broken.write_bytes(broken.read_bytes()[:100])  # truncated gzip stream
    user_error(invoke("evaluate", "--checkpoint", ckpt, "--data", str(nifti), "--out", out), "a_0000.nii.gz")
    nan_image = image.copy()
    nan_image[0, 0, 0] = np.nan
    _nifti_case(nifti, "a", nan_image, label)
    user_error(invoke("evaluate", "--checkpoint", ckpt, "--data", str(nifti), "--out", out), "NaN")


def test_label_problems_and_lists(trained, tmp_path):
    ckpt = str(trained / "checkpoints" / "final.pt")
    image, label = _blob()
    mismatch = tmp_path / "mismatch"
    _nifti_case(mismatch, "a", image, label[:, :, :3])
    user_error(invoke("evaluate", "--checkpoint", ckpt, "--data", str(mismatch), "--out", str(tmp_path / "m.json")),
               "label shape")

    empty = tmp_path / "empty"
    _nifti_case(empty, "a", image, label)
    _nifti_case(empty, "b", image, np.zeros_like(label))
    result = invoke("evaluate", "--checkpoint", ckpt, "--data", str(empty), "--out", str(tmp_path / "e.json"))
    assert result.returncode == 0, result.stderr
    assert "warning: case b has an empty label" in result.stderr
    doc = json.loads((tmp_path / "e.json").read_text())
    assert [c["spacing"] for c in doc["cases"]] == ["1,1,1", "1,1,1"]  # the NIfTI header's, said per row
    undefined = doc["summary"]["hd95"]["undefined"]
    assert undefined == sum(c["hd95"] is None for c in doc["cases"])
    assert all(c["hd95_diag"] is not None for c in doc["cases"])  # the explicit column has a value for every case
    if undefined:
        assert f"{undefined} of 2" in result.stdout

    listed = tmp_path / "list.txt"
    listed.write_text("a\nghost\n")
    user_error(invoke("evaluate", "--checkpoint", ckpt, "--data", str(empty), "--list", str(listed), "--out",
                       str(tmp_path / "l.json")), "ghost")


def test_artefact_that_differs_from_its_sidecar(tiny_artefacts, phantom, tmp_path):
    encoder = tiny_artefacts["encoder"].path
    copy = tmp_path / encoder.name
    shutil.copy(encoder, copy)
    shutil.copy(encoder.with_suffix(".json"), copy.with_suffix(".json"))
    embed = ["embed", "--data", str(phantom), "--backend", "onnx", "--cache", str(tmp_path / "c"), "--every", "6"]
    user_error(invoke(*embed, "--model", "litemedsam", "--artefact", str(copy)), "exported for model")
    with open(copy, "ab") as handle:
        handle.write(b"\0")
    user_error(invoke(*embed, "--model", "tiny", "--artefact", str(copy)), "sidecar")
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").rglob("*.npy"))


def test_cache_of_another_model_and_truncated_shard(phantom, tmp_path):
    cache = tmp_path / "cache"
    list_file = tmp_path / "one.list"
    list_file.write_text(sorted(p.name for p in phantom.iterdir() if p.is_dir())[0] + "\n")
    base = ["--data", str(phantom), "--list", str(list_file)]
    assert invoke("embed", *base, "--model", "tiny", "--every", "4", "--cache", str(cache)).returncode == 0
    user_error(invoke("embed", *base, "--model", "litemedsam", "--every", "4", "--cache", str(cache)),
               "fingerprint")
    shard = sorted((cache / "shards").glob("*.npy"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    user_error(invoke("pseudo-label", "--cache", str(cache), *base, "--out", str(tmp_path / "p")),
               "truncated or corrupt")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(phantom, tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "--data", str(phantom), "--labeled", "2", "--val", "1", "--method", "sup",
                     "--iterations", "50", "--lr", "1e30", "--save-every", "1", "--out", str(run))
    line = user_error(result, "the loss became nan at iteration")
    kept = iteration_checkpoints(run)
    assert kept and kept[-1][1].name in line
    state = read_checkpoint(kept[-1][1])
    assert all(torch.isfinite(v).all() for v in state["student"].values() if v.is_floating_point())
    assert not list((run / "checkpoints").glob(".*tmp*")) and not (run / "checkpoints" / "final.pt").exists()


def _file_size_limit(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow  # real runs on a full file system, in subprocesses (~18 s)
def test_a_full_disk_leaves_nothing_half_written(phantom, tmp_path):
    """The file system refusing a write (a per-file size limit stands in for a full disk) while a checkpoint or a
    cache shard is written: one error line, no partial file under a valid name, and the rerun completes."""
    run = tmp_path / "run"
    train = [sys.executable, "-m", "semisam_fast.cli", "train", "--data", str(phantom), "--labeled", "2", "--val",
             "1", "--method", "sup", "--iterations", "2", "--save-every", "1", "--out", str(run)]
    result = subprocess.run(train, capture_output=True, text=True, timeout=600, preexec_fn=_file_size_limit(1 << 20))
    user_error(result, "could not write", "iter_000001.pt")
    assert not list((run / "checkpoints").iterdir())
    assert subprocess.run(train, capture_output=True, timeout=600).returncode == 0
    assert (run / "checkpoints" / "final.pt").is_file()

    cache = tmp_path / "cache"
    embed = [sys.executable, "-m", "semisam_fast.cli", "embed", "--data", str(phantom), "--model", "tiny",
             "--every", "6", "--cache", str(cache)]
    result = subprocess.run(embed, capture_output=True, text=True, timeout=600, preexec_fn=_file_size_limit(1 << 20))
    user_error(result, "could not write", ".npy")
    assert not list((cache / "shards").glob("*.npy"))
    assert subprocess.run(embed, capture_output=True, timeout=600).returncode == 0
    assert EmbeddingCache(cache).verify() == []
