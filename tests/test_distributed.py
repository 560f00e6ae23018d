"""torchrun on the CPU (gloo, 2 processes): the sharded embedding build equals the single-process one bit for bit,
and a process killed mid-build is made good by a rerun; DDP training with global batch B follows one process with
batch B, keeps the teacher identical in every process, shares the unlabelled cases out, resumes bit for bit, and a
two-process run resumes in one process."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from semisam_fast.cache import EmbeddingCache
from semisam_fast.checkpoints import read_checkpoint
from semisam_fast.data import make_phantom
from semisam_fast.distributed import World, deal_cases

from .conftest import run_cli
from .ddp_driver import digest

pytestmark = pytest.mark.slow  # torchrun launches of several processes (~110 s here); .ci/run runs them

DRIVER = Path(__file__).with_name("kill_driver.py")
DDP_DRIVER = Path(__file__).with_name("ddp_driver.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _embed_args(data: Path, cache: Path) -> list[str]:
    return ["embed", "--data", str(data), "--model", "tiny", "--batch", "4", "--cache", str(cache)]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    """A two-process launch. PYTHONFAULTHANDLER: a rank that aborts prints where its Python threads were (a rank
    once aborted natively in the interpreter's teardown after a finished run; `distributed.exit_launched`)."""
    env = {**os.environ, "SEMISAM_DIST_BACKEND": "gloo", "PYTHONFAULTHANDLER": "1"}
    return subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, timeout=600, env=env)


def _same_cache(a: Path, b: Path) -> None:
    names = sorted(p.name for p in (a / "shards").iterdir())
    assert names == sorted(p.name for p in (b / "shards").iterdir()) and names
    for name in names:
        if name.endswith(".npy"):
            np.testing.assert_array_equal(np.load(a / "shards" / name), np.load(b / "shards" / name))
        else:
            assert json.loads((a / "shards" / name).read_text()) == json.loads((b / "shards" / name).read_text())
    assert json.loads((a / "cache.json").read_text()) == json.loads((b / "cache.json").read_text())
    assert EmbeddingCache(a).verify() == [] and EmbeddingCache(b).verify() == []


@pytest.fixture(scope="module")
def uneven(tmp_path_factory) -> Path:
    """Five cases of three sizes: dealing them out must balance and cover each exactly once."""
    root = tmp_path_factory.mktemp("dist")
    for i, depth in enumerate((10, 6, 10, 3, 6)):
        made = make_phantom(root / f"p{i}", n_cases=1, shape=(64, 64, depth), seed=i)
        (made / "phantom_00").rename(root / f"case{i}")
    (root / "train.list").write_text("".join(f"case{i}\n" for i in range(5)))
    return root


