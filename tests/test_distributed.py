"""torchrun on the CPU (gloo, 2 processes): the sharded embedding build equals the single-process one bit for bit,
and a process killed mid-build is made good by a rerun."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from semisam_fast.cache import EmbeddingCache
from semisam_fast.data import make_phantom
from semisam_fast.distributed import World, deal_cases

from .conftest import run_cli

DRIVER = Path(__file__).with_name("kill_driver.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _embed_args(data: Path, cache: Path) -> list[str]:
    return ["embed", "--data", str(data), "--model", "tiny", "--batch", "4", "--cache", str(cache)]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "SEMISAM_DIST_BACKEND": "gloo"})


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
