"""Run `semisam-fast ARGS` and SIGKILL the process at the N-th reach of a point, as a power cut would:
    python tests/kill_driver.py POINT N ARGS...
POINT: step (after the N-th training step, before anything of it is saved), checkpoint (the N-th torch.save has
written half of its temp file), round (the N-th pseudo-label round has computed its targets, not yet stored),
shard (the N-th embedding shard of this process is written). `POINT@R` kills only the process of torchrun rank R.
Only the moment of the kill is chosen here; everything else is the real command."""
from __future__ import annotations

import os
import signal
import sys


def _kill_on(owner: object, name: str, n: int, half_written: bool = False) -> None:
    original = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == n:
            if half_written:  # torch.save(state, tmp): cut the file as a crash mid-write would
                path = args[1]
                os.truncate(path, os.path.getsize(path) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, wrapper)


def main() -> None:
    point, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    point, _, rank = point.partition("@")
    import torch

    from semisam_fast import cli
    from semisam_fast.cache import EmbeddingCache
    from semisam_fast.train import loop, methods

    if rank and os.environ.get("RANK", "0") != rank:
        cli.main(args)
        return
    if point == "step":
        _kill_on(loop.Trainer, "step", n)
    elif point == "checkpoint":
        _kill_on(torch, "save", n, half_written=True)
    elif point == "round":
        _kill_on(methods, "make_round", n)
    elif point == "shard":
        _kill_on(EmbeddingCache, "write", n)
    else:
        raise SystemExit(f"unknown point {point!r}")
    cli.main(args)


if __name__ == "__main__":
    main()
