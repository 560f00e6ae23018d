"""One writing process per output folder: `embed` into a cache and `train` into a run folder take an exclusive lock
on `<folder>/.semisam.lock` (fcntl, released by the kernel when the process ends, even by kill -9). Without it a
second process's start-up clean-up of stale temp files deleted the first one's in-flight temp file."""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import socket
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".semisam.lock"


class FolderLock:
    """`acquire()` or UserError naming the holder (process, host, command, since when); `release()`."""

    def __init__(self, folder: str | Path, command: str) -> None:
        self.folder, self.command = Path(folder), command
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process (starting)"
            os.close(fd)
            raise UserError(f"{self.folder} is in use by {holder}; wait for it to end or use another folder") from None
        since = _dt.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()} (semisam-fast {self.command}, since {since})"
                     .encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock; the file stays (unlinking it would race)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def folder_lock(folder: str | Path, command: str,
                enabled: bool = True) -> FolderLock | contextlib.nullcontext:
    """The folder's lock as a context manager; `enabled=False` (torchrun ranks other than 0) takes none."""
    return FolderLock(folder, command) if enabled else contextlib.nullcontext()


__all__ = ["FolderLock", "LOCK_NAME", "folder_lock"]
