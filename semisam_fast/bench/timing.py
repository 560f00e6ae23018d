"""How every benchmark times and reports: interleaved rounds, median / spread / ratio to the reference, GFLOP from
torch's FLOP counter, and the machine it ran on (CPU, ISA, kernels, threads, allocator setting)."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from ..doctor import allocator_setting, cpu_isa, cpu_name, kernel_choice


def machine() -> dict:
    info = {"cpu": cpu_name(), "cpu_isa": cpu_isa(), "cpu_kernels": kernel_choice(),
            "torch_threads": torch.get_num_threads(), "allocator": allocator_setting(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError:
        pass
    return info


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time each candidate once per round, round after round, so drift on a shared machine hits all alike."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        for run in candidates.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            sync()
            start = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def summarise(times: dict[str, list[float]], reference: str, items: int = 1, unit: str = "images",
              gflop_per_item: float | None = None) -> dict:
    """Median, spread and ratio to `reference` per candidate; with `gflop_per_item`, the GFLOP/s that makes."""
    ref = statistics.median(times[reference])
    out = {}
    for name, values in times.items():
        med = statistics.median(values)
        out[name] = {"median_s": med, "min_s": min(values), "max_s": max(values), "repeats": len(values),
                     f"{unit}_per_s": items / med, f"speedup_vs_{reference}": ref / med}
        if gflop_per_item is not None:
            out[name]["gflops"] = items * gflop_per_item / med
    return out


def gflop(work: Callable[[], object]) -> float:
    """GFLOP of one call of a torch forward, by torch's FLOP counter (matmuls and convolutions, 2 per
    multiply-add): the arithmetic every runtime's copy of that graph does."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        work()
    return counter.get_total_flops() / 1e9