@pytest.fixture(scope="module")
def single(uneven, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("dist") / "single"
    result = run_cli(*_embed_args(uneven, cache))
    assert result.returncode == 0, result.stderr
    return cache


def test_cases_are_dealt_largest_first_each_once():
    sizes = {"a": 10, "b": 6, "c": 10, "d": 3, "e": 6}
    parts = [deal_cases(sizes, World(rank, 2)) for rank in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(sizes)
    assert parts == [["a", "b", "d"], ["c", "e"]]  # loads 19 and 16
    assert deal_cases(sizes, World()) == ["a", "c", "b", "e", "d"]


def test_two_processes_build_the_single_process_cache(uneven, single, tmp_path):
    result = _torchrun("-m", "semisam_fast.cli", *_embed_args(uneven, tmp_path / "double"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "by 2 processes" in result.stderr
    _same_cache(single, tmp_path / "double")
    index = json.loads((tmp_path / "double" / "index.json").read_text())["shards"]
    assert len(index) == len(list((tmp_path / "double" / "shards").glob("*.npy")))


def test_a_process_killed_mid_build_then_a_rerun_gives_the_same_cache(uneven, single, tmp_path):
    cache = tmp_path / "killed"
    killed = _torchrun(str(DRIVER), "shard@1", "2", *_embed_args(uneven, cache))
    assert killed.returncode != 0  # rank 1 died after its second shard; torchrun stopped the launch
    partial = len(list((cache / "shards").glob("*.npy")))
    assert 0 < partial < len(list((single / "shards").glob("*.npy")))
    rerun = _torchrun("-m", "semisam_fast.cli", *_embed_args(uneven, cache))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _same_cache(single, cache)


# ---- DDP training ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory) -> tuple[Path, Path]:
    """Seven phantom cases (3 labelled, 3 unlabelled, 1 validation) and a tiny-model cache of them."""
    root = tmp_path_factory.mktemp("ddp")
    data = make_phantom(root / "data", n_cases=7, shape=(64, 64, 8), seed=3)
    result = run_cli("embed", "--data", str(data), "--model", "tiny", "--batch", "8", "--cache", str(root / "cache"))
    assert result.returncode == 0, result.stderr
    return data, root / "cache"


def _drive(processes: int, run: Path, data: Path, cache: str, until: int, *options: str) -> list[dict]:
    args = [str(DDP_DRIVER), str(run), str(data), cache, str(until), *options]
    if processes == 1:
        result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    else:
        result = _torchrun(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run / "processes.json").read_text())


def test_ddp_with_global_batch_b_follows_one_process_with_batch_b(ddp_data, tmp_path):
    data, _ = ddp_data
    options = ("method=sup", "iterations=5", "optimizer=sgd", "lr=0.01", "labelled_batch=4", "val_every=5",
               "save_every=5")
    alone = _drive(1, tmp_path / "one", data, "-", 5, *options)[0]
    pair = _drive(2, tmp_path / "two", data, "-", 5, *options)
    assert pair[0]["student"] == pair[1]["student"]  # DDP: the same weights in both processes
    np.testing.assert_allclose(pair[0]["losses"], alone["losses"], rtol=1e-5)
    one, two = torch.load(tmp_path / "one" / "student.pt"), torch.load(tmp_path / "two" / "student.pt")
    for name, value in one.items():  # weights and BatchNorm statistics (global over the processes)
        torch.testing.assert_close(two[name], value, rtol=0, atol=1e-4, msg=name)
    assert max(float((two[k].double() - v.double()).abs().max()) for k, v in one.items()) > 0  # two real launches


SEMISAM = ("--method", "semisam", "--iterations", "6", "--save-every", "2", "--sam-round-every", "2",
           "--sam-min-agreement", "0", "--unlabelled-every", "1")


def _train_cli(run: Path, data: Path, cache: Path) -> list[str]:
    return ["train", "--data", str(data), "--labelled", "3", "--val", "1", "--cache", str(cache), *SEMISAM,
            "--out", str(run)]


@pytest.fixture(scope="module")
def ddp_run(ddp_data, tmp_path_factory) -> Path:
    """A SemiSAM run (pseudo-label rounds) of two processes through the real command under torchrun."""
    data, cache = ddp_data
    run = tmp_path_factory.mktemp("ddp") / "whole"
    whole = _torchrun("-m", "semisam_fast.cli", *_train_cli(run, data, cache))
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "by 2 processes" in whole.stderr
    return run


def test_ddp_semisam_shares_cases_keeps_one_teacher_and_resumes_in_one_process(ddp_data, ddp_run, tmp_path):
    data, cache = ddp_data
    options = [f"{k.lstrip('-').replace('-', '_')}={v}" for k, v in zip(SEMISAM[::2], SEMISAM[1::2])]

    stopped = _drive(2, tmp_path / "part", data, str(cache), 4, *options)
    assert stopped[0]["teacher"] == stopped[1]["teacher"] and stopped[0]["student"] == stopped[1]["student"]
    assert stopped[0]["iteration"] == 4
    mine = [set(p["unlabelled"]) for p in stopped]
    assert not mine[0] & mine[1] and mine[0] | mine[1] == {"phantom_03", "phantom_04", "phantom_05"}
    assert [set(p["targets"]) for p in stopped] == mine  # each process made the round targets of its own cases
    checkpoint = read_checkpoint(tmp_path / "part" / "checkpoints" / "iter_000004.pt", "cpu")
    assert checkpoint["processes"] == 2 and len(checkpoint["process_rng"]) == 2
    assert set(checkpoint["sam_targets"]) == mine[0] | mine[1]
    shutil.copytree(tmp_path / "part", tmp_path / "alone")

    resumed = _drive(2, tmp_path / "part", data, str(cache), 6, *options)  # same number of processes: exact
    final = read_checkpoint(ddp_run / "checkpoints" / "final.pt", "cpu")
    for key in ("student", "teacher"):
        assert resumed[0][key] == resumed[1][key]
        assert resumed[0][key] == digest(final[key]), key

    alone = run_cli(*_train_cli(tmp_path / "alone", data, cache))  # a two-process run goes on in one process
    assert alone.returncode == 0, alone.stderr[-3000:]
    final = read_checkpoint(tmp_path / "alone" / "checkpoints" / "final.pt", "cpu")
    assert final["iteration"] == 6 and final["processes"] == 1
    assert set(final["sam_targets"]) == {"phantom_03", "phantom_04", "phantom_05"}
    assert [h["iteration"] for h in final["history"]] == [6]


@pytest.mark.parametrize("prompt", ["gt-box", "teacher"])
def test_two_process_pseudo_label_writes_the_single_process_masks_and_report(ddp_data, ddp_run, tmp_path, prompt):
    data, cache = ddp_data
    args = ["pseudo-label", "--cache", str(cache), "--data", str(data), "--prompt", prompt]
    if prompt == "teacher":
        args += ["--run-dir", str(ddp_run)]  # torchrun would take --run for its own --run-path
    alone = run_cli(*args, "--out", str(tmp_path / "one"))
    assert alone.returncode == 0, alone.stderr
    pair = _torchrun("-m", "semisam_fast.cli", *args, "--out", str(tmp_path / "two"))
    assert pair.returncode == 0, pair.stderr[-3000:]
    assert "7 mask volumes" in pair.stderr and "by 2 processes" in pair.stderr
    one, two = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    assert two["cases"] == one["cases"] and two.get("summary") == one.get("summary") and len(one["cases"]) == 7
    assert len(two["overlays"]) == len(one["overlays"])
    masks = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").glob("*/mask.h5"))
    assert len(masks) == 7
    for mask in masks:
        assert (tmp_path / "one" / mask).read_bytes() == (tmp_path / "two" / mask).read_bytes(), mask
