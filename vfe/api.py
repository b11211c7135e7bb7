"""JSON endpoints: validate input, call the domain, shape the output.

No SQL and no FFmpeg here. Job ids that are not canonical UUIDs are answered 404 before
they reach the store or the file system; every error is a ``VfeError`` rendered by the
one handler in ``app.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from . import fetch, ffmpeg
from .cache import RECENT_GENERATION, job_key, recent_key
from .errors import BadRequest, NotFound, PayloadTooLarge, ValidationFailed
from .frames import FRAME_NAME, is_job_id
from .models import Job, JobSpec, SourceType, frame_view, iso, job_view
from .services import Services, services
from .sources import Upload, list_videos, receive_upload, resolve_local

MAX_IDEMPOTENCY_KEY = 200
RECENT_TTL = 5.0  # seconds: recent-frames answers also age out as time passes
UNFINISHED_TTL = 2.0  # seconds a running or queued job's cached status may live
_MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


def job_id_param(request: Request) -> str:
    job_id = str(request.path_params["job_id"])
    if not is_job_id(job_id):
        raise NotFound("job not found")
    return job_id


def _query_number(
    request: Request, name: str, default: float, low: float, high: float, integer: bool = False
) -> Any:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value: float = int(raw) if integer else float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # also false for NaN
        kind = "a whole number" if integer else "a number"
        msg = f"must be {kind} from {low:g} to {high:g}"
        raise ValidationFailed.one(["query", name], msg)
    return value


def _validation_errors(exc: ValidationError, origin: Mapping[str, str]) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        field = str(err["loc"][0]) if err["loc"] else ""
        errors.append(
            {
                "loc": [origin.get(field, "body"), *err["loc"]],
                "msg": err["msg"],
                "type": err["type"],
            }
        )
    return errors


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(
                f"the JSON body is larger than MAX_BODY_KB ({limit / 1024:g} KiB)"
            )
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest(
            'the JSON body must be an object like {"video_source": ..., "interval": 5}'
        )
    return data


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable():
        msg = f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters (a UUID is a good key)"
        raise ValidationFailed.one(["header", "Idempotency-Key"], msg)
    return key


def _fingerprint(spec: JobSpec, upload: Upload | None) -> str:
    """A digest of what a request asks for: its fields and, for an upload, the bytes."""
    digest = hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode())
    if upload is not None and upload.path is not None:
        digest.update(b"\0file\0" + upload.digest.digest())
    return digest.hexdigest()


async def _source(svc: Services, spec: JobSpec, upload: Upload | None) -> tuple[SourceType, Path]:
    """Where the job's video is: the upload, a download of the URL, or a local path."""
    settings = svc.settings
    if upload is not None and upload.path is not None:
        return SourceType.UPLOAD, upload.path
    if fetch.is_url(spec.video_source):
        if not settings.allow_url_sources:
            raise BadRequest(
                "URL sources are turned off on this server (ALLOW_URL_SOURCES); "
                "give a path inside the videos folder or upload the file"
            )
        url = fetch.check_url(spec.video_source)
        got = await fetch.download(
            url,
            settings.uploads_path,
            max_bytes=settings.max_download_bytes,
            timeout=settings.url_timeout_seconds,
            policy=settings.allow_private_urls,
        )
        return SourceType.URL, got.path
    path = await asyncio.to_thread(resolve_local, spec.video_source, settings.videos_base_path)
    return SourceType.PATH, path


