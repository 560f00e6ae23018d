"""Running under torchrun: which process this is, a barrier, and how whole cases are dealt out to processes.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything here is the single-process case and no
process group is created. gloo on the CPU, NCCL on GPUs (torch.distributed's own stack; no scheduler of our own)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def sum(self, value: int) -> int:
        """The sum of an integer over all processes."""
        if not self.distributed:
            return int(value)
        tensor = torch.tensor([int(value)], dtype=torch.int64)
        torch.distributed.all_reduce(tensor)
        return int(tensor.item())

    def device(self, device: str) -> str:
        """`cuda` means this process's own GPU (LOCAL_RANK) under torchrun."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.distributed else device


def world_from_env() -> World:
    """This process's place in a torchrun launch (a one-process World when not launched by torchrun); joins the
    process group on first use."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("SEMISAM_DIST_BACKEND") != "gloo" else "gloo"
        torch.distributed.init_process_group(backend)
    return world


def deal_cases(sizes: dict[str, int], world: World) -> list[str]:
    """The cases this process handles: whole cases, largest first, each to the process with the least work so far
    (ties: the lower rank); deterministic, every case exactly once, no padding that duplicates work."""
    load = [0] * world.size
    mine = []
    for case_id in sorted(sizes, key=lambda c: (-sizes[c], c)):
        rank = min(range(world.size), key=lambda r: (load[r], r))
        load[rank] += sizes[case_id]
        if rank == world.rank:
            mine.append(case_id)
    return mine
