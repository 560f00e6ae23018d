"""kill -9 at several points of `train` (a step, a checkpoint write, a pseudo-label round), then the same command
again: the run resumes and ends bit-identical to an uninterrupted one, and no checkpoint is ever corrupt."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from semisam_fast.checkpoints import iteration_checkpoints, read_checkpoint

from .conftest import run_cli

pytestmark = pytest.mark.slow  # kill -9 of real runs in subprocesses (~55 s here); .ci/run runs them

DRIVER = Path(__file__).with_name("kill_driver.py")


@pytest.fixture(scope="module")
def tiny_cache(phantom, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("crash") / "cache"
    result = run_cli("embed", "--data", str(phantom), "--model", "tiny", "--every", "2", "--cache", str(cache))
    assert result.returncode == 0, result.stderr
    return cache


def _train_args(phantom: Path, cache: Path, out: Path) -> list[str]:
    # rounds at 2, 4, 6 and checkpoints at 2, 4, 6, 8: every kill point falls between two of each
    return ["train", "--data", str(phantom), "--labeled", "2", "--val", "1", "--method", "semisam", "--cache",
            str(cache), "--iterations", "8", "--sam-round-every", "2", "--save-every", "2", "--out", str(out)]


def _same(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def reference(phantom, tiny_cache, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("crash") / "reference"
    result = run_cli(*_train_args(phantom, tiny_cache, out))
    assert result.returncode == 0, result.stderr
    return read_checkpoint(out / "checkpoints" / "final.pt")


@pytest.mark.parametrize("point, n, resumes_from", [("step", 5, 4), ("checkpoint", 2, 2), ("round", 2, 2)])
def test_kill_9_then_rerun_ends_bit_identical(phantom, tiny_cache, reference, tmp_path, point, n, resumes_from):
    out = tmp_path / "run"
    args = _train_args(phantom, tiny_cache, out)
    killed = subprocess.run([sys.executable, str(DRIVER), point, str(n), *args], capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -9, killed.stderr  # it really died by SIGKILL, at the chosen point
    folder = out / "checkpoints"
    assert [it for it, _ in iteration_checkpoints(out)] == list(range(2, resumes_from + 1, 2))
    assert not (folder / "final.pt").exists()
    if point == "checkpoint":  # the half-written temp file is there, under a name nothing reads as a checkpoint
        assert list(folder.glob(".iter_*.tmp-*"))
    for _, path in iteration_checkpoints(out):
        read_checkpoint(path)  # every checkpoint a crash left is whole

    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert not list(folder.glob(".*.tmp-*"))
    _same(read_checkpoint(folder / "final.pt"), reference)
