"""Ctrl-C at a step boundary: the first SIGINT asks a loop to stop after the step it is in, a second one stops it at
once. A checkpoint written mid-step would hold a state no uninterrupted run ever had (BatchNorm and the random
streams one batch ahead of the recorded iteration), so the loop saves only between steps."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator


class Interrupted(KeyboardInterrupt):
    """Stopped by Ctrl-C at a step boundary; the message says where and how to resume (the CLI exits 130)."""


@contextlib.contextmanager
def stop_between_steps(enabled: bool = True) -> Iterator[Callable[[], bool]]:
    """Yields `requested()`: True once Ctrl-C was pressed. Not enabled, or outside the main thread (where Python
    delivers signals), Ctrl-C interrupts as usual and `requested()` stays False."""
    requested = [False]
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame) -> None:
        if requested[0]:  # pressed twice: stop now, without saving
            raise KeyboardInterrupt
        requested[0] = True
        print("stopping after this step (Ctrl-C again to stop at once, without saving it)", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: requested[0]
    finally:
        signal.signal(signal.SIGINT, previous)
