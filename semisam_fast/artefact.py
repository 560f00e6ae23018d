"""Exported artefacts describe themselves: a JSON sidecar of the same stem beside every exported file (formats.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UserError
from .fsutil import atomic_write, file_sha256



def sidecar_path(artefact: str | Path) -> Path:
    return Path(artefact).with_suffix(".json")


def external_data_path(artefact: str | Path) -> Path:
    """Where a > 2 GiB ONNX graph keeps its weights: one file beside it, its name + .data."""
    artefact = Path(artefact)
    return artefact.with_name(artefact.name + ".data")


def artefact_files(artefact: str | Path) -> list[Path]:
    """The artefact and, for > 2 GiB ONNX graphs, the one external-data file beside it."""
    artefact = Path(artefact)
    external = external_data_path(artefact)
    return [artefact, external] if external.is_file() else [artefact]


def artefact_sha256(artefact: str | Path) -> str:
    """sha256 over the artefact's files (one digest per file, joined): what the sidecar vouches for."""
    return ",".join(file_sha256(path) for path in artefact_files(artefact))


def write_sidecar(artefact: str | Path, meta: dict[str, Any]) -> Path:
    """Describe `artefact` (already written) in its sidecar, with the hash of its bytes as they are now."""
    meta["artefact_sha256"] = artefact_sha256(artefact)
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    return atomic_write(sidecar_path(artefact), lambda tmp: tmp.write_text(text))


def read_sidecar(artefact: str | Path) -> dict[str, Any]:
    """The sidecar of `artefact`, after checking the artefact's bytes are the ones it describes (a file swapped or
    damaged since export is refused before any runtime parses it)."""
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
    if not isinstance(meta, dict):
        raise UserError(f"sidecar {path} does not hold a JSON object")
    for key in ("model", "part", "precision", "checkpoint_sha256"):
        if key not in meta:
            raise UserError(f"sidecar {path} lacks '{key}'")
    if "artefact_sha256" not in meta:
        raise UserError(f"sidecar {path} records no artefact hash (an older export); re-export {artefact.name} "
                        "with `semisam-fast export`")
    if artefact_sha256(artefact) != meta["artefact_sha256"]:
        raise UserError(f"{artefact} is not the file its sidecar describes (sha256 differs): changed or damaged "
                        "since export; re-export it with `semisam-fast export`")
    return meta


def check_matches(meta: dict[str, Any], artefact: str | Path, model: str | None = None,
                  checkpoint_sha256: str | None = None, part: str | None = None) -> None:
    """Refuse an artefact made for another model, checkpoint or part than the one asked for."""
    for key, wanted in (("model", model), ("checkpoint_sha256", checkpoint_sha256), ("part", part)):
        if wanted is not None and meta.get(key) != wanted:
            raise UserError(f"{artefact} was exported for {key} {meta.get(key)!r}, not {wanted!r}")
