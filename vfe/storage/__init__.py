"""File storage: the ``Storage`` interface and the choice between its back-ends.

    Storage (Protocol)
    ├── LocalStorage  local.py  a folder on this machine (or one every process shares)
    └── S3Storage     s3.py     an S3-compatible bucket, through obstore

Objects are named by keys: ``/``-separated, relative, without ``.`` or ``..`` parts
(``frames/ab/abcd….jpg``). A put is atomic: a reader sees the whole object or none. Both
back-ends pass one contract suite (``tests/contract/test_storage.py``). Driver errors are
translated inside each back-end into ``StorageError`` (``StorageUnavailable``, a 503, when
the store cannot be reached or refuses the credentials).

vfe keeps two kinds of objects, each in its own ``Storage`` (``Storages``): frames, by
their SHA-256 (``frames/ab/abcd….jpg``), and the sources of uploads and downloads, by
theirs (``sources/abcd…``). The database records which jobs hold which objects (the
store's ``hold`` and ``collect``); an object no job holds is removed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..settings import Settings

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

    async def put_file(self, key: str, source: Path, *, consume: bool = False) -> None:
        """Store the file ``source`` under ``key`` (replacing it), atomically. With
        ``consume`` the caller gives ``source`` up: it may be moved rather than copied,
        and is gone afterwards. Without, ``source`` stays, and must not be written to
        afterwards: a folder may keep a second name of the same file (a hard link)."""
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

    async def delete(self, *keys: str) -> None:
        """Remove the objects (in as few requests as the back-end allows); a missing one
        is no error."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The object as a file on this machine, when the back-end keeps it so."""
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


PING_SECONDS = 3.0
FRAME_OBJECT = re.compile(r"[0-9a-f]{2}/[0-9a-f]{64}\.(jpg|png|webp)")
SOURCE_OBJECT = re.compile(r"[0-9a-f]{64}")
FRAMES = "frames/"
SOURCES = "sources/"


def frame_key(checksum: str, ext: str) -> str:
    """The key of a frame's bytes: its SHA-256, in 256 folders (a folder of a million
    files is slow to list on most file systems)."""
    return f"{FRAMES}{checksum[:2]}/{checksum}.{ext}"


def source_key(checksum: str) -> str:
    """The key of an uploaded or downloaded video: its SHA-256."""
    return f"{SOURCES}{checksum}"


@dataclass(frozen=True)
class Storages:
    """Where each kind of object goes: keys that start with ``frames/`` to ``frames``,
    keys that start with ``sources/`` to ``sources`` (without that first part)."""

    frames: Storage
    sources: Storage

    @property
    def backend(self) -> str:
        return self.frames.backend

    def route(self, key: str) -> tuple[Storage, str]:
        """The storage that keeps ``key`` and the key it has there."""
        if key.startswith(FRAMES):
            return self.frames, key[len(FRAMES) :]
        if key.startswith(SOURCES):
            return self.sources, key[len(SOURCES) :]
        raise ValueError(f"not a key vfe stores: {key!r}")

    async def stored(self) -> AsyncIterator[str]:
        """The key of every object vfe stored, of either kind (named by a SHA-256, as vfe
        names them; anything else in the storage, scratch included, is not listed)."""
        for storage, prefix, name in (
            (self.frames, FRAMES, FRAME_OBJECT), (self.sources, SOURCES, SOURCE_OBJECT)
        ):  # fmt: skip
            async for key in storage.keys():
                if name.fullmatch(key):
                    yield prefix + key

    async def remove(self, keys: list[str]) -> None:
        """Remove objects of either kind (the store's ``collect`` calls this)."""
        names: dict[Storage, list[str]] = {}
        for key in keys:
            storage, name = self.route(key)
            names.setdefault(storage, []).append(name)
        for storage, mine in names.items():
            await storage.delete(*mine)

    async def ping(self) -> bool:
        """Whether both answer, within PING_SECONDS (a probe must not wait for retries)."""
        try:
            async with asyncio.timeout(PING_SECONDS):
                return await self.frames.ping() and await self.sources.ping()
        except TimeoutError:
            return False


def open_storages(settings: Settings) -> Storages:
    """The storages the settings name: ``STORAGE_URL`` an ``s3://`` URL (a bucket, through
    obstore) or a folder (``frames/`` and ``sources/`` in it); unset, the frames go to
    FRAMES_BASE_PATH and the sources to UPLOADS_PATH. Imports only the back-end it uses."""
    url = settings.storage_url
    if url.startswith("s3://"):
        from .s3 import S3Storage

        options = {
            "endpoint": settings.s3_endpoint_url or None,
            "access_key_id": settings.aws_access_key_id or None,
            "secret_access_key": settings.aws_secret_access_key.get_secret_value() or None,
            "region": settings.aws_region,
        }
        base = url.rstrip("/")
        return Storages(
            S3Storage(f"{base}/{FRAMES.rstrip('/')}", **options),
            S3Storage(f"{base}/{SOURCES.rstrip('/')}", **options),
        )
    from .local import LocalStorage

    if url:
        folder = Path(url).expanduser().resolve()
        return Storages(LocalStorage(folder / "frames"), LocalStorage(folder / "sources"))
    return Storages(LocalStorage(settings.frames_base_path), LocalStorage(settings.uploads_path))
