"""Run `semisam-fast ARGS` and send the process a real SIGINT (a keyboard's Ctrl-C) in the middle of the N-th training
step, after its forward pass, before its optimiser step:
    python tests/interrupt_driver.py N ARGS...
A process of its own, so the signal meets only the command (in pytest's process it met the other tests' threads).
Only the moment of the signal is chosen here; everything else is the real command."""
from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    n, args = int(sys.argv[1]), sys.argv[2:]
    from semisam_fast import cli
    from semisam_fast.train import loop

    original, calls = loop.supervised_loss, [0]

    def loss_then_ctrl_c(*a, **kw):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGINT)  # delivered here, mid-step
        return original(*a, **kw)

    loop.supervised_loss = loss_then_ctrl_c
    cli.main(args)


if __name__ == "__main__":
    main()
