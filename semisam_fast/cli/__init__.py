"""The `semisam-fast` command line: each command is a thin wrapper over the library (sam_commands.py,
student_commands.py, tool_commands.py); this module is the entry point and its exit-code contract."""
from __future__ import annotations

import errno
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError
from . import sam_commands, student_commands, tool_commands  # noqa: F401  (each registers its commands on `app`)
from .app import app

try:  # typer vendors its own copy of click since 0.2x; its exceptions are the ones raised
    from typer._click import exceptions as click_errors
except ImportError:  # older typer runs on click itself
    from click import exceptions as click_errors
NO_ARGS_IS_HELP = getattr(click_errors, "NoArgsIsHelpError", ())  # click >= 8.2

__all__ = ["app", "main"]

_USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG, errno.ENOENT,
                   errno.EISDIR, errno.ENOTDIR, errno.EEXIST}  # EEXIST: an --out that names a file


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame in this package (else the innermost frame): where a bug happened."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}semisam_fast{os.sep}" in f.filename] or frames
    if not ours:
        return "?"
    frame = ours[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


def _usage_error(exc: Exception) -> str:
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path.split(" ", 1) if ctx is not None else []
    command = f" {path[1]}" if len(path) == 2 else ""
    message = " ".join(exc.format_message().replace("Value error, ", "").split())
    return f"error: {message} (see semisam-fast{command} --help)"


def main(argv: Optional[list] = None) -> None:
    """Run the CLI. Exit 0: done; 2: a problem with the input, told in one line; 1: a bug, told in one line with
    where it happened; 130: interrupted. `--debug` anywhere on the line adds the traceback."""
    from ..runtime import tune_allocator

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    from .. import provenance

    provenance.COMMAND = ["semisam-fast", *args]  # what a run records as its command line
    _warnings_to_stderr()
    from .. import doctor

    doctor.ALLOCATOR = tune_allocator()
    code = 0
    try:
        result = typer.main.get_command(app).main(args=args, prog_name="semisam-fast", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except NO_ARGS_IS_HELP as exc:
        print(exc.ctx.get_help() if getattr(exc, "ctx", None) is not None else str(exc))
        code = 2
    except click_errors.ClickException as exc:  # usage errors: unknown or missing option, a value out of its range
        print(_usage_error(exc), file=sys.stderr)
        code = exc.exit_code
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        code = 130
    except UserError as exc:
        _debug(debug)
        print(f"error: {exc}", file=sys.stderr)  # one line, whatever the terminal width
        code = 2
    except OSError as exc:
        _debug(debug)
        if exc.errno in _USER_OS_ERRORS:  # the disk or the file system said no; writes are atomic, so nothing
            where = f": {exc.filename}" if exc.filename else ""  # half-written is left behind as if valid
            print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
            code = 2
        else:
            print(_bug(exc), file=sys.stderr)
            code = 1
    except MemoryError:
        _debug(debug)
        print("error: out of memory; use a smaller --batch or fewer cases", file=sys.stderr)
        code = 1
    except Exception as exc:  # anything else is a bug: say so, and where
        _debug(debug)
        print(_bug(exc), file=sys.stderr)
        code = 1
    if code == 0:
        from ..distributed import close_world, exit_launched

        if close_world():  # a torchrun launch leaves its process group, then skips the native teardown
            exit_launched(code)
    sys.exit(code)


def _warnings_to_stderr() -> None:
    """Warnings as `warning: ...` lines on stderr: the package's own (through its logger, so a host that configured
    logging, such as pytest, does not swallow them) and other libraries' (through the root logger)."""
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", handlers=[_StderrHandler()])
    package = logging.getLogger("semisam_fast")
    if not any(isinstance(h, _StderrHandler) for h in package.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.WARNING)
        package.propagate = False  # said once, not again by the root logger's handler


class _StderrHandler(logging.StreamHandler):
    """Warnings go to whatever sys.stderr is now (an in-process runner swaps it), not the stream of the first call."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _bug(exc: BaseException) -> str:
    message = " ".join(str(exc).split())[:300]
    return (f"internal error (a bug in semisam-fast, please report it): {type(exc).__name__}: {message} "
            f"at {_where(exc)}; rerun with --debug for the traceback")


def _debug(debug: bool) -> None:
    if debug:
        traceback.print_exc()