async def submit_job(request: Request) -> Response:
    """POST /video-job: JSON body, query string, or multipart with a ``file`` part.

    Nothing is recorded until the video is known to be one FFmpeg reads and within the
    limits: an upload is streamed to disk and a URL downloaded first, both probed. With an
    ``Idempotency-Key`` a repeat of the same request answers the job it made.
    """
    svc = services(request)
    key = _idempotency_key(request)
    content_type = request.headers.get("content-type", "")
    data: dict[str, Any] = dict(request.query_params)
    origin = {name: "query" for name in data}
    upload = None
    if content_type.startswith("multipart/form-data"):
        upload = await receive_upload(
            content_type,
            request.headers.get("content-length"),
            request.stream(),
            svc.settings.uploads_path,
            svc.settings.max_upload_bytes,
        )
        data.update(upload.fields)
        origin.update({name: "body" for name in upload.fields})
    else:
        body = await _json_body(request, svc.settings.max_body_bytes)
        data.update(body)
        origin.update({name: "body" for name in body})
    path: Path | None = upload.path if upload is not None else None
    owned = path is not None
    try:
        if upload is not None and upload.path is not None:
            if data.get("video_source"):
                raise BadRequest("send either a file or video_source, not both")
            data["video_source"] = upload.filename
        try:
            spec = JobSpec.model_validate(data)
        except ValidationError as exc:
            raise ValidationFailed(_validation_errors(exc, origin)) from None
        idempotency = None
        if key is not None:
            idempotency = (key, _fingerprint(spec, upload))
            earlier = await svc.store.find_idempotent(key)
            if earlier is not None:
                job = await svc.jobs.idempotent(earlier, idempotency)
                raise _Repeat(job)
        source_type, path = await _source(svc, spec, upload)
        owned = source_type.owned
        await svc.jobs.admit(spec, path)
        job = await svc.jobs.submit(spec, source_type, path, idempotency)
        if job.source_path != str(path):  # the same request, made by a racing twin
            raise _Repeat(job)
    except _Repeat as repeat:
        if owned and path is not None:
            await asyncio.to_thread(path.unlink, True)
        return _accepted(repeat.job, "Job already submitted with this Idempotency-Key")
    except BaseException:
        if owned and path is not None:
            await asyncio.to_thread(path.unlink, True)
        raise
    return _accepted(job, "Job submitted successfully")


class _Repeat(Exception):
    """The request repeats an earlier one (same Idempotency-Key and body): answer its job."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.id)
        self.job = job


def _accepted(job: Job, message: str) -> Response:
    return JSONResponse({"job_id": job.id, "status": job.status.value, "message": message})


async def job_status(request: Request) -> Response:
    """GET /job-status/{job_id}: the job's fields, progress, timings and video facts."""
    svc = services(request)
    job_id = job_id_param(request)
    key = job_key(job_id)
    cached = await svc.cache.get(key)
    if cached is not None:
        return Response(cached, media_type="application/json")
    job = await svc.store.get_job(job_id)
    if job is None:
        raise NotFound("job not found")
    body = json.dumps(job_view(job, time.time()))
    # A read racing an update can store the view from just before it; for a running job
    # that must not outlive the next second or two, a finished job's view does not change.
    ttl = (
        svc.settings.cache_ttl
        if job.status.finished
        else min(UNFINISHED_TTL, svc.settings.cache_ttl)
    )
    await svc.cache.set(key, body, ttl)
    return Response(body, media_type="application/json")


async def list_jobs(request: Request) -> Response:
    """GET /jobs: the newest jobs first (``limit``, default 50)."""
    svc = services(request)
    limit = _query_number(request, "limit", 50, 1, 1000, integer=True)
    now = time.time()
    jobs = await svc.store.list_jobs(limit=limit)
    return JSONResponse({"jobs": [job_view(j, now) for j in jobs], "count": len(jobs)})


async def list_frames(request: Request) -> Response:
    """GET /frames/{job_id}: frames in time order, each with its URL; offset/limit paging."""
    svc = services(request)
    job_id = job_id_param(request)
    offset = _query_number(request, "offset", 0, 0, 10**9, integer=True)
    limit = _query_number(request, "limit", 1000, 1, 10000, integer=True)
    if await svc.store.get_job(job_id) is None:
        raise NotFound("job not found")
    frames = await svc.store.list_frames(job_id, offset, limit)
    total = await svc.store.count_frames(job_id)
    return JSONResponse(
        {
            "job_id": job_id,
            "frames": [frame_view(f) for f in frames],
            "total_count": total,
            "offset": offset,
            "limit": limit,
        }
    )


async def frame_image(request: Request) -> Response:
    """GET /frames/{job_id}/{name}: the image, with an ETag (its SHA-256)."""
    svc = services(request)
    job_id = job_id_param(request)
    name = str(request.path_params["name"])
    if not FRAME_NAME.fullmatch(name):
        raise NotFound("frame not found")
    frame = await svc.store.get_frame(job_id, name)
    if frame is None:
        raise NotFound("frame not found")
    etag = f'"{frame.checksum}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    path = svc.frames.path(job_id, name)
    if not await asyncio.to_thread(path.is_file):
        raise NotFound("frame not found")
    media_type = _MEDIA_TYPES[name.rsplit(".", 1)[1]]
    return FileResponse(path, media_type=media_type, headers=headers)


