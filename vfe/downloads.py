"""The HTTP answer of one stored file (a frame image or a storyboard sheet), by its SHA-256.

Stored files are named by their checksum, so the checksum is their ETag and a matching
``If-None-Match`` is a 304. From a folder the file is sent as it is; from a bucket, with
``FRAME_URLS=presigned``, the answer is a redirect to a presigned URL, and otherwise the
object is streamed through. ``ANSWERS`` declares these answers once for every such route.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from .endpoints import Answer
from .errors import NotFound
from .frames import PRESIGNED_FOR
from .storage import Storage


def answers(media: tuple[str, ...], what: str) -> tuple[Answer, ...]:
    """The 200, 304 and 307 answers of a route that serves stored files of ``media``."""
    return (
        Answer(200, f"{what}; its ETag is its SHA-256.", media=media, headers=("ETag",)),
        Answer(304, "Not modified.", headers=("ETag",)),
        Answer(307, "FRAME_URLS=presigned: a redirect to a presigned URL of the bucket, "
               "valid for an hour.", headers=("Location", "ETag")),
    )  # fmt: skip


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` or is ``*``, compared weakly as RFC 9110
    13.1.2 has it for GET (``W/"…"`` matches ``"…"``)."""
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


async def begun(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``chunks`` with the first one read already, so a failure to start (a store that is
    away: ``StorageUnavailable``, a 503; an object that has gone: ``FileNotFoundError``;
    nothing at all: ``StopAsyncIteration``) is raised before the answer begins, not as a
    ``200`` cut short."""
    first = await anext(chunks)

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return body()


async def stored_file(
    request: Request,
    stored: tuple[Storage, str],
    checksum: str,
    media_type: str,
    missing: str,
    *,
    presigned: bool,
    size: int | None = None,
) -> Response:
    """Answer ``request`` with the file ``stored`` (its storage and its name there), whose
    SHA-256 is ``checksum``: 304, the file, a redirect (``presigned``) or a stream. A file
    that has gone is a 404 saying ``missing``. ``size``, when known, answers a HEAD
    without reading the object."""
    storage, name = stored
    etag = f'"{checksum}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
    if _matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers=headers)
    path = storage.local_path(name)
    if path is not None:
        if not await asyncio.to_thread(path.is_file):
            raise NotFound(missing)
        return FileResponse(path, media_type=media_type, headers=headers)
    if presigned:
        url = await storage.presign(name, PRESIGNED_FOR)
        if url is not None:  # not cached past the URL's own life
            headers["Cache-Control"] = "private, max-age=600"
            return RedirectResponse(url, status_code=307, headers=headers)
    if size is not None:
        headers["Content-Length"] = str(size)
        if request.method == "HEAD":  # the size is known: nothing to fetch
            return Response(media_type=media_type, headers=headers)
    try:
        body = await begun(storage.read(name))  # a missing object is a 404, not a cut response
    except (FileNotFoundError, StopAsyncIteration):
        raise NotFound(missing) from None
    return StreamingResponse(body, media_type=media_type, headers=headers)
