"""Commands end to end that no other test runs whole."""
from __future__ import annotations

import torch

from .conftest import run_cli


def test_doctor_reports_this_machine():
    result = run_cli("doctor")
    assert result.returncode == 0, result.stderr
    report = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    assert report["torch"] == torch.__version__
    assert report["cuda_available"] == str(torch.cuda.is_available())
    assert "CPUExecutionProvider" in report["ort_providers"]
    assert "lite_medsam.pth" in report["litemedsam_weights"]  # the bundled genuine weights were found
    assert report["allocator"].startswith(("tuned", "default"))
    with open("/proc/cpuinfo") as handle:
        flags = set(next(line for line in handle if line.startswith("flags")).split(":", 1)[1].split())
    for flag in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"):
        assert (f"'{flag}'" in report["cpu_isa"]) == (flag in flags), flag
    assert f"'torch': '{torch.backends.cpu.get_cpu_capability()}'" in report["cpu_kernels"]
