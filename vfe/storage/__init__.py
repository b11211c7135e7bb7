"""File storage: the ``Storage`` interface and the choice between its back-ends.

    Storage (Protocol)
    ├── LocalStorage  local.py  a folder on this machine (or one every process shares)
    └── S3Storage     s3.py     an S3-compatible bucket, through obstore

Objects are named by keys: ``/``-separated, relative, without ``.`` or ``..`` parts
(``frames/ab/abcd….jpg``). A put is atomic: a reader sees the whole object or none. Both
back-ends pass one contract suite (``tests/contract/test_storage.py``). Driver errors are
translated inside each back-end into ``StorageError`` (``StorageUnavailable``, a 503, when
the store cannot be reached or refuses the credentials).

This is the layer issue 15's deduplicated frames, uploads and sources will sit on; the
frames are not stored through it yet (see the README, Not done yet).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

KEY = re.compile(r"[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*")
CHUNK = 256 * 1024  # bytes a read hands over at a time


@dataclass(frozen=True)
class ObjectInfo:
    """What the store says of one object."""

    key: str
    size: int
    etag: str | None  # the store's own tag, when it has one


def checked_key(key: str) -> str:
    """``key`` if it is a valid object key, else ``ValueError``."""
    if not KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"not an object key: {key!r}")
    return key


class Storage(Protocol):
    """Where vfe keeps files."""

    backend: str  # "local" or "s3", for /health

    async def put_file(self, key: str, source: Path) -> None:
        """Store the file ``source`` under ``key`` (replacing it), atomically."""
        ...

    async def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (replacing it), atomically."""
        ...

    async def get_file(self, key: str, dest: Path) -> None:
        """Copy the object to the local file ``dest`` (``FileNotFoundError`` if none)."""
        ...

    def read(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes, a chunk at a time (``FileNotFoundError`` if none)."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size and tag, or None when there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is no error."""
        ...

    def keys(self, prefix: str = "") -> AsyncIterator[str]:
        """Every key that starts with ``prefix``, in no promised order."""
        ...

    async def presign(self, key: str, expires: timedelta) -> str | None:
        """A URL that serves the object to anyone for ``expires``; None when the back-end
        has no such thing (a local folder)."""
        ...

    async def ping(self) -> bool:
        """Whether the store answers (never raises)."""
        ...
