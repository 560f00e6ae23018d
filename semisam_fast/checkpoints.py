"""A run folder's files: its record (`run.json`) and its checkpoints, written atomically, read without running
pickled code, found by name."""
from __future__ import annotations

import json
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from .errors import UserError
from .fsutil import atomic_write, json_safe, write_json

FOLDER = "checkpoints"
FINAL = "final.pt"
_ITER = re.compile(r"iter_(\d+)\.pt")


def keep_run_record(run_dir: str | Path, record: dict, write: bool = True, defaults: dict | None = None) -> Path:
    """`<run>/run.json` (data, split, config, and under "sessions" what ran each session: `provenance.describe`): a
    run folder that already holds a run with another config or other labelled cases is refused, naming the settings
    that differ (a rerun resumes the same run; it must not mix two); `write=False` only checks. A setting the old
    record lacks (added to the toolkit since) counts as its value in `defaults`, so an upgrade does not refuse a run
    it would train the same way. A resumed run keeps the earlier sessions and adds its own."""
    path = Path(run_dir) / "run.json"
    sessions: list = []
    if path.is_file():
        old = _read_record(path, "; it is not a run's record (use another --out)")
        differ = _differences(old, json_safe(record), json_safe(defaults or {}))
        if differ:
            raise UserError(f"{run_dir} holds a run with other settings ({differ}); resume it with the same options "
                            "or use another --out")
        sessions = old.get("sessions") or []
    if write:
        kept = {k: v for k, v in record.items() if k != "session"}
        write_json(path, {**kept, "sessions": sessions + ([record["session"]] if "session" in record else [])})
    return path


def _differences(old: dict, new: dict, defaults: dict) -> str:
    """`name: run has A, now B` for each config setting (and the labelled cases) that differs, the first three."""
    have, want = {**defaults, **(old.get("config") or {})}, new.get("config") or {}
    keys = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    said = [f"{k}: the run has {have.get(k)!r}, now {want.get(k)!r}" for k in keys]
    if old.get("labeled_cases") != new.get("labeled_cases"):
        said.append(f"labelled cases: the run has {old.get('labeled_cases')}, now {new.get('labeled_cases')}")
    return "; ".join(said[:3]) + (f"; and {len(said) - 3} more" if len(said) > 3 else "")


def finish_run_record(run_dir: str | Path, summary: dict | None = None) -> Path:
    """Stamp the end time (and `summary`: iterations, validation Dice) on the latest session of `<run>/run.json`."""
    from .provenance import now

    path = Path(run_dir) / "run.json"
    record = _read_record(path)
    sessions = record.get("sessions") or [{}]
    sessions[-1] = {**sessions[-1], "finished": now(), **(summary or {})}
    record["sessions"] = sessions
    return write_json(path, record)


def read_run_record(run_dir: str | Path) -> dict:
    """A run folder's `run.json` (data, split, config), or one clear error."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    path = run_dir / "run.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a training run (no run.json)")
    return _read_record(path)


def _read_record(path: Path, advice: str = "") -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}{advice}") from None
    if not isinstance(record, dict):
        raise UserError(f"{path} does not hold a JSON object{advice}")
    for key, kind in _RECORD_TYPES.items():  # a hand-edited record fails here, in one line, not deep in a command
        if record.get(key) is not None and not isinstance(record[key], kind):
            raise UserError(f"{path}: '{key}' must be {_KIND_NAMES[kind]}, not {record[key]!r}{advice}")
        if kind is list and any(not isinstance(c, str) for c in record.get(key) or []):
            raise UserError(f"{path}: '{key}' must list case ids (strings){advice}")
    return record


_RECORD_TYPES = {"data": str, "list": str, "cache": str, "config": dict, "labeled_cases": list,
                 "unlabeled_cases": list, "val_cases": list}
_KIND_NAMES = {str: "a path (string)", dict: "an object", list: "a list"}


def checkpoint_path(run_dir: str | Path, iteration: int | None = None) -> Path:
    """`<run>/checkpoints/iter_<N>.pt`, or `final.pt` when iteration is None."""
    name = FINAL if iteration is None else f"iter_{iteration:06d}.pt"
    return Path(run_dir) / FOLDER / name


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """torch.save into a temp file beside `path`, then rename: a crash leaves the old file or the new one."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_plain(path: str | Path, device: str = "cpu", mmap: bool = False) -> object:
    """torch.load with weights_only=True (tensors, numbers, strings and containers only, so a crafted file cannot
    run code), for every .pt/.pth this project reads: run and student checkpoints, SAM weights. Any failure is a
    UserError naming the file. mmap: tensors stay on disk until read (for a look at a file's plain data; only
    torch's zip format can be mapped, an older file is read whole)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:  # the file asks the unpickler for a function or class: a crafted file, never one of ours
            raise UserError(f"cannot read checkpoint {path}: refused, it names {found.group(1)}, which only a crafted "
                            "or foreign file does (checkpoints are read as tensors and plain data, never unpickled "
                            "as code)") from None
        raise UserError(f"cannot read checkpoint {path}: truncated, not a PyTorch weights file, or holding objects "
                        "other than tensors and plain data") from None
    except Exception as exc:  # zip/torch raise many types for a truncated or foreign file
        raise UserError(f"cannot read checkpoint {path}: truncated or not a PyTorch weights file "
                        f"({type(exc).__name__})") from None
    return state


def read_checkpoint(path: str | Path, device: str = "cpu") -> dict:
    """A run or student checkpoint's dict (see `load_plain`)."""
    state = load_plain(path, device)
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a training checkpoint (holds a {type(state).__name__}, not a dict)")
    return state


def iteration_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every `iter_<N>.pt` of a run, oldest first."""
    folder = Path(run_dir) / FOLDER
    found = [(int(m.group(1)), p) for p in folder.glob("iter_*.pt") if (m := _ITER.fullmatch(p.name)) and p.is_file()]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest `iter_<N>.pt` (what training resumes from), or None."""
    found = iteration_checkpoints(run_dir)
    return found[-1][1] if found else None


def find_checkpoint(run_dir: str | Path) -> Path:
    """What a finished or stopped run is evaluated with: `final.pt`, else the newest `iter_<N>.pt`."""
    final = checkpoint_path(run_dir)
    if final.is_file():
        return final
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise UserError(f"no checkpoint in {Path(run_dir) / FOLDER} (expected {FINAL} or iter_<N>.pt)")
    return latest
