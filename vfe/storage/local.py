"""``LocalStorage``: objects as files under one folder; keys are relative paths.

A put writes a temporary file beside its target and renames it into place, so a reader
sees the whole file or none; the temporary names start with ``.tmp-`` and are never
listed. File system calls run in threads, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from ..errors import StorageError
from . import CHUNK, ObjectInfo, checked_key

TEMP = ".tmp-"
T = TypeVar("T")


class LocalStorage:
    """A ``Storage`` in the folder ``base``."""

    backend = "local"

    def __init__(self, base: Path) -> None:
        self.base = base

    def path(self, key: str) -> Path:
        return self.base / checked_key(key)

    async def _put(self, key: str, fill: Callable[[Path], object]) -> None:
        """Write the object by ``fill(temporary path)``, then rename it into place."""
        target = self.path(key)

        def _write() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(f"{TEMP}{uuid.uuid4().hex}")
            try:
                fill(temp)
                os.replace(temp, target)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise

        await _storing(_write)

    async def put_file(self, key: str, source: Path, *, consume: bool = False) -> None:
        if consume:  # a rename when on the same file system
            target = self.path(key)

            def _move() -> bool:
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(source, target)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    return False
                return True

            if await _storing(_move):
                return
        await self._put(key, lambda temp: _link_or_copy(source, temp))
        if consume:
            await asyncio.to_thread(source.unlink, True)

    async def put_bytes(self, key: str, data: bytes) -> None:
        await self._put(key, lambda temp: temp.write_bytes(bytes(data)))

    async def get_file(self, key: str, dest: Path) -> None:
        source = self.path(key)
        await asyncio.to_thread(shutil.copyfile, source, dest)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        path = self.path(key)
        handle = await asyncio.to_thread(path.open, "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                yield chunk
        finally:
            handle.close()

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            stat = await asyncio.to_thread(self.path(key).stat)
        except FileNotFoundError:
            return None
        return ObjectInfo(key, stat.st_size, f"{stat.st_mtime_ns:x}-{stat.st_size:x}")

    async def delete(self, *keys: str) -> None:
        paths = [self.path(key) for key in keys]

        def _unlink() -> None:
            for path in paths:
                path.unlink(missing_ok=True)

        await asyncio.to_thread(_unlink)

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    async def keys(self, prefix: str = "") -> AsyncIterator[str]:
        def _walk() -> list[str]:
            found = []
            for folder, dirs, files in os.walk(self.base):
                dirs.sort()
                for name in sorted(files):
                    if name.startswith(TEMP):
                        continue
                    key = Path(folder, name).relative_to(self.base).as_posix()
                    if key.startswith(prefix):
                        found.append(key)
            return found

        for key in await asyncio.to_thread(_walk):
            yield key

    async def presign(self, key: str, expires: timedelta) -> str | None:
        return None

    async def ping(self) -> bool:
        def _writable() -> bool:
            try:
                self.base.mkdir(parents=True, exist_ok=True)
            except OSError:
                return False
            return os.access(self.base, os.W_OK)

        return await asyncio.to_thread(_writable)


async def _storing(write: Callable[[], T]) -> T:
    """``write`` in a thread; its OS errors are ``StorageError`` (a missing source file
    stays ``FileNotFoundError``: the caller's, not the storage's)."""
    try:
        return await asyncio.to_thread(write)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StorageError(f"cannot store a file ({exc.strerror})") from exc


def _link_or_copy(source: Path, temp: Path) -> None:
    """A second name for ``source`` (no copy) when both are on one file system."""
    try:
        os.link(source, temp)
    except FileNotFoundError:
        raise
    except OSError:
        shutil.copyfile(source, temp)
