"""Frame files: work folders, naming, checksums, storing, reading and zips.

FFmpeg writes a run's frames into a local work folder (``<scratch>/<job_id>/<run>/``)
with atomic writing (a temp name renamed when the file is complete). ``finalize`` hashes
each complete file and keeps it: ``FrameStore`` stores its bytes once, under their
SHA-256 (``frames/ab/abcd….jpg``), after the job's hold on that object is committed, so a
collect never removes it under the job; ``FolderFrames`` (``vfe extract``) renames it
into a folder under its frame name (``000012_60.000.jpg``). A frame is recorded only
after that, so a listed frame is always a whole object. Disk work runs in threads.

Each process keeps its work folders in a folder of its own under FRAMES_BASE_PATH/.work,
locked while it lives; a start removes the folders of processes that are gone, so
scratch a killed run left behind does not stay.

Only ``WorkFolders.work_dir`` turns a job id into a path, and it accepts canonical UUIDs
only.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Protocol

from .models import Frame
from .storage import Storage, Storages, frame_key

log = logging.getLogger("vfe.frames")
WORK_DIR = ".work"
LOCK = ".lock"  # in a process's scratch folder, locked while the process lives
MAKING = ".new-"  # a scratch folder before it is locked
MAKING_FOR = 60.0  # seconds after which such a folder's process is taken for gone
LEGACY = (".trash", ".zips")  # what versions before stored frames by hash left behind
PUTS = 8  # frames a run uploads at once
SOURCE_TRIES = 3  # reads of a stored source before it counts as gone
PRESIGNED_FOR = timedelta(hours=1)
FRAME_NAME = re.compile(r"^\d{6,}_\d+\.\d{3}\.(jpg|png|webp)$")


class _Sink:
    """A write-only stream the zip writer fills and the response drains (no ``tell`` or
    ``seek``: ``zipfile`` then writes data descriptors, as a stream needs)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def is_job_id(value: str) -> bool:
    """True for a canonical lowercase UUID string (the only ids vfe issues)."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def frame_name(index: int, timestamp: float, ext: str = "jpg") -> str:
    """``000012_60.000.jpg``: the target index and the frame's time, to the millisecond."""
    return f"{index:06d}_{timestamp:.3f}.{ext}"


