"""What made a run: package versions, the command line, the source's git commit, start and end times (recorded in
run.json by `checkpoints.keep_run_record` / `finish_run_record`), and the run's `train.log`."""
from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

# distribution name -> module name (a loaded module's own __version__ wins: torch's names its build, "+cu130")
PACKAGES = {"semisam-fast": "semisam_fast", "torch": "torch", "numpy": "numpy", "scipy": "scipy",
            "nibabel": "nibabel", "h5py": "h5py", "onnx": "onnx", "onnxruntime": "onnxruntime",
            "openvino": "openvino", "segment-anything": "segment_anything", "typer": "typer"}
COMMAND: list[str] | None = None  # the command line the entry point runs (cli.main sets it), else sys.argv
RUN_LOG = "semisam_fast.run"  # the logger whose lines go to a run's train.log
LOG_NAME = "train.log"


def now() -> str:
    """UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str | None]:
    """Installed versions of Python and the packages that change a run's numbers (None: not installed)."""
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name, module in PACKAGES.items():
        loaded = getattr(sys.modules.get(module), "__version__", None)
        try:
            found[name] = str(loaded) if loaded else metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_commit(where: str | Path | None = None) -> str | None:
    """The commit of the git checkout holding this package's source (with "-dirty" when it has uncommitted changes),
    or None when it is not in one (an installed wheel) or git is absent."""
    folder = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def describe(command: list[str] | None = None) -> dict:
    """This session of a run: versions, command line (default: this process's), git commit, start time."""
    command = command if command is not None else COMMAND if COMMAND is not None else sys.argv
    return {"started": now(), "finished": None, "command": list(command),
            "git_commit": git_commit(), "versions": versions()}


@contextlib.contextmanager
def run_log(run_dir: str | Path) -> Iterator[logging.Logger]:
    """Lines logged to `RUN_LOG` meanwhile are appended to `<run_dir>/train.log` (a resumed run adds to it)."""
    path = Path(run_dir) / LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(RUN_LOG)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the file only; the terminal has its own lines
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()
