"""Students: the registry of networks (2D U-Net, 3D V-Net), each paired with its geometry (`geometry/`). Training
builds them and evaluation rebuilds them from a checkpoint's config, so both import from here (neither from the
other). Adding a student is one `register_student` call."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from .. import choices
from ..data.student_input import StudentInput
from ..errors import UserError
from ..geometry import Slices2D, StudentGeometry, Volumes3D
from .unet2d import UNet2D
from .vnet import VNet

__all__ = ["STUDENTS", "Student", "UNet2D", "VNet", "build_student", "load_student", "register_student",
           "student_geometry", "student_input"]


@dataclass(frozen=True)
class Student:
    network: Callable[..., nn.Module]  # called with in_channels, n_classes and the run's student_kwargs
    geometry: StudentGeometry


STUDENTS: dict[str, Student] = {"unet2d": Student(UNet2D, Slices2D()), "vnet": Student(VNet, Volumes3D())}


def register_student(name: str, network: Callable[..., nn.Module], geometry: StudentGeometry) -> None:
    """Add a student (a network and its geometry): `--student NAME` then trains, evaluates and predicts with it."""
    STUDENTS[name.lower()] = Student(network, geometry)


def _entry(name: object) -> Student:
    try:
        return STUDENTS[str(name).lower()]
    except KeyError:
        raise UserError(f"unknown student network {name!r}; choose one of {sorted(STUDENTS)}") from None


def build_student(name: str, in_channels: int = 1, n_classes: int = 2, **kw) -> nn.Module:
    """Build a student network by registry name; extra kwargs go to the constructor."""
    return _entry(name).network(in_channels=in_channels, n_classes=n_classes, **kw)


def student_geometry(config: dict) -> StudentGeometry:
    """The geometry of the student a run's (or a checkpoint's) config names."""
    return _entry(config.get("student")).geometry


def student_input(config: dict) -> StudentInput:
    """How a volume becomes this run's student's input (normalisation, and the 2D canvas size), from its config."""
    return student_geometry(config).student_input(config)


assert tuple(STUDENTS) == choices.STUDENTS, "choices.STUDENTS must list the built-in students"

from .loading import load_student  # noqa: E402  (it builds students with build_student, defined above)
