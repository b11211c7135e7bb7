"""Frame files on disk: layout, naming, checksums, and removal.

Layout: ``FRAMES_BASE_PATH/<job_id>/<index>_<seconds>.<ext>``, e.g. ``000012_60.000.jpg``.
FFmpeg writes into ``<job_id>/.work/`` with atomic writing (a temp name renamed when the
file is complete); ``finalize`` hashes a complete file and renames it to its final name.
A frame is recorded in the store only after that rename, so a listed frame is always a
whole file. All disk work runs in a thread so the event loop never waits on it.

Only ``job_dir`` turns a job id into a path, and it accepts canonical UUIDs only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

log = logging.getLogger("vfe.frames")
WORK_DIR = ".work"
TRASH_DIR = ".trash"  # folders of deleted jobs, removed in the background
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


def _removal(root: Path) -> Iterator[None]:
    """Remove ``root`` and everything in it, one file (or folder) a step."""
    for folder, dirs, files in os.walk(root, topdown=False):
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]  # never followed
        for name in [*files, *links]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
            yield
        with contextlib.suppress(OSError):  # not empty: a new discard landed meanwhile
            os.rmdir(folder)
        yield


def _advance(steps: Iterator[None], count: int) -> int:
    """Take up to ``count`` steps; how many were taken (fewer: none are left)."""
    return len(list(itertools.islice(steps, count)))


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


def _sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class FrameStore:
    """Frame files under one base folder."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def job_dir(self, job_id: str) -> Path:
        if not is_job_id(job_id):
            raise ValueError("not a job id")
        return self.base / job_id

    def work_dir(self, job_id: str, run: str = "") -> Path:
        """The job's work folder, or one run's within it (``run``: its attempt number),
        so two runs of one job (a worker taken for dead that still runs) never share one."""
        work = self.job_dir(job_id) / WORK_DIR
        if run and not run.isdigit():
            raise ValueError("not a run")
        return work / run if run else work

    def path(self, job_id: str, name: str) -> Path:
        if not FRAME_NAME.fullmatch(name):  # match() lets a trailing newline through
            raise ValueError("not a frame name")
        return self.job_dir(job_id) / name

    async def prepare(self, job_id: str, run: str = "") -> Path:
        """Create the job's folders and empty its (run's) work folder; return that."""
        work = self.work_dir(job_id, run)

        def _prepare() -> None:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True, exist_ok=True)

        await asyncio.to_thread(_prepare)
        return work

    async def finalize(
        self, job_id: str, done: Path, name: str
    ) -> tuple[int, str, tuple[int, int] | None]:
        """Hash the complete file ``done`` and move it to ``name``.

        Returns its size, SHA-256 and picture size (read from the image header).
        """
        target = self.path(job_id, name)

        def _finalize() -> tuple[int, str, tuple[int, int] | None]:
            size, checksum = _sha256(done)
            with done.open("rb") as fh:
                dimensions = image_size(fh.read(64 * 1024))
            os.replace(done, target)
            return size, checksum, dimensions

        return await asyncio.to_thread(_finalize)

    async def zip_stream(self, job_id: str, names: list[str]) -> AsyncIterator[bytes]:
        """The job's frames ``names`` as one zip, made while it is sent: stored entries
        (images are compressed already) with data descriptors, so nothing is staged on
        disk, an unread download costs no disk, and a cut one leaves nothing behind.
        Holds one frame in memory at a time. Frames whose file has gone are left out."""
        import zipfile  # only for zips, not on every start-up

        sink = _Sink()
        archive = zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED)
        try:
            for frame in names:
                path = self.path(job_id, frame)
                try:
                    await asyncio.to_thread(archive.write, path, frame)
                except FileNotFoundError:
                    continue  # deleted meanwhile: leave it out
                if sink.chunks:
                    yield sink.take()
            await asyncio.to_thread(archive.close)
            yield sink.take()
        finally:
            if archive.fp is not None:  # cut short: nothing to finish, nothing on disk
                archive.fp = None

    async def sweep_spool(self) -> None:
        """Remove zips older versions staged under the frames folder (``.zips``)."""
        await asyncio.to_thread(shutil.rmtree, self.base / ".zips", True)

    async def discard_work(self, job_id: str, run: str = "") -> None:
        """Remove the work folder of a run (partial files of a stopped or finished run),
        or of every run (and the work folder itself once no run has one)."""
        work = self.work_dir(job_id, run)

        def _discard() -> None:
            shutil.rmtree(work, ignore_errors=True)
            if run:
                with contextlib.suppress(OSError):  # another run's folder is still there
                    work.parent.rmdir()

        await asyncio.to_thread(_discard)

    async def remove(self, job_id: str, names: list[str]) -> None:
        """Remove some frame files of a job (``discard`` takes its whole folder)."""
        paths = [self.path(job_id, n) for n in names]

        def _unlink() -> None:
            for p in paths:
                p.unlink(missing_ok=True)

        await asyncio.to_thread(_unlink)

    async def discard(self, job_id: str) -> None:
        """Take the job's whole folder out of sight at once (a rename into ``.trash``);
        ``empty_trash`` removes it later, so a job of 100,000 frames is gone in a moment."""

        def _move() -> None:
            source, trash = self.job_dir(job_id), self.base / TRASH_DIR
            for _ in range(3):  # the emptier may remove an empty trash folder meanwhile
                trash.mkdir(parents=True, exist_ok=True)
                try:
                    os.rename(source, trash / f"{job_id}-{uuid.uuid4().hex}")
                    return
                except FileNotFoundError:
                    if not source.exists():
                        return  # no frames were ever written

        await asyncio.to_thread(_move)

    async def empty_trash(self, batch: int = 500) -> None:
        """Remove what ``discard`` set aside (also what a stopped process left there),
        ``batch`` files per worker-thread call, so a cancellation (shutdown) takes effect
        between batches and the next start goes on where this one stopped."""
        trash = self.base / TRASH_DIR
        while await asyncio.to_thread(trash.is_dir):
            removal, steps = _removal(trash), 0
            while (done := await asyncio.to_thread(_advance, removal, batch)) == batch:
                steps += done
            if steps + done <= 1 and await asyncio.to_thread(trash.is_dir):
                # a pass that removed nothing, and the trash is still there: it cannot be
                # removed (permissions?); do not spin on it
                log.warning("the trash under FRAMES_BASE_PATH cannot be emptied; left as is")
                return

    async def names(self, job_id: str) -> list[str]:
        """The frame files in the job's folder (temp and work files are not frames)."""

        def _list() -> list[str]:
            try:
                return [n for n in os.listdir(self.job_dir(job_id)) if FRAME_NAME.fullmatch(n)]
            except FileNotFoundError:
                return []

        return await asyncio.to_thread(_list)

    async def free_bytes(self) -> int:
        usage = await asyncio.to_thread(shutil.disk_usage, self.base)
        return usage.free
