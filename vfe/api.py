"""JSON endpoints for jobs and frames: validate input, call the domain, return views.

No SQL and no FFmpeg here. Each handler is declared with ``endpoint`` (its parameters,
query model and answers, which are also its OpenAPI description); job ids that are not
canonical UUIDs are answered 404 before a handler runs. Every error is a ``VfeError``
rendered by the one handler in ``app.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

from pydantic import Field, StringConstraints, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .cache import RECENT_GENERATION, job_key, recent_key
from .downloads import answers, begun, stored_file
from .endpoints import (
    Answer,
    Body,
    Header,
    PathParam,
    Query,
    answer,
    endpoint,
    error,
    field_errors,
    ok,
)
from .errors import BadRequest, NotFound, PayloadTooLarge, ValidationFailed
from .frames import FRAME_NAME, is_job_id
from .models import DeliveryStatus, Job, JobSpec, JobStatus, SourceType
from .services import Services, services
from .sources import Upload, list_videos, receive_upload, text_fields
from .storyboard import Storyboard, zip_entries
from .submit import locate
from .views import (
    DeleteAnswer,
    FrameList,
    FrameView,
    JobList,
    JobView,
    RecentFrames,
    SubmitAnswer,
    VideoFile,
    VideoList,
    frames_manifest,
    moment,
)

MAX_INT_DIGITS = 30  # far beyond every field's bound; longer integers are refused as such
ALL_FRAMES = 10**9  # a page "without limit": a job has at most MAX_FRAMES_PER_JOB frames
NO_FRAMES = "No frames extracted yet"  # the original service's words
RECENT_TTL = 5.0  # seconds: recent-frames answers also age out as time passes
UNFINISHED_TTL = 2.0  # seconds a running or queued job's cached status may live
_MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
SPEC_FIELDS = frozenset(JobSpec.model_fields)
EXAMPLE_SOURCE = "talks/keynote.mp4"  # the README's example; the schemathesis test has it

UUID_PATTERN = "[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}"  # a job id, as vfe writes them
JOB_ID = PathParam(
    "job_id",
    {"type": "string", "format": "uuid"},
    "Anything but a UUID answers 404.",
    is_job_id,
    "Job not found",
)
FRAME_FILE = PathParam(
    "name",
    {"type": "string", "pattern": FRAME_NAME.pattern.replace(r"\d", "[0-9]")},
    "The frame's filename, as /frames lists it.",
    lambda name: FRAME_NAME.fullmatch(name) is not None,
    "Frame not found",
)
IDEMPOTENCY_KEY = Header(
    "Idempotency-Key",
    "Sending the same key with the same request again answers with the same job (200) "
    "instead of making a second one; the same key with another request is 409.",
    TypeAdapter(
        Annotated[str, StringConstraints(min_length=1, max_length=200, pattern="^[ -~]+$")]
    ),
    hint="must be 1 to 200 printable ASCII characters (a UUID is a good key)",
)
SUBMIT_BODY = Body(JobSpec, {"video_source": EXAMPLE_SOURCE, "interval": 2.5, "storyboard": True},
                   "file", "video_source")  # fmt: skip
JOB_NOT_FOUND = error(404, "No such job (also for an id that is not a UUID).")
NOT_DELETED = "Job not found or could not be cancelled"  # the original service's words
DELETED_JOB_ID = replace(JOB_ID, not_found=NOT_DELETED)
JOB_LINKS = {"status": "getJobStatus", "events": "streamJobEvents", "frames": "listFrames",
             "zip": "downloadFramesZip", "webhook": "resendWebhook",
             "delete": "deleteJob"}  # fmt: skip


def job_id_param(request: Request) -> str:
    """The job id of the path, already checked by the route (see ``JOB_ID``)."""
    return str(request.path_params["job_id"])


async def stored_job(svc: Services, job_id: str) -> Job:
    """The job ``job_id``, or 404 ``Job not found``."""
    job = await svc.store.get_job(job_id)
    if job is None:
        raise NotFound("Job not found")
    return job


async def _read_body(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is larger than MAX_BODY_KB ({limit / 1024:g} KiB)")
    return bytes(body)


def _json_int(text: str) -> int | float:
    """A JSON integer; one too long to be any field's value reads as infinity, which the
    field then refuses (a 422 naming it) instead of Python's digit limit raising."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return -math.inf if text.startswith("-") else math.inf
    return int(text)


