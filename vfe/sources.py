"""Where a job's video comes from: a local path under the videos root, or an upload.

Local paths are resolved (symlinks followed) and must land inside ``VIDEOS_BASE_PATH``;
every way of failing that check gives the same answer, so a client cannot learn which
files exist outside it. Uploads are streamed to ``UPLOADS_PATH`` under a generated name,
never held in memory, and cut off as soon as they pass ``MAX_UPLOAD_MB``. URL sources
are downloaded by ``fetch.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from .errors import BadRequest, PayloadTooLarge, ValidationFailed
from .models import LIST_FIELDS, JobSpec

_NOT_FOUND = (
    "video_source must name a video file inside the server's videos folder "
    "(VIDEOS_BASE_PATH, by default runtime/videos), as a path relative to it; "
    "GET /videos lists the videos there"
)
MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = len(JobSpec.model_fields) + 1  # every field once, and the file
MAX_LISTED = 1000  # videos GET /videos lists at most
VIDEO_SUFFIXES = frozenset(  # the usual names of what ffmpeg.DEMUXERS reads
    ".mp4 .m4v .mov .mkv .webm .avi .ts .mts .m2ts .mpg .mpeg .m2v .vob .flv .wmv .asf .3gp "
    ".3g2 .mj2 .ogv .ogg .mxf .ivf .gif .dv .nut .y4m".split()  # not raw H.264/HEVC: untimed
)


@dataclass(frozen=True)
class VideoFile:
    """A video under the videos root: its path relative to it, size and change time."""

    path: str
    size_bytes: int
    modified_at: float


def list_videos(videos_root: Path, limit: int = MAX_LISTED) -> tuple[list[VideoFile], bool]:
    """The video files under ``videos_root`` (by suffix, hidden names skipped, symlinks
    followed only when they stay inside), sorted by path; and whether the list was cut
    at ``limit``. Blocking: run it in a thread."""
    root = videos_root.resolve()
    found: list[VideoFile] = []
    truncated = False
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() not in VIDEO_SUFFIXES:
                continue
            path = Path(folder) / name
            try:
                real = path.resolve(strict=True)
                stat = real.stat()
            except (OSError, RuntimeError):
                continue
            if not real.is_relative_to(root) or not real.is_file():
                continue
            if len(found) == limit:
                truncated = True
                break
            found.append(VideoFile(path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime))
        if truncated:
            break
    found.sort(key=lambda v: v.path)
    return found, truncated


def resolve_local(video_source: str, videos_root: Path) -> Path:
    """The real path of ``video_source`` inside ``videos_root``, or ``BadRequest``."""
    if "\x00" in video_source or video_source.endswith(("/", "\\")):  # a file, not a folder
        raise BadRequest(_NOT_FOUND)
    root = videos_root.resolve()
    candidate = Path(video_source)
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise BadRequest(_NOT_FOUND) from None
    if not real.is_relative_to(root) or not real.is_file():
        raise BadRequest(_NOT_FOUND)
    return real


def display_name(filename: str | None) -> str:
    """A client's file name reduced to something safe to show (never used as a path)."""
    base = re.split(r"[\\/]", filename or "")[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable()).strip()
    return cleaned[:255] or "upload"


def text_fields(pairs: Iterable[tuple[str, str]], where: str) -> dict[str, str]:
    """A query string's or a form's fields by name. A list field (``timestamps``,
    ``reject``) given again adds to it, as checkboxes and many clients send a list; any
    other field given twice is a 422 (which value was meant cannot be told)."""
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            if name not in LIST_FIELDS:
                raise ValidationFailed.one([where, name], f"{name} is given more than once")
            value = f"{fields[name]},{value}"
        fields[name] = value
    return fields


@dataclass
class Upload:
    """A multipart request: its text fields and, if there was one, the stored file."""

    fields: list[tuple[str, str]] = field(default_factory=list)  # in order, repeats kept
    path: Path | None = None
    filename: str | None = None
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)  # of the file's bytes


