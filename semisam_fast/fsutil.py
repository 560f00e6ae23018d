"""The one way this project writes a file that others may read: temp file beside it, fsync, rename."""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from .errors import UserError


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call `writer(tmp)` on a temp file next to `path` (same extension), fsync, then os.replace
    it onto `path`, so readers only ever see the old file or the complete new one. The file gets the mode any other
    tool would give it (0666 less the process's umask), not the temp file's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        reason = _write_failure(exc)
        if reason is not None:
            raise UserError(f"could not write {path}: {reason}; nothing was written there (an older file, if any, "
                            "is unchanged)") from exc
        raise
    return path


def current_umask() -> int:
    """The process's file-creation mask (read by setting it and putting it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_failure(exc: BaseException) -> str | None:
    """Why a writer failed, when the file system refused it (disk full, size limit, permissions); None otherwise.
    torch.save's C++ writer reports a short write as a RuntimeError from its zip container."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, RuntimeError) and ("inline_container" in str(exc) or "PytorchStreamWriter" in str(exc)):
        return "the file system stopped the write part-way (disk full or file size limit)"
    return None


def check_outputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path], what: str = "--out") -> None:
    """Refuse, before anything is written, a run whose outputs would overwrite a file it reads or each other
    (compared as resolved paths, so a link or `a/../b` is no way around it)."""
    seen: dict[Path, Path] = {}
    for path in outputs:
        key = Path(path).resolve()
        if key in seen:
            raise UserError(f"{what} would write {path} twice (two outputs of this run have one name); "
                            "choose another name")
        seen[key] = Path(path)
    for path in inputs:
        key = Path(path).resolve()
        if key in seen:
            raise UserError(f"{what} would overwrite {path}, which this command reads; choose another {what}")


def remove_stale_temps(folder: Path) -> int:
    """Temp files a killed writer (kill -9 skips the cleanup above) left behind; returns how many."""
    stale = list(Path(folder).glob(".*.tmp-*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def json_safe(value: object) -> object:
    """JSON has no NaN: an undefined number (e.g. a distance to an empty mask) is written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (list, dict)):  # numpy scalars
        return json_safe(value.item())
    return value


def write_json(path: str | Path, payload: object) -> Path:
    """Strict JSON (NaN as null; paths and other objects as their str), written atomically."""
    text = json.dumps(json_safe(payload), indent=2, allow_nan=False, default=str) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
