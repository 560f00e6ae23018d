"""Process-level tuning the tool applies for its users (measured in bench/; docs/architecture.md: Pitfalls)."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_applied = False


def tune_allocator() -> str:
    """Stop glibc from mmap/munmap-ing every large activation: eager PyTorch on CPU otherwise spends a large share
    of its time in page faults. Same effect as MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>, set at run time.
    Opt out with SEMISAM_ALLOCATOR=default. Returns the setting in force (recorded by benchmarks)."""
    global _applied
    if os.environ.get("SEMISAM_ALLOCATOR", "tuned") == "default":
        return "glibc default"
    if not _applied:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
            return "platform default"
        _applied = bool(ok)
    return "tuned (mmap_max=0, trim_threshold=1GiB)" if _applied else "glibc default"