async def recent_frames(request: Request) -> Response:
    """GET /dashboard/recent-frames: frames made in the last ``since_minutes`` (cached)."""
    svc = services(request)
    since_minutes = _query_number(request, "since_minutes", 60.0, 0.0, 525600.0)
    limit = _query_number(request, "limit", 100, 1, 1000, integer=True)
    job_id = request.query_params.get("job_id") or None
    if job_id is not None and len(job_id) > 200:
        raise ValidationFailed.one(["query", "job_id"], "too long")
    generation = await svc.cache.get(RECENT_GENERATION) or "0"
    key = recent_key(generation, since_minutes, limit, job_id)
    cached = await svc.cache.get(key)
    if cached is not None:
        return Response(cached, media_type="application/json")
    frames = await svc.store.recent_frames(time.time() - since_minutes * 60, job_id, limit)
    body = json.dumps(
        {
            "frames": [frame_view(f) for f in frames],
            "total_count": len(frames),
            "since_minutes": since_minutes,
            "job_id": job_id,
        }
    )
    await svc.cache.set(key, body, min(RECENT_TTL, svc.settings.cache_ttl))
    return Response(body, media_type="application/json")


async def delete_job(request: Request) -> Response:
    """DELETE /job/{job_id}: cancel the job if it runs, remove it and its files."""
    svc = services(request)
    job = await svc.jobs.delete(job_id_param(request))
    if job.status.finished:
        status, message = job.status.value, "Job and its frames removed"
    else:
        status, message = "cancelled", "Job cancelled; it and its frames removed"
    return JSONResponse({"job_id": job.id, "status": status, "message": message})


async def health(request: Request) -> Response:
    """GET /health: each component's state; 200 when the service can serve, else 503."""
    svc = services(request)
    database_ok = await svc.store.ping()
    backend = await svc.cache.check()
    ffmpeg_ok = ffmpeg.installed()
    free_mb = round(await svc.frames.free_bytes() / 1024 / 1024, 1)
    can_serve = database_ok and ffmpeg_ok and svc.jobs.accepting
    stats = svc.cache.stats
    body = {
        "status": "ok" if can_serve else "unavailable",
        "database": {"ok": database_ok, "backend": "sqlite"},
        "cache": {
            "backend": backend,
            "redis": "connected" if backend == "redis" else "unreachable",
            "hits": stats.hits,
            "misses": stats.misses,
        },
        "ffmpeg": {"ok": ffmpeg_ok, "version": svc.ffmpeg_version},
        "queue": {"depth": svc.jobs.queue_depth, "max": svc.settings.max_queue_size},
        "jobs": {
            "running": len(svc.jobs.running),
            "max_concurrent": svc.settings.max_concurrent_jobs,
        },
        "disk": {"free_mb": free_mb, "min_free_mb": svc.settings.min_free_disk_mb},
    }
    return JSONResponse(body, status_code=200 if can_serve else 503)


async def health_live(request: Request) -> Response:
    """GET /health/live: the process and its event loop answer. Nothing else is checked,
    so a slow database or a missing Redis never gets a running server restarted."""
    return JSONResponse({"status": "ok"})


async def health_ready(request: Request) -> Response:
    """GET /health/ready: 200 when this instance can take jobs (database answers, FFmpeg
    is installed, it is not shutting down), else 503, so it gets no traffic meanwhile."""
    svc = services(request)
    checks = {
        "database": await svc.store.ping(),
        "ffmpeg": ffmpeg.installed(),
        "accepting_jobs": svc.jobs.accepting,
        "disk": await svc.jobs.disk_ok(),
    }
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", **checks},
        status_code=200 if ready else 503,
    )


async def videos(request: Request) -> Response:
    """GET /videos: the video files a path job may name (relative to VIDEOS_BASE_PATH)."""
    svc = services(request)
    found, truncated = await asyncio.to_thread(list_videos, svc.settings.videos_base_path)
    listed = [
        {"path": v.path, "size_bytes": v.size_bytes, "modified_at": iso(v.modified_at)}
        for v in found
    ]
    return JSONResponse({"videos": listed, "count": len(listed), "truncated": truncated})


async def frames_zip(request: Request) -> Response:
    """GET /job/{job_id}/frames.zip: every frame of the job in one zip, in time order."""
    svc = services(request)
    job_id = job_id_param(request)
    if await svc.store.get_job(job_id) is None:
        raise NotFound("job not found")
    frames = await svc.store.list_frames(job_id, 0, 10**9)
    names = [f.filename for f in frames]
    archive = await svc.frames.zip(job_id, names)
    return FileResponse(
        archive,
        media_type="application/zip",
        filename=f"vfe-{job_id}-frames.zip",
        background=BackgroundTask(_unlink, archive),
    )


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
