"""Command-line flags made from a config dataclass's option declarations (options.py): the flag, its type or
choices and its help come from the field, so a new option or a changed default needs no CLI edit. Every generated
flag defaults to None ("not given"); the command receives the given ones as one dict."""
from __future__ import annotations

import functools
import inspect
from dataclasses import fields
from typing import Callable, Literal, Optional

import typer

from .options import flag, option_specs

_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "int | None": int, "float | None": float,
          "str | None": str}


def option_parameters(cls, prefix: str = "",
                      default_text: Callable[[str], str] | None = None) -> list[inspect.Parameter]:
    """One keyword parameter per CLI option of `cls` (named `prefix` + field); `default_text(field)` ends its help
    with the real default (for a training run: the presets')."""
    annotations = {f.name: f.type for f in fields(cls)}
    parameters = []
    for name, spec in option_specs(cls).items():
        if not spec.cli:
            continue
        kind = _TYPES[str(annotations[name])]
        help_text = spec.help + (f" ({default_text(name)})" if default_text else "")
        names = [f"{flag(prefix + name)}/--no-{flag(prefix + name)[2:]}"] if kind is bool else [flag(prefix + name)]
        annotation = Optional[Literal[spec.choices]] if spec.choices else Optional[kind]
        bounds = {"min": spec.at_least, "max": spec.at_most} if kind in (int, float) and not spec.choices else {}
        parameters.append(inspect.Parameter(prefix + name, inspect.Parameter.KEYWORD_ONLY,
                                            default=typer.Option(None, *names, help=help_text, **bounds),
                                            annotation=annotation))
    return parameters


def with_options(into: str, parameters: list[inspect.Parameter]):
    """Decorate a command: `parameters` join its own flags, and the command gets the given ones (not None) as the
    dict `into`, keyed by parameter name."""
    names = [p.name for p in parameters]

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values() if p.name != into]

        @functools.wraps(command)
        def run(**kwargs):
            given = {n: v for n in names if (v := kwargs.pop(n)) is not None}
            return command(**kwargs, **{into: given})

        run.__signature__ = signature.replace(parameters=own + parameters)
        run.__annotations__ = {p.name: p.annotation for p in own + parameters}
        del run.__wrapped__  # typer must read the new signature, not the wrapped one
        return run

    return decorate
