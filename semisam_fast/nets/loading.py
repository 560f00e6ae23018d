"""A trained student (or its EMA teacher) rebuilt from a training checkpoint: evaluation, pseudo-labelling from a
run and the bench scripts all load students here."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..checkpoints import read_checkpoint
from ..errors import UserError
from . import build_student, student_geometry, student_input

# prefixes that torch.compile / DataParallel put in front of every parameter name
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def _strip_prefixes(state: dict) -> dict:
    for prefix in _WRAPPER_PREFIXES:
        if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_student(checkpoint: str | Path, weights: str = "student", device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the student (or, with weights="teacher", its EMA teacher) from a training checkpoint.

    Returns the network on `device` in eval mode and the checkpoint's config. Any problem raises UserError."""
    path = Path(checkpoint)
    if weights not in ("student", "teacher"):
        raise UserError(f"weights must be 'student' or 'teacher', not {weights!r}")
    ckpt = read_checkpoint(path, device)
    missing = [k for k in ("config", weights) if k not in ckpt]
    if missing:
        raise UserError(f"checkpoint {path} lacks {', '.join(repr(k) for k in missing)}")
    config = ckpt["config"]
    if not isinstance(config, dict) or "student" not in config:
        raise UserError(f"checkpoint {path}: 'config' must be a dict naming the 'student' network")
    state = ckpt[weights]
    if state is None:
        raise UserError(f"checkpoint {path} holds no {weights} weights (trained without an EMA teacher?)")
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path}: {weights!r} is not a state_dict")
    size_key = student_geometry(config).config_key
    if size_key not in config:
        raise UserError(f"checkpoint {path}: config of a {config['student']} student lacks {size_key!r}")
    kwargs = config.get("student_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise UserError(f"checkpoint {path}: 'student_kwargs' must be a dict, got {type(kwargs).__name__}")
    channels = student_input(config).channels  # 1, or a 2.5D student's slice and its neighbours
    try:
        net = build_student(str(config["student"]), in_channels=channels, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:  # unknown names, or values no layer takes (base: -1)
        raise UserError(f"checkpoint {path}: bad student_kwargs {kwargs}: {' '.join(str(exc).split())[:200]}") \
            from None
    try:
        net.load_state_dict(_strip_prefixes(state))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise UserError(f"checkpoint {path}: {weights} weights do not fit a {config['student']} with {kwargs}: "
                        f"{' '.join(first[:3])}") from exc
    return net.to(device).eval(), config