class _Receiver:
    """python-multipart callbacks collecting fields and writing the file part to disk."""

    def __init__(self, target: Path, limit: int) -> None:
        self.target = target
        self.limit = limit
        self.upload = Upload()
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.name = ""
        self.is_file = False
        self.buffer = bytearray()
        self.pending: list[bytes] = []  # file data waiting to be written off the loop
        self.parts = 0
        self.ended = False  # the closing boundary was seen

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise BadRequest(f"too many multipart parts (at most {MAX_PARTS})")
        self.disposition = b""
        self.buffer = bytearray()
        self.is_file = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        name = options.get(b"name")
        if name is None:
            raise BadRequest("each multipart part needs a name (Content-Disposition)")
        self.name = name.decode("utf-8", "replace")
        if b"filename" in options:
            if self.name != "file":
                raise BadRequest(f"unexpected file field {self.name!r}; send the video as 'file'")
            if self.upload.path is not None:
                raise BadRequest("send one file per job")
            self.is_file = True
            self.upload.path = self.target
            self.upload.filename = display_name(options[b"filename"].decode("utf-8", "replace"))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.is_file:
            self.upload.size += len(chunk)
            if self.upload.size > self.limit:
                raise PayloadTooLarge(_too_large(self.limit))
            self.upload.digest.update(chunk)
            self.pending.append(chunk)
        else:
            self.buffer.extend(chunk)
            if len(self.buffer) > MAX_FIELD_BYTES:
                raise BadRequest(f"field {self.name!r} is too long")

    def on_part_end(self) -> None:
        if not self.is_file:
            self.upload.fields.append((self.name, self.buffer.decode("utf-8", "replace")))

    def on_end(self) -> None:
        self.ended = True


def _too_large(limit: int) -> str:
    return f"the upload is larger than MAX_UPLOAD_MB ({limit / 1024 / 1024:g} MiB)"


async def receive_upload(
    content_type: str,
    content_length: str | None,
    stream: AsyncIterator[bytes],
    uploads_dir: Path,
    limit: int,
) -> Upload:
    """Stream a multipart body: fields into memory, the ``file`` part to ``uploads_dir``.

    Raises ``PayloadTooLarge`` as soon as the file passes ``limit`` bytes (or at once when
    Content-Length says it will) and ``BadRequest`` for a malformed body; either way the
    partial file is removed.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart body without a boundary")
    if content_length and content_length.isdigit() and int(content_length) > limit + 1024 * 1024:
        raise PayloadTooLarge(_too_large(limit))
    target = uploads_dir / f"{uuid.uuid4()}.upload"
    receiver = _Receiver(target, limit)
    handle: IO[bytes] | None = None
    try:
        parser = MultipartParser(  # raises FormParserError for an over-long boundary
            boundary,
            {
                "on_part_begin": receiver.on_part_begin,
                "on_part_data": receiver.on_part_data,
                "on_part_end": receiver.on_part_end,
                "on_header_field": receiver.on_header_field,
                "on_header_value": receiver.on_header_value,
                "on_header_end": receiver.on_header_end,
                "on_headers_finished": receiver.on_headers_finished,
                "on_end": receiver.on_end,
            },
        )
        async for chunk in stream:
            parser.write(chunk)
            if receiver.pending:
                if handle is None:
                    handle = await asyncio.to_thread(target.open, "wb")
                data = b"".join(receiver.pending)
                receiver.pending.clear()
                await asyncio.to_thread(handle.write, data)
        parser.finalize()
        if not receiver.ended:  # python-multipart's finalize() does not check this
            raise BadRequest("incomplete multipart body: the closing boundary is missing")
        if receiver.upload.path is not None and handle is None:
            handle = await asyncio.to_thread(target.open, "wb")  # an empty file part
    except FormParserError:
        await _discard(handle, target)
        raise BadRequest("malformed multipart body") from None
    except BaseException:
        await _discard(handle, target)
        raise
    if handle is not None:
        await asyncio.to_thread(handle.close)
    return receiver.upload


async def _discard(handle: IO[bytes] | None, target: Path) -> None:
    if handle is not None:
        await asyncio.to_thread(handle.close)
    await asyncio.to_thread(target.unlink, True)
