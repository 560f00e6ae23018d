"""A training run's whole state: what a checkpoint holds, how it is written, and how a run resumes from it bit for
bit (under torchrun: every process's random streams and round targets gathered into rank 0's file)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoints import checkpoint_path, read_checkpoint, save_checkpoint
from ..distributed import rank_seed
from ..errors import UserError


class Checkpointing:
    """The Trainer's state methods (a mixin: they read the trainer's student, teacher, optimizer and streams)."""

    # ---- state ---------------------------------------------------------------------------------------------------
    def _own_rng(self) -> dict:
        return {"torch": torch.get_rng_state(), "generator": self.own_generator.get_state()}

    def _round_parts(self) -> dict | None:
        return None if self.sam_table is None else self.geometry.table_parts(self.sam_table, self.unlabelled)

    def state(self) -> dict:
        """The whole run (collective under torchrun: every process calls it; the full state is rank 0's, with every
        process's random streams and round targets gathered into it)."""
        own = self.world.gather({"rng": self._own_rng(), "targets": self._round_parts()})
        state = {"student": self.student.state_dict(),
                 "teacher": self.teacher.state_dict() if self.teacher is not None else None,
                 "optimizer": self.optimizer.state_dict(), "iteration": self.iteration,
                 "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state()},
                 "config": self.settings, "history": self.history, "processes": self.world.size}
        if own is None:  # not rank 0
            return state
        if self.world.distributed:
            state["process_rng"] = [part["rng"] for part in own]
        targets = [part["targets"] for part in own if part["targets"] is not None]
        state["sam_targets"] = {k: v for part in targets for k, v in part.items()} if targets else None
        return state

    def save(self, final: bool = False) -> Path | None:
        """Write a checkpoint (rank 0 writes; every process must call it under torchrun)."""
        state = self.state()
        path = checkpoint_path(self.run_dir, None if final else self.iteration)
        if self.world.leader:
            save_checkpoint(path, state)
        self.world.barrier()  # no process reads on (or resumes) before the file is complete
        return path

    def load(self, path: Path) -> None:
        state = read_checkpoint(path, self.device)
        missing = [k for k in ("student", "teacher", "optimizer", "iteration", "rng") if k not in state]
        if missing:
            raise UserError(f"{path} is not a checkpoint of this trainer (lacks {', '.join(missing)}); "
                            "move it away to start over")
        self.student.load_state_dict(state["student"])
        if self.teacher is not None and state["teacher"] is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = state["iteration"]
        self.history = state.get("history", [])
        if "sam_table" in state:  # the layout before per-case parts
            raise UserError(f"{path} keeps its SAM targets in an older layout ('sam_table'); resume it with the "
                            "semisam-fast that wrote it, or start the run again into a new --out")
        parts = state.get("sam_targets")
        self.sam_table = None if parts is None else self.geometry.table_from_parts(parts, self.unlabelled)
        self.generator.set_state(state["rng"]["generator"])
        own = state.get("process_rng")
        if not self.world.distributed:
            torch.set_rng_state(state["rng"]["torch"])  # a run of several processes goes on from rank 0's streams
        elif own is not None and len(own) == self.world.size:
            torch.set_rng_state(own[self.world.rank]["torch"])
            self.own_generator.set_state(own[self.world.rank]["generator"])
        else:  # another number of processes than the checkpoint's: fresh streams, derived from seed and iteration
            seed = rank_seed(self.config.seed * 1_000_003 + self.iteration, self.world.rank)
            torch.manual_seed(seed)
            self.own_generator.manual_seed(seed)
