"""Exported artefacts describe themselves: a JSON sidecar of the same stem beside every .onnx / .engine file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UserError
from .fsutil import atomic_write

ARTEFACT_SUFFIXES = (".onnx", ".engine")


def sidecar_path(artefact: str | Path) -> Path:
    return Path(artefact).with_suffix(".json")


def write_sidecar(artefact: str | Path, meta: dict[str, Any]) -> Path:
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    return atomic_write(sidecar_path(artefact), lambda tmp: tmp.write_text(text))


def read_sidecar(artefact: str | Path) -> dict[str, Any]:
    artefact = Path(artefact)
    if not artefact.is_file():
        raise UserError(f"artefact not found: {artefact}")
    path = sidecar_path(artefact)
    if not path.is_file():
        raise UserError(f"{artefact} has no sidecar {path.name}; re-export it with `semisam-fast export`")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"sidecar {path} is unreadable: {exc}") from None
    for key in ("model", "part", "precision", "checkpoint_sha256"):
        if key not in meta:
            raise UserError(f"sidecar {path} lacks '{key}'")
    return meta


def check_matches(meta: dict[str, Any], artefact: str | Path, model: str | None = None,
                  checkpoint_sha256: str | None = None, part: str | None = None) -> None:
    """Refuse an artefact made for another model, checkpoint or part than the one asked for."""
    for key, wanted in (("model", model), ("checkpoint_sha256", checkpoint_sha256), ("part", part)):
        if wanted is not None and meta.get(key) != wanted:
            raise UserError(f"{artefact} was exported for {key} {meta.get(key)!r}, not {wanted!r}")
