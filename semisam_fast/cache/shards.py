"""What a cache is made of: its fingerprint (everything that changes the numbers), shards (one encoder batch of one
case: rows, their slice indices, a checksum and the source volume's record) and their sidecar records."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

FORMAT_VERSION = 1
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def fingerprint(model: str, checkpoint_sha256: str, image_size: int, normalization: str, precision: str,
                encoder_sha256: str | None = None) -> dict:
    """Everything that changes the numbers in the cache. Two caches with different fingerprints never mix.
    `encoder_sha256`: the bytes of an exported encoder (not given for torch, where the checkpoint's hash is the
    encoder's identity), so embeddings of one file are never cached under another's name."""
    found = {"model": model, "checkpoint_sha256": checkpoint_sha256, "image_size": image_size,
             "normalization": normalization, "precision": precision, "store_dtype": "float16",
             "format": FORMAT_VERSION}
    if encoder_sha256 is not None:  # absent for torch: caches built before the key existed stay valid
        found["encoder_sha256"] = encoder_sha256
    return found


def shard_stem(case_id: str) -> str:
    """The case's part of its shard names, one per case: a name made safe for a file gets a hash of the real id
    after a `~` (never in a safe name), so `a b` and `a_b` never share a shard."""
    safe = _SAFE.sub("_", case_id)
    if safe == case_id:
        return case_id
    return f"{safe}~{hashlib.sha256(case_id.encode()).hexdigest()[:10]}"


@dataclass
class Shard:
    case_id: str
    slices: list[int]  # slice index of each row
    height: int
    width: int
    npy: Path
    sha256: str
    source: dict  # {"shape": [H, W, Z], "sha256": ...} of the volume its rows came from


def source_record(image: np.ndarray) -> dict:
    """What a cache row remembers of the volume it came from: its shape and a hash of its voxels (float32, C order),
    computed once per case (about 0.1 s for a LA volume)."""
    array = np.ascontiguousarray(image, dtype=np.float32)
    return {"shape": [int(n) for n in array.shape], "sha256": hashlib.sha256(array.tobytes()).hexdigest()}


def shard_from(info: object, info_path: Path) -> Shard:
    """A shard's record from its sidecar (or the index), refused in one line when it is not one of embed's."""
    ok = (isinstance(info, dict) and isinstance(info.get("case_id"), str) and isinstance(info.get("sha256"), str)
          and isinstance(info.get("slices"), list) and all(isinstance(z, int) for z in info["slices"])
          and info["slices"] and all(isinstance(info.get(k), int) for k in ("height", "width")))
    if not ok:
        raise UserError(f"cache shard index {info_path} is corrupt; delete it and its .npy and re-run embed")
    source = info.get("source")
    if not (isinstance(source, dict) and isinstance(source.get("shape"), list)
            and isinstance(source.get("sha256"), str)):
        raise UserError(f"cache shard {info_path} records no source volume (a cache of an older semisam-fast): re-run "
                        "embed into a new --cache folder")
    return Shard(info["case_id"], info["slices"], info["height"], info["width"], info_path.with_suffix(".npy"),
                 info["sha256"], source)


def diff(have: dict, want: dict) -> str:
    keys = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    return "; ".join(f"{k}: cache has {have.get(k)!r}, asked {want.get(k)!r}" for k in keys[:3])