async def _body_fields(request: Request, content_type: str, limit: int) -> dict[str, Any]:
    """The fields of a JSON body, or of a form-encoded one (``curl -d 'video_source=…'``)."""
    body = await _read_body(request, limit)
    if not body.strip():
        return {}
    # curl -d sends JSON as a form unless told otherwise: a body that is an object is JSON
    if content_type.startswith(
        "application/x-www-form-urlencoded"
    ) and not body.lstrip().startswith(b"{"):
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("the form body is not valid (name=value pairs joined by &)") from None
        return text_fields(pairs, "body")
    try:
        data = json.loads(body, parse_int=_json_int)
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        raise BadRequest(
            "the body is not valid JSON; send JSON with Content-Type: application/json, "
            "a form (-d 'video_source=…'), or the fields in the query string"
        ) from None
    if not isinstance(data, dict):
        raise BadRequest(
            'the JSON body must be an object like {"video_source": ..., "interval": 5}'
        )
    return data


def _fingerprint(spec: JobSpec, upload: Upload | None) -> str:
    """A digest of what a request asks for: its fields and, for an upload, the bytes."""
    digest = hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode())
    if upload is not None and upload.path is not None:
        digest.update(b"\0file\0" + upload.digest.digest())
    return digest.hexdigest()


@endpoint(
    "POST",
    "/video-job",
    "submitJob",
    "Submit a job",
    ok(SubmitAnswer, "Queued; completed at once when an earlier job made the same frames "
       "(reuse); or, for a repeated Idempotency-Key, the job it made.",
       links=JOB_LINKS),
    error(400, "A bad or refused video_source or URL; a file that is not a video; a body "
          "that is not a JSON object; both a file and video_source; a malformed multipart "
          "body."),
    error(409, "The Idempotency-Key was used before with another request."),
    error(413, "An upload over MAX_UPLOAD_MB, a download over MAX_DOWNLOAD_MB, or a JSON or "
          "query body over MAX_BODY_KB."),
    error(503, "The queue is full, the service is shutting down, or the storage cannot be "
          "reached.", headers=("Retry-After",)),
    error(507, "The disk for frames has less than MIN_FREE_DISK_MB free."),
    headers=(IDEMPOTENCY_KEY,),
    body=SUBMIT_BODY,
    description="Send the fields as JSON, as a query string, or as a multipart form with the "
    "video in `file` (then leave out video_source). Query fields are merged with the body's, "
    "which win.",
)  # fmt: skip
async def submit_job(request: Request) -> Response:
    """POST /video-job: JSON body, query string, or multipart with a ``file`` part.

    Nothing is recorded until the video is known to be one FFmpeg reads and within the
    limits: an upload is streamed to disk and a URL downloaded first, both probed. With an
    ``Idempotency-Key`` a repeat of the same request answers the job it made.
    """
    svc = services(request)
    key: str | None = IDEMPOTENCY_KEY.read(request)
    content_type = request.headers.get("content-type", "")
    # Unknown query parameters are ignored (a cache-buster such as _=123); the body's are not.
    query = [(k, v) for k, v in request.query_params.multi_items() if k in SPEC_FIELDS]
    data: dict[str, Any] = text_fields(query, "query")
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
        multipart = text_fields(upload.fields, "body")
        data.update(multipart)
        origin.update({name: "body" for name in multipart})
    else:
        body = await _body_fields(request, content_type, svc.settings.max_body_bytes)
        data.update(body)
        origin.update({name: "body" for name in body})
    # the service's own copy of the video (an upload or a download), removed at the end:
    # what a job keeps is stored apart from it
    path: Path | None = upload.path if upload is not None else None
    try:
        if upload is not None and upload.path is not None:
            if data.get(SUBMIT_BODY.replaces):
                raise BadRequest(f"send either a file or {SUBMIT_BODY.replaces}, not both")
            data[SUBMIT_BODY.replaces] = upload.filename
        try:
            spec = JobSpec.model_validate(data)
        except ValidationError as exc:
            raise ValidationFailed(field_errors(exc, origin)) from None
        desk = svc.jobs.submissions
        idempotency = None
        if key is not None:
            idempotency = (key, _fingerprint(spec, upload))
            earlier = await svc.store.find_idempotent(key)
            if earlier is not None:
                job = await desk.idempotent(earlier, idempotency)
                raise _Repeat(job)
        source = await locate(svc.settings, spec, upload)
        if source.type.owned:
            path = source.path
        message = "Job submitted successfully"
        made = await desk.reuse(spec, source, idempotency) if spec.reuse else None
        if made is not None:
            message = "Job completed at once with the frames of an earlier job (same video, "
            message += 'same options); send "reuse": false to extract afresh'
        else:
            field = "file" if source.type is SourceType.UPLOAD else None
            video = await desk.admit(spec, source.path, field)
            made = await desk.submit(spec, source, idempotency, video)
        job, created = made
        if not created:  # the same request, made by a racing twin
            raise _Repeat(job)
    except _Repeat as repeat:
        return _accepted(repeat.job, "Job already submitted with this Idempotency-Key")
    finally:
        if path is not None:
            await asyncio.to_thread(path.unlink, True)
    return _accepted(job, message)


