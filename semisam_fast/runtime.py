"""Process-level tuning the tool applies for its users (measured in bench/; docs/architecture.md: Pitfalls)."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TUNED = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: 1 << 30}
_GLIBC = {_M_MMAP_MAX: 65536, _M_TRIM_THRESHOLD: 128 * 1024}  # glibc's documented defaults
_applied = False


def _mallopt(settings: dict[int, int]) -> bool:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return all(libc.mallopt(option, value) for option, value in settings.items())


def tune_allocator() -> str:
    """Stop glibc from mmap/munmap-ing every large activation: eager PyTorch on CPU otherwise spends a large share
    of its time in page faults. Same effect as MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>, set at run time.
    Opt out with SEMISAM_ALLOCATOR=default. Returns the setting in force (recorded by benchmarks)."""
    global _applied
    if os.environ.get("SEMISAM_ALLOCATOR", "tuned") == "default":
        return "glibc default"
    if not _applied:
        try:
            _applied = _mallopt(_TUNED)
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
            return "platform default"
    return "tuned (mmap_max=0, trim_threshold=1GiB)" if _applied else "glibc default"


@contextmanager
def untuned_allocator() -> Iterator[None]:
    """glibc's own settings inside the block: large blocks mmap-ed and returned to the OS when freed. What the tuned
    setting speeds up (the same activation sizes allocated again and again) is the opposite of an export, which
    allocates and frees many GB once; there the tuned heap keeps every page (ViT-B export peak RSS 12.7 GB tuned,
    4.3 GB untuned)."""
    if not _applied:
        yield
        return
    _mallopt(_GLIBC)
    try:
        yield
    finally:
        _mallopt(_TUNED)


class PeakMemory:
    """The process's peak resident memory over a `with` block, in GB: Linux's high-water mark, reset on entry through
    /proc/self/clear_refs; elsewhere (or where that is refused) the lifetime peak, said by `scope`."""

    def __enter__(self) -> "PeakMemory":
        self.scope = "block"
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            self.scope = "process"
        self.gb = float("nan")
        return self

    def __exit__(self, *exc) -> None:
        try:
            with open("/proc/self/status") as handle:
                kb = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM"))
        except (OSError, StopIteration):
            import resource

            kb, self.scope = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "process"
        self.gb = round(kb / 1e6, 2)
