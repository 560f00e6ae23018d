"""Options as data: a config dataclass declares each option once (default, help, allowed values, range) with
`option(...)`; `check_options` validates an instance from that declaration and the CLI builds its flags from it
(cli_options.py). Free of heavy imports, so the CLI reads the declarations without loading torch."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .errors import UserError

OPTION = "option"  # the dataclass field metadata key


@dataclass(frozen=True)
class OptionSpec:
    help: str
    choices: tuple | None = None
    at_least: float | None = None  # inclusive lower bound
    at_most: float | None = None  # inclusive upper bound
    cli: bool = True  # offered as a command-line flag (dicts and lists are TOML-only)


def option(default: Any = None, help: str = "", *, factory=None, choices: tuple | None = None,
           at_least: float | None = None, at_most: float | None = None, cli: bool = True):
    """A dataclass field with its option spec; `factory` for mutable defaults."""
    spec = {OPTION: OptionSpec(help, choices, at_least, at_most, cli)}
    if factory is not None:
        return field(default_factory=factory, metadata=spec)
    return field(default=default, metadata=spec)


def option_specs(cls) -> dict[str, OptionSpec]:
    """The declared options of a config dataclass, by field name, in declaration order."""
    return {f.name: f.metadata[OPTION] for f in fields(cls) if OPTION in f.metadata}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_options(config, prefix: str = "") -> None:
    """UserError naming the flag (`prefix` + field name) of the first value outside its declared choices or range;
    nan fails every range."""
    for name, spec in option_specs(type(config)).items():
        value = getattr(config, name)
        if value is None:
            continue
        if spec.choices is not None and value not in spec.choices:
            raise UserError(f"{flag(prefix + name)} must be one of {', '.join(map(str, spec.choices))}, not {value!r}")
        low, high = spec.at_least, spec.at_most
        if (low is not None and not value >= low) or (high is not None and not value <= high):
            wanted = (f"in [{low:g}, {high:g}]" if low is not None and high is not None
                      else f"at least {low:g}" if low is not None else f"at most {high:g}")
            raise UserError(f"{flag(prefix + name)} must be {wanted}, got {value}")