class _Repeat(Exception):
    """The request repeats an earlier one (same Idempotency-Key and body): answer its job."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.id)
        self.job = job


def _accepted(job: Job, message: str) -> Response:
    return answer(SubmitAnswer(job_id=job.id, status=job.status, message=message))


@endpoint(
    "GET",
    "/job-status/{job_id}",
    "getJobStatus",
    "A job's status, progress and video facts",
    ok(JobView, "The job."),
    JOB_NOT_FOUND,
    params=(JOB_ID,),
)
async def job_status(request: Request) -> Response:
    """GET /job-status/{job_id}: the job's fields, progress, timings and video facts."""
    svc = services(request)
    job_id = job_id_param(request)
    key = job_key(job_id)
    cached = await svc.cache.get(key)
    if cached is not None:
        return Response(cached, media_type="application/json")
    job = await stored_job(svc, job_id)
    webhook = await svc.store.get_delivery(job_id) if job.status.finished else None
    body = JobView.of(job, time.time(), webhook).model_dump_json()
    # A read racing an update can store the view from just before it; for a running job
    # (or a webhook being tried) that must not outlive the next second or two.
    settled = webhook is None or webhook.status is not DeliveryStatus.PENDING
    ttl = svc.settings.cache_ttl if job.status.finished and settled else UNFINISHED_TTL
    ttl = min(ttl, svc.settings.cache_ttl)
    await svc.cache.set(key, body, ttl)
    return Response(body, media_type="application/json")


class JobsQuery(Query):
    limit: int = Field(50, ge=1, le=1000, description="How many jobs (the newest).")
    status: JobStatus | None = Field(None, description="Only the jobs in this status.")
    before: str | None = Field(
        None, max_length=80, pattern=rf"^[0-9]+\.[0-9]+_{UUID_PATTERN}$",
        description="The `next` of a page: the jobs after that page, newest first.",
    )  # fmt: skip


@endpoint("GET", "/jobs", "listJobs", "Recent jobs, newest first", ok(JobList, "The jobs."),
          query=JobsQuery)  # fmt: skip
