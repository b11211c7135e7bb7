"""One owner per data folder: an embedded vfe holds an OS lock on its database.

In the embedded layout one process owns the SQLite file: it recovers the jobs a crash
left behind and runs them. A second process on the same file would "recover" jobs that
are running and run them twice, so it must not start. ``DataOwner.acquire`` takes an
exclusive ``flock`` on ``<DATABASE_PATH>.lock`` (released by the OS when the process
ends, however it ends) and writes the holder's pid into it, so the refusal can say who
holds it. It is taken before anything touches a job, and before the server binds its port.

Within one process the lock is counted, not re-taken: ``vfe serve`` takes it before
uvicorn starts (to refuse with a plain message and exit 2) and the app's lifespan takes
it again, which must not fail against itself. With PostgreSQL (the scaled-out layout)
many processes share the database by design and leases guard the jobs: no lock is taken.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import ClassVar

from .errors import VfeError


class DataFolderInUse(VfeError):
    """Another process owns this database; the message names it and says what to do."""

    status = 503


class DataOwner:
    """The lock of one database file; ``acquire``/``release`` are counted per process."""

    _held: ClassVar[dict[Path, tuple[int, int]]] = {}  # lock path -> (fd, count)

    def __init__(self, database: Path, enabled: bool = True) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self.enabled = enabled

    def acquire(self) -> None:
        """Take the lock, or raise ``DataFolderInUse`` naming the process that holds it."""
        if not self.enabled:
            return
        held = self._held.get(self.path)
        if held is not None:
            self._held[self.path] = (held[0], held[1] + 1)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DataFolderInUse(
                f"cannot open the lock file {self.path} ({exc.strerror}); check the "
                "folder's permissions, or set DATABASE_PATH to a folder this user may write"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise DataFolderInUse(
                f"{who} is already serving the database {self.database}; one vfe process "
                "owns a database in this layout. Stop it, or give this one its own "
                "DATABASE_PATH (and FRAMES_BASE_PATH)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._held[self.path] = (fd, 1)

    def release(self) -> None:
        """Give the lock back once every ``acquire`` of this process has released it."""
        held = self._held.get(self.path)
        if held is None:
            return
        fd, count = held
        if count > 1:
            self._held[self.path] = (fd, count - 1)
            return
        del self._held[self.path]
        os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
