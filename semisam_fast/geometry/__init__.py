"""Student geometries: how a student's samples are stored, drawn, predicted and given SAM's targets (`base.py` has
the contract). `nets.STUDENTS` pairs each network with one of these."""
from .base import Batch, StudentGeometry
from .slices2d import SliceRef, SliceStore, Slices2D
from .volumes3d import VolumeStore, Volumes3D

__all__ = ["Batch", "SliceRef", "SliceStore", "Slices2D", "StudentGeometry", "VolumeStore", "Volumes3D"]
