"""Students, losses, the SAM term and the training loop: `build_trainer` then `Trainer.run` is `semisam-fast train`.

The configuration (config.py) imports without torch, so the CLI can build its flags from it; the rest loads on first
use."""
from __future__ import annotations

from .config import PRESETS, TrainConfig, preset

__all__ = ["METHODS", "PRESETS", "TrainConfig", "Trainer", "build_trainer", "latest_checkpoint", "preset",
           "with_classes"]

_LAZY = {"METHODS": ".methods", "Trainer": ".loop", "build_trainer": ".build", "with_classes": ".build",
         "latest_checkpoint": "..checkpoints"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name], __name__), name)
