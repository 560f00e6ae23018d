"""The typer app and what every command shares: its one-line messages on stderr."""
from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SemiSAM with an exported, batched, cached Segment Anything Model. Errors are one line "
                       "(exit 2: fix the input; exit 1: a bug); add --debug anywhere for the traceback.")
console = Console(stderr=True)


def log(message: str) -> None:
    console.print(message, highlight=False, soft_wrap=True)  # one line per message, for logs and grep


def by_world(world) -> str:
    """ " by N processes" under torchrun, for the closing line of a command (which rank 0 alone prints)."""
    return f" by {world.size} processes" if world.distributed else ""
