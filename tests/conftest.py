"""Shared fixtures. Real computations only: the genuine LiteMedSAM weights, onnxruntime, torch, h5py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from semisam_fast.samples import LA_ENV, default_la_dir

# The project's machines keep LA beside the repository; the library only reads $SEMISAM_LA_DIR, so the tests (which
# may know this layout) point it there when it is unset, for every test and every command they run.
_BESIDE = Path(__file__).resolve().parents[2] / "shared" / "data" / "la2018"
if not os.environ.get(LA_ENV) and (_BESIDE / "train.list").is_file():
    os.environ[LA_ENV] = str(_BESIDE)


@pytest.fixture(scope="session")
def la_dir() -> Path:
    path = default_la_dir()
    if path is None:
        pytest.skip("LA data not found (set SEMISAM_LA_DIR)")
    return path


@pytest.fixture(scope="session")
def phantom(tmp_path_factory) -> Path:
    from semisam_fast.data import make_phantom

    return make_phantom(tmp_path_factory.mktemp("phantom"), n_cases=6, shape=(96, 96, 12), seed=0)


@pytest.fixture(scope="session")
def tiny_artefacts(tmp_path_factory) -> dict:
    from semisam_fast.export import export

    out = tmp_path_factory.mktemp("tiny_engines")
    return {r.report.part: r for r in export("tiny", out=out)}


@pytest.fixture(scope="session")
def lite_artefacts(tmp_path_factory) -> dict:
    from semisam_fast.export import export

    out = tmp_path_factory.mktemp("lite_engines")
    return {r.report.part: r for r in export("litemedsam", out=out)}


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess (exit codes and stderr as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "semisam_fast.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=900)


def invoke(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The console entry point (`cli.main`, with its exit-code contract) run in this process by typer's runner,
    which gives it its own stdin/stdout/stderr and environment: for CLI checks where a separate process is not the
    point (it saves the interpreter and torch start-up of `run_cli`). Returns what `run_cli` returns."""
    from typer.testing import CliRunner

    from semisam_fast import cli

    code = 0
    with CliRunner().isolation(env=env) as (stdout, stderr, _):
        try:
            cli.main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        return subprocess.CompletedProcess(["semisam-fast", *args], code, stdout.getvalue().decode(),
                                           stderr.getvalue().decode())



def whole_and_resumed(make, root: Path, until: int):
    """The run `make(run_dir)` builds, trained in one go (in root/whole) and stopped at `until` then resumed (in
    root/part); asserts the resumed student's weights equal the whole run's bit for bit. Returns both trainers."""
    import torch

    whole = make(root / "whole")
    whole.run(progress=False)
    make(root / "part").run(until=until, progress=False)
    resumed = make(root / "part")
    resumed.run(progress=False)
    for x, y in zip(whole.state()["student"].values(), resumed.state()["student"].values()):
        assert torch.equal(x, y)
    return whole, resumed
