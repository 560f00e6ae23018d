"""The one way this project writes a file that others may read: temp file beside it, fsync, rename."""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call `writer(tmp)` on a temp file next to `path` (same extension), fsync, then os.replace
    it onto `path`, so readers only ever see the old file or the complete new one."""
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
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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