def image_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from the first bytes of a JPEG, PNG or WebP file, if found."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        chunk = head[12:16]
        if chunk == b"VP8 ":
            return (int.from_bytes(head[26:28], "little") & 0x3FFF,
                    int.from_bytes(head[28:30], "little") & 0x3FFF)  # fmt: skip
        if chunk == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return (int.from_bytes(head[24:27], "little") + 1,
                    int.from_bytes(head[27:30], "little") + 1)  # fmt: skip
        return None
    if head[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                return None
            marker = head[i + 1]
            length = int.from_bytes(head[i + 2 : i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2, 0xC3):
                height = int.from_bytes(head[i + 5 : i + 7], "big")
                return int.from_bytes(head[i + 7 : i + 9], "big"), height
            i += 2 + length
    return None


@dataclass(frozen=True)
class Kept:
    """A finished frame file as kept: its size, SHA-256 and picture size, if read."""

    size: int
    checksum: str
    dimensions: tuple[int, int] | None


class Gone(Exception):
    """The job is gone (deleted, or claimed by another run): its frames are not kept."""


Hold = Callable[[str, Sequence[tuple[str, int]]], Awaitable[bool]]  # the store's ``hold``
Recorded = Callable[[str], Awaitable[Sequence[Frame]]]  # a job's frames in the store


def _examine(path: Path) -> Kept:
    """Hash a file and read its picture size. Blocking: run it in a thread."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        head = fh.read(64 * 1024)
        chunk = head
        while chunk:
            digest.update(chunk)
            size += len(chunk)
            chunk = fh.read(1024 * 1024)
    return Kept(size, digest.hexdigest(), image_size(head))


def extension(name: str) -> str:
    return name.rsplit(".", 1)[1]


class FrameSink(Protocol):
    """Where the extractor's runs work and their finished frames go."""

    async def prepare(self, job_id: str, run: str = "") -> Path: ...
    async def finalize(self, job_id: str, files: Sequence[tuple[Path, str]]) -> list[Kept]: ...
    async def discard_work(self, job_id: str, run: str = "") -> None: ...


class WorkFolders:
    """The runs' work folders under one local folder ``scratch``."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch

    def work_dir(self, job_id: str, run: str = "") -> Path:
        """The job's work folder, or one run's within it (``run``: its attempt number),
        so two runs of one job (a worker taken for dead that still runs) never share one."""
        if not is_job_id(job_id):
            raise ValueError("not a job id")
        if run and not run.isdigit():
            raise ValueError("not a run")
        work = self.scratch / job_id
        return work / run if run else work

    async def prepare(self, job_id: str, run: str = "") -> Path:
        """Create the (run's) work folder empty; return it."""
        work = self.work_dir(job_id, run)

        def _prepare() -> None:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True, exist_ok=True)

        await asyncio.to_thread(_prepare)
        return work

    async def discard_work(self, job_id: str, run: str = "") -> None:
        """Remove a run's work folder (partial files of a stopped or finished run), or the
        job's (every run's, and its source copies)."""
        work = self.work_dir(job_id, run)

        def _discard() -> None:
            shutil.rmtree(work, ignore_errors=True)
            if run:
                with contextlib.suppress(OSError):  # another run's folder is still there
                    work.parent.rmdir()

        await asyncio.to_thread(_discard)

    async def free_bytes(self) -> int:
        def _free() -> int:
            self.scratch.mkdir(parents=True, exist_ok=True)
            return shutil.disk_usage(self.scratch).free

        return await asyncio.to_thread(_free)


class FolderFrames(WorkFolders):
    """``vfe extract``: finished frames renamed into the folder ``out`` by frame name."""

    def __init__(self, out: Path) -> None:
        super().__init__(out / ".vfe-work")
        self.out = out

    async def finalize(self, job_id: str, files: Sequence[tuple[Path, str]]) -> list[Kept]:
        def _keep() -> list[Kept]:
            kept = []
            for done, name in files:
                kept.append(_examine(done))
                os.replace(done, self.out / name)
            return kept

        return await asyncio.to_thread(_keep)


class FrameStore(WorkFolders):
    """Frames stored once by their SHA-256 in ``storages.frames``; runs work in this
    process's own folder under ``base/.work``. ``hold`` is the store's ``hold``."""

    def __init__(self, storages: Storages, base: Path, hold: Hold) -> None:
        super().__init__(base / WORK_DIR / uuid.uuid4().hex)
        self.base = base
        self.storages = storages
        self.hold = hold
        self._lock: IO[bytes] | None = None

    # --- life ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Take this process's scratch folder (locked while it lives) and remove those of
        processes that are gone."""

        def _open() -> None:
            # Made under a name the sweep leaves alone, locked, then renamed into place:
            # a process starting at the same time never sees it unlocked.
            making = self.scratch.with_name(f"{MAKING}{self.scratch.name}")
            making.mkdir(parents=True)
            handle = (making / LOCK).open("wb")
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._lock = handle
            making.rename(self.scratch)
            for folder in self.scratch.parent.iterdir():
                if folder == self.scratch or not folder.is_dir():
                    continue
                if folder.name.startswith(MAKING):  # one being made, or one that never was
                    try:
                        if time.time() - folder.stat().st_mtime < MAKING_FOR:
                            continue
                    except FileNotFoundError:
                        continue  # renamed into place meanwhile: its lock is held
                if _unlocked(folder / LOCK):
                    shutil.rmtree(folder, ignore_errors=True)

        await asyncio.to_thread(_open)

    async def close(self) -> None:
        def _close() -> None:
            if self._lock is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)
                self._lock.close()
                self._lock = None

        await asyncio.to_thread(_close)

    # --- runs ----------------------------------------------------------------------------

    async def finalize(self, job_id: str, files: Sequence[tuple[Path, str]]) -> list[Kept]:
        """Hash the complete files, hold their objects for the job (one transaction;
        ``Gone`` when the job is gone), then store each object; the files are used up."""
        kept = await asyncio.to_thread(lambda: [_examine(done) for done, _ in files])
        keys = [
            frame_key(k.checksum, extension(name)) for k, (_, name) in zip(kept, files, strict=True)
        ]
        if not await self.hold(
            job_id, sorted({(key, k.size) for key, k in zip(keys, kept, strict=True)})
        ):
            raise Gone(job_id)
        slots = asyncio.Semaphore(PUTS)

        async def put(key: str, done: Path) -> None:
            async with slots:
                await self._put(key, done)

        # gather, not a task group: the first error is raised as itself
        puts = [
            asyncio.ensure_future(put(key, done))
            for key, (done, _) in zip(keys, files, strict=True)
        ]
        try:
            await asyncio.gather(*puts)
        finally:
            for task in puts:
                task.cancel()
            await asyncio.gather(*puts, return_exceptions=True)
        return kept

    async def _put(self, key: str, done: Path) -> None:
        storage, name = self.storages.route(key)
        if storage.local_path(name) is None and await storage.head(name) is not None:
            await asyncio.to_thread(done.unlink, True)  # the same bytes are there already
            return
        await storage.put_file(name, done, consume=True)

    def source_copy(self, job_id: str, run: str) -> Path:
        """Where a run keeps its copy of a source from the bucket."""
        return self.work_dir(job_id) / f"source-{int(run)}"

    async def discard_run(self, job_id: str, run: str) -> None:
        """Remove what one run left in scratch (its work folder and source copy), never
        another run's."""
        await asyncio.to_thread(self.source_copy(job_id, run).unlink, True)
        await self.discard_work(job_id, run)

    async def local_source(self, job_id: str, source_path: str, run: str) -> Path:
        """The job's video as a local file: a path as it is, a stored source in place when
        the storage is a folder, else copied into the job's work folder. ``FileNotFoundError``
        when it is gone."""
        if os.path.isabs(source_path):
            return Path(source_path)
        storage, name = self.storages.route(source_path)
        if (path := storage.local_path(name)) is not None:
            return path
        copy = self.source_copy(job_id, run)
        await asyncio.to_thread(copy.parent.mkdir, parents=True, exist_ok=True)
        for attempt in range(SOURCE_TRIES):
            try:
                await storage.get_file(name, copy)
                return copy
            except FileNotFoundError:
                # its submit wrote it before the job was queued: only a store that shows
                # a new object a moment late gets here, so look again shortly
                await asyncio.to_thread(copy.unlink, True)
                if attempt + 1 == SOURCE_TRIES:
                    raise
                await asyncio.sleep(1.0 + attempt)
        raise FileNotFoundError(source_path)  # pragma: no cover - the loop returns or raises

    # --- reading -------------------------------------------------------------------------

    def stored(self, frame: Frame) -> tuple[Storage, str]:
        """The storage that keeps the frame's bytes, and their name there."""
        return self.storages.route(frame_key(frame.checksum, extension(frame.filename)))

    def local_file(self, frame: Frame) -> Path | None:
        """The frame's bytes as a local file, when the storage is a folder."""
        storage, name = self.stored(frame)
        return storage.local_path(name)

    async def local_copy(self, frame: Frame, dest: Path) -> Path:
        """The frame's bytes as a local file: in place when the storage is a folder, else
        copied to ``dest`` (``FileNotFoundError`` if gone)."""
        storage, name = self.stored(frame)
        if (path := storage.local_path(name)) is not None:
            return path
        await storage.get_file(name, dest)
        return dest

    def read(self, frame: Frame) -> AsyncIterator[bytes]:
        """The frame's bytes, a chunk at a time (``FileNotFoundError`` if gone)."""
        storage, name = self.stored(frame)
        return storage.read(name)

    async def zip_stream(
        self,
        frames: Sequence[Frame],
        manifest: Callable[[list[Frame]], bytes] | None = None,
        extra: AsyncIterator[tuple[str, bytes]] | None = None,
    ) -> AsyncIterator[bytes]:
        """The ``frames`` as one zip, made while it is sent: stored entries (images are
        compressed already) with data descriptors, so nothing is staged on disk, an unread
        download costs nothing, and a cut one leaves nothing behind. Holds one frame in
        memory at a time. Frames whose object has gone are left out. ``manifest`` makes
        an entry, ``frames.json``, of the frames the zip holds; ``extra`` gives the last
        entries (name, bytes), one at a time (a storyboard)."""
        import zipfile  # only for zips, not on every start-up

        sink = _Sink()
        archive = zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED)
        held: list[Frame] = []

        def entry(name: str, created_at: float) -> zipfile.ZipInfo:
            info = zipfile.ZipInfo(name, time.localtime(created_at)[:6])
            info.external_attr = 0o644 << 16  # rw-r--r-- when unzipped, as files were
            return info

        try:
            for frame in frames:
                try:
                    data = b"".join([chunk async for chunk in self.read(frame)])
                except FileNotFoundError:
                    continue  # deleted meanwhile: leave it out
                held.append(frame)
                await asyncio.to_thread(
                    archive.writestr, entry(frame.filename, frame.created_at), data
                )
                if sink.chunks:
                    yield sink.take()
            if manifest is not None:  # made in the thread too: a long job's list takes time
                await asyncio.to_thread(
                    lambda: archive.writestr(entry("frames.json", time.time()), manifest(held))
                )
            if extra is not None:
                async for name, data in extra:
                    await asyncio.to_thread(archive.writestr, entry(name, time.time()), data)
                    if sink.chunks:
                        yield sink.take()
            await asyncio.to_thread(archive.close)
            yield sink.take()
        finally:
            if archive.fp is not None:  # cut short: nothing to finish, nothing on disk
                archive.fp = None

    # --- what versions before left ---------------------------------------------------------

    async def adopt_legacy(self, recorded: Recorded) -> int:
        """Store by their SHA-256 the frame files that earlier versions kept as
        ``<job_id>/<name>`` under FRAMES_BASE_PATH (the database's migration already holds
        them for their jobs), and remove what else those versions left there. Only files
        ``recorded`` (the job's frames in the database) names, with that checksum, are
        taken; a folder holding anything else is left as it is. How many were stored."""

        def _folders() -> list[Path]:
            if not self.base.is_dir():
                return []
            for name in LEGACY:
                shutil.rmtree(self.base / name, ignore_errors=True)
            return [f for f in sorted(self.base.iterdir()) if f.is_dir() and is_job_id(f.name)]

        moved = 0
        for folder in await asyncio.to_thread(_folders):
            checksums = {f.filename: f.checksum for f in await recorded(folder.name)}
            if not checksums:
                continue  # no such job here: not ours to touch
            for path in await asyncio.to_thread(sorted, folder.iterdir()):
                if path.name not in checksums:
                    continue
                try:
                    kept = await asyncio.to_thread(_examine, path)
                    if kept.checksum != checksums[path.name]:
                        continue  # changed since it was listed: leave it
                    await self._put(frame_key(kept.checksum, extension(path.name)), path)
                    moved += 1
                except FileNotFoundError:
                    continue  # another process took it

            def _tidy(folder: Path = folder) -> None:
                shutil.rmtree(folder / WORK_DIR, ignore_errors=True)
                with contextlib.suppress(OSError):  # something else is in it: left
                    folder.rmdir()

            await asyncio.to_thread(_tidy)
        if moved:
            log.info("stored %d frames of earlier versions by their checksum", moved)
        return moved


def _unlocked(lock: Path) -> bool:
    """Whether no living process holds ``lock`` (a folder without one is left alone only
    while it is being made, a moment)."""
    try:
        handle = lock.open("rb")
    except FileNotFoundError:
        return True
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
