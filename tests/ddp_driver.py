"""Train under torchrun (or alone) and report what every process holds, for tests/test_distributed.py:
    python tests/ddp_driver.py RUN_DIR DATA CACHE|- UNTIL KEY=VALUE...
KEY=VALUE override the preset (preset=NAME, default la-cpu; ints, floats and words). Rank 0 writes RUN_DIR/processes.json: per process the
hash of its student and teacher, its unlabelled cases, its losses and whose round targets it holds. The training
itself is the library's (`build_trainer` + `Trainer.run`); nothing is stubbed."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def digest(state: dict | None) -> str | None:
    if state is None:
        return None
    return hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes() for v in state.values())).hexdigest()


def main() -> None:
    import torch

    from semisam_fast.distributed import close_world, exit_launched, world_from_env
    from semisam_fast.train import build_trainer, preset

    run_dir, data, cache, until, *pairs = sys.argv[1:]
    overrides = {k: _value(v) for k, v in (p.split("=", 1) for p in pairs)}
    labelled = overrides.pop("labelled", 3)
    world = world_from_env()
    config = preset(overrides.pop("preset", "la-cpu"), **overrides)
    trainer = build_trainer(config, data, None, labeled=labelled, val=1, run_dir=run_dir,
                            cache=None if cache == "-" else cache, tensorboard=False, world=world)
    losses = []
    step = trainer.step

    def logged_step():
        logs = step()
        losses.append(logs["loss"])
        return logs

    trainer.step = logged_step
    trainer.run(until=int(until), progress=False)
    mine = {"rank": world.rank, "student": digest(trainer.student.state_dict()),
            "teacher": digest(trainer.teacher.state_dict() if trainer.teacher is not None else None),
            "unlabelled": trainer.unlabelled_ids, "losses": losses, "iteration": trainer.iteration,
            "targets": sorted(trainer._round_parts() or {})}
    everyone = world.gather(mine)
    if world.leader:
        torch.save(trainer.student.state_dict(), Path(run_dir) / "student.pt")
        (Path(run_dir) / "processes.json").write_text(json.dumps(everyone))
    if close_world():
        exit_launched(0)  # as the CLI does after a torchrun launch


if __name__ == "__main__":
    main()