async def list_jobs(request: Request, query: JobsQuery) -> JobList:
    """GET /jobs: the newest jobs first, a page at a time (``next`` as ``before``: keyset
    paging on ``created_at`` and id, so jobs made or deleted meanwhile shift nothing)."""
    now = time.time()
    after = None
    if query.before is not None:
        created, _, job_id = query.before.partition("_")
        after = (float(created), job_id)
    statuses = (query.status,) if query.status is not None else ()
    store = services(request).store
    jobs = await store.list_jobs(statuses, query.limit + 1, before=after)
    page = jobs[: query.limit]
    webhooks = await store.get_deliveries([j.id for j in page if j.status.finished])
    more = f"{page[-1].created_at!r}_{page[-1].id}" if len(jobs) > query.limit else None
    views = [JobView.of(j, now, webhooks.get(j.id)) for j in page]
    return JobList(jobs=views, count=len(page), next=more)


class FramesQuery(Query):
    offset: int = Field(0, ge=0, le=10**9, description="Frames to skip.")
    limit: int | None = Field(
        None, ge=1, le=10000, description="Frames in this page, at most; without it, every frame."
    )


@endpoint(
    "GET",
    "/frames/{job_id}",
    "listFrames",
    "A job's frames in time order",
    ok(FrameList, "A page of frames."),
    JOB_NOT_FOUND,
    params=(JOB_ID,),
    query=FramesQuery,
)
async def list_frames(request: Request, query: FramesQuery) -> FrameList:
    """GET /frames/{job_id}: frames in time order, each with its URL; offset/limit paging."""
    svc = services(request)
    job_id = job_id_param(request)
    if await svc.store.get_job(job_id) is None:
        raise NotFound("Job not found")
    page = query.limit if query.limit is not None else ALL_FRAMES
    frames = await svc.store.list_frames(job_id, query.offset, page)
    total = await svc.store.count_frames(job_id)
    return FrameList(
        job_id=job_id,
        frames=[FrameView.of(f) for f in frames],
        total_count=total,
        offset=query.offset,
        limit=query.limit,
        message=None if total else NO_FRAMES,
    )


@endpoint(
    "GET",
    "/frames/{job_id}/{name}",
    "getFrameImage",
    "One frame image",
    *answers(tuple(_MEDIA_TYPES.values()), "The image"),
    error(404, "No such job or frame."),
    params=(JOB_ID, FRAME_FILE),
    headers=(Header("If-None-Match", "304 if it is the frame's ETag."),),
)  # fmt: skip
async def frame_image(request: Request) -> Response:
    """GET /frames/{job_id}/{name}: the image, with an ETag (its SHA-256)."""
    svc = services(request)
    job_id = job_id_param(request)
    name = str(request.path_params["name"])
    frame = await svc.store.get_frame(job_id, name)
    if frame is None:
        raise NotFound("Frame not found")
    media_type = _MEDIA_TYPES[name.rsplit(".", 1)[1]]
    return await stored_file(
        request, svc.frames.stored(frame), frame.checksum, media_type, "Frame not found",
        presigned=svc.settings.frame_urls == "presigned", size=frame.size_bytes,
    )  # fmt: skip


class RecentQuery(Query):
    since_minutes: float = Field(60.0, ge=0, le=525600, allow_inf_nan=False,
                                 description="How far back, in minutes.")  # fmt: skip
    job_id: str | None = Field(None, max_length=200,
                               description="Only this job's frames (matched exactly).")  # fmt: skip
    limit: int = Field(100, ge=1, le=1000, description="Frames, at most.")


