"""Student segmentation networks (2D U-Net, 3D V-Net) and their name registry. Training builds them and evaluation
rebuilds them from a checkpoint's config, so both import from here (neither from the other)."""
from __future__ import annotations

from typing import Callable

from torch import nn

from .. import choices
from ..errors import UserError
from .unet2d import UNet2D
from .vnet import VNet

__all__ = ["STUDENTS", "UNet2D", "VNet", "build_student", "load_student"]

STUDENTS: dict[str, Callable[..., nn.Module]] = {"unet2d": UNet2D, "vnet": VNet}


def build_student(name: str, in_channels: int = 1, n_classes: int = 2, **kw) -> nn.Module:
    """Build a student network by registry name ("unet2d" or "vnet"); extra kwargs go to the constructor."""
    try:
        cls = STUDENTS[name.lower()]
    except KeyError:
        raise UserError(f"unknown student network {name!r}; choose one of {sorted(STUDENTS)}") from None
    return cls(in_channels=in_channels, n_classes=n_classes, **kw)

assert tuple(STUDENTS) == choices.TRAIN["student"], "choices.TRAIN['student'] must list the registered students"

from .loading import load_student  # noqa: E402  (it builds students with build_student, defined above)
