"""`train --config run.toml`: any `TrainConfig` option (and `preset`) from a TOML file, checked by name and type
before a run starts; the flags given on the command line override it (`cli.train`)."""
from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

from ..errors import UserError
from ..target_options import TargetOptions
from .config import TARGETS_PREFIX, TrainConfig

# a field's annotation -> the TOML value types it takes (an int is a valid float)
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,), "list": (list,)}


def read_config_file(path: str | Path) -> dict:
    """The options of a TOML file, as `train.preset(...)` takes them: top-level keys named as `TrainConfig`'s fields
    (`lr = 0.01`, `student_kwargs = {base = 16}`; the SAM target options flat, `sam_margin = 4`, as the flags) and
    optionally `preset = "la-cpu"` and `sam_recipe = "adapted"`. An unknown key, a value of the wrong type or a file that is not TOML is one
    UserError naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read config file {path}: {exc}") from None
    known = {f.name: str(f.type) for f in fields(TrainConfig) if f.name != "targets"}
    known.update({TARGETS_PREFIX + f.name: str(f.type) for f in fields(TargetOptions)})  # flat, as the flags
    for key, value in data.items():
        if key in ("preset", "sam_recipe"):
            if not isinstance(value, str):
                raise UserError(f"{path}: {key} must be a string, got {value!r}")
            continue
        if key not in known:
            raise UserError(f"{path}: unknown option {key!r} (the options are TrainConfig's: "
                            f"{', '.join(sorted(known))})")
        allowed = tuple(t for part in known[key].split("|") for t in _TYPES.get(part.strip(), ()))
        if allowed and (not isinstance(value, allowed) or isinstance(value, bool) and bool not in allowed):
            raise UserError(f"{path}: {key} must be {known[key]}, got {value!r}")
    return dict(data)