@endpoint(
    "GET",
    "/dashboard/recent-frames",
    "recentFrames",
    "Frames made recently, across jobs",
    ok(RecentFrames, "Frames, newest first."),
    query=RecentQuery,
)
async def recent_frames(request: Request, query: RecentQuery) -> Response:
    """GET /dashboard/recent-frames: frames made in the last ``since_minutes`` (cached)."""
    svc = services(request)
    job_id = query.job_id or None
    generation = await svc.cache.get(RECENT_GENERATION) or "0"
    key = recent_key(generation, query.since_minutes, query.limit, job_id)
    cached = await svc.cache.get(key)
    if cached is not None:
        return Response(cached, media_type="application/json")
    since = time.time() - query.since_minutes * 60
    frames = await svc.store.recent_frames(since, job_id, query.limit)
    body = RecentFrames(
        frames=[FrameView.of(f) for f in frames],
        total_count=len(frames),
        since_minutes=int(query.since_minutes)
        if query.since_minutes.is_integer()
        else query.since_minutes,
        job_id=job_id,
    ).model_dump_json()
    await svc.cache.set(key, body, min(RECENT_TTL, svc.settings.cache_ttl))
    return Response(body, media_type="application/json")


@endpoint(
    "DELETE",
    "/job/{job_id}",
    "deleteJob",
    "Cancel a job and remove it and its frames",
    ok(DeleteAnswer, "Removed."),
    error(404, "No such job (also for an id that is not a UUID)."),
    params=(DELETED_JOB_ID,),
)
async def delete_job(request: Request) -> DeleteAnswer:
    """DELETE /job/{job_id}: cancel the job if it runs, remove it and its files."""
    job_id = job_id_param(request)
    try:
        job = await services(request).jobs.submissions.delete(job_id)
    except NotFound:
        raise NotFound(NOT_DELETED) from None
    status = job.status if job.status.finished else JobStatus.CANCELLED
    message = f"Job {job_id} cancelled and cleaned up successfully"  # as the original says
    return DeleteAnswer.model_validate({"job_id": job.id, "status": status, "message": message})


@endpoint("GET", "/videos", "listVideos", "The videos a job may name by path",
          ok(VideoList, "Videos under VIDEOS_BASE_PATH."))  # fmt: skip
async def videos(request: Request) -> VideoList:
    """GET /videos: the video files a path job may name (relative to VIDEOS_BASE_PATH)."""
    root = services(request).settings.videos_base_path
    found, truncated = await asyncio.to_thread(list_videos, root)
    listed = [VideoFile(path=v.path, size_bytes=v.size_bytes, modified_at=moment(v.modified_at))
              for v in found]  # fmt: skip
    return VideoList(videos=listed, count=len(listed), truncated=truncated)


@endpoint(
    "GET",
    "/job/{job_id}/frames.zip",
    "downloadFramesZip",
    "All of a job's frames in one zip",
    Answer(200, "The frames, named as /frames lists them, and frames.json: their list as "
           "/frames shows it (metrics included).", media=("application/zip",),
           headers=("Content-Disposition",)),
    JOB_NOT_FOUND,
    params=(JOB_ID,),
)  # fmt: skip
async def frames_zip(request: Request) -> Response:
    """GET /job/{job_id}/frames.zip: every frame of the job in one zip, in time order."""
    svc = services(request)
    job_id = job_id_param(request)
    job = await stored_job(svc, job_id)
    frames = await svc.store.list_frames(job_id, 0, ALL_FRAMES)
    board = Storyboard.from_plan(job.plan)
    extra = None if board is None else zip_entries(board, frames, svc.frames.storages)
    disposition = f'attachment; filename="vfe-{job_id}-frames.zip"'
    # its first frame read before the answer starts: a store that is away is a 503 then
    zipped = await begun(svc.frames.zip_stream(frames, frames_manifest, extra))
    return StreamingResponse(
        zipped, media_type="application/zip", headers={"Content-Disposition": disposition}
    )


ENDPOINTS = (submit_job, list_jobs, job_status, list_frames, frame_image, recent_frames,
             videos, delete_job, frames_zip)  # fmt: skip
