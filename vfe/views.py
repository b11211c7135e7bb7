"""The public views: every JSON answer (and event) vfe sends is one of these models.

A handler returns a view; ``endpoints.py`` renders it as the response, and ``openapi.py``
takes the same classes for the document, so an answer cannot drift from its description.
Adding a field to an answer is one edit here (plus the store, if the field is stored).

The ``of`` constructors whitelist what leaves the server: a view never holds a server
path, an argv or a traceback. Times are UTC, written by ``Timestamp`` (one place).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from .models import Delivery, DeliveryStatus, Frame, Job, JobStatus, Mode, SourceType, percent


def _iso(moment: datetime) -> str:
    # "+00:00", not "Z": Python before 3.11 reads only this form with fromisoformat.
    return moment.isoformat()


Timestamp = Annotated[datetime, PlainSerializer(_iso, return_type=str, when_used="json")]


def moment(ts: float) -> datetime:
    """A Unix time as the aware UTC datetime a ``Timestamp`` field holds."""
    return datetime.fromtimestamp(ts, UTC)


def _moment_or_none(ts: float | None) -> datetime | None:
    return None if ts is None else moment(ts)


class View(BaseModel):
    """Base of every view: no field may be added or left out by accident."""

    model_config = ConfigDict(extra="forbid")


class Error(View):
    """Every error but a validation error."""

    detail: str


class FieldError(View):
    """One field that failed validation: where (``["body", "interval"]``) and why."""

    loc: list[str | int]
    msg: str
    type: str


class Invalid(View):
    """422: which fields are wrong and why."""

    detail: list[FieldError]


class WebhookView(View):
    """The delivery of a job's webhook (``webhook_url``, or WEBHOOK_URL)."""

    status: DeliveryStatus = Field(
        description="pending (being tried), delivered (a 2xx answer), failed (every "
        "attempt failed) or gone (the receiver answered 410: not tried again)."
    )
    attempts: int = Field(description="Attempts made so far (the one under way included).")
    last_error: str | None = Field(description="Why the last failed attempt failed.")
    delivered_at: Timestamp | None
    next_attempt_at: Timestamp | None = Field(description="When a pending one is tried next.")

    @classmethod
    def of(cls, delivery: Delivery) -> WebhookView:
        pending = delivery.status is DeliveryStatus.PENDING
        return cls(
            status=delivery.status,
            attempts=delivery.attempts,
            last_error=delivery.last_error,
            delivered_at=_moment_or_none(delivery.delivered_at),
            next_attempt_at=moment(delivery.due_at) if pending else None,
        )


class JobView(View):
    """A job as ``GET /job-status/{job_id}`` shows it (and the job events carry it)."""

    job_id: str = Field(description="The job's id (a UUID).")
    status: JobStatus
    video_source: str = Field(description="The path or URL asked for, or the upload's name.")
    source_type: SourceType
    mode: Mode
    interval: float | None = Field(description="Seconds between frames; null in other modes.")
    options: dict[str, Any] = Field(description="The job's sampling and output fields.")
    plan: dict[str, Any] | None = Field(description="How the job runs, once it is planned.")
    total_frames: int
    processed_frames: int
    percent: float = Field(ge=0, le=100)
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    elapsed_seconds: float | None
    error_message: str | None
    duration: float | None = Field(description="The video's duration, s (once probed).")
    fps: float | None
    width: int | None
    height: int | None
    codec: str | None
    attempts: int
    webhook: WebhookView | None = Field(
        default=None,
        description="Its webhook's delivery, once the job has ended (null: no webhook, or "
        "not ended yet). GET /job-status/{job_id} and GET /jobs show it; events do not.",
    )

    @classmethod
    def of(cls, job: Job, now: float | None = None, webhook: Delivery | None = None) -> JobView:
        """The view of ``job``; ``now`` dates a running job's ``elapsed_seconds``;
        ``webhook``: the delivery of its webhook."""
        elapsed: float | None = None
        if job.started_at is not None:
            end = job.finished_at if job.finished_at is not None else now
            if end is not None:
                elapsed = round(max(0.0, end - job.started_at), 3)
        mode = Mode(job.options.get("mode", Mode.INTERVAL))
        return cls(
            job_id=job.id,
            status=job.status,
            video_source=job.video_source,
            source_type=job.source_type,
            mode=mode,
            interval=job.interval if mode is Mode.INTERVAL else None,
            options={k: v for k, v in job.options.items() if k != "mode"},
            plan=job.plan,
            total_frames=job.total_frames,
            processed_frames=job.processed_frames,
            percent=percent(job.processed_frames, job.total_frames, job.status, job.progress),
            created_at=moment(job.created_at),
            updated_at=moment(job.updated_at),
            started_at=_moment_or_none(job.started_at),
            finished_at=_moment_or_none(job.finished_at),
            elapsed_seconds=elapsed,
            error_message=job.error_message,
            duration=job.duration,
            fps=job.fps,
            width=job.width,
            height=job.height,
            codec=job.codec,
            attempts=job.attempts,
            webhook=None if webhook is None else WebhookView.of(webhook),
        )


class FrameView(View):
    """One frame, with the URL of its image."""

    job_id: str
    index: int
    timestamp: float = Field(description="The frame's presentation time, s.")
    target_time: float = Field(description="The time asked for, s.")
    filename: str
    url: str
    width: int | None
    height: int | None
    size_bytes: int
    file_size: int = Field(description="The same as size_bytes (the original service's name).")
    checksum: str = Field(description="SHA-256 of the file, hex.")
    created_at: Timestamp
    brightness: float | None = Field(description="Mean level, 0 black to 1 white (null: a "
                                     "frame made before vfe measured frames).")  # fmt: skip
    contrast: float | None = Field(description="Standard deviation of the levels, 0-1.")
    sharpness: float | None = Field(
        description="Variance of the Laplacian on a 256x256 grey downscale (levels squared): "
        "hundreds or more when sharp, tens when blurred."
    )
    black: float | None = Field(description="Share of near-black pixels, 0-1.")
    phash: str | None = Field(description="64-bit perceptual hash, 16 hex digits.")
    substituted: bool = Field(
        description="True when the frame at target_time was rejected and this one, the "
        "first that passed within `search` s after it, was taken instead."
    )
    stretch: int | None = Field(description="best mode: the stretch this frame is the best "
                                "of (0 is the first).")  # fmt: skip
    score: float | None = Field(description="best mode: the frame's score, 0-1.")

    @classmethod
    def of(cls, frame: Frame) -> FrameView:
        m = frame.metrics
        return cls(
            job_id=frame.job_id,
            index=frame.index,
            timestamp=frame.timestamp,
            target_time=frame.target_time,
            filename=frame.filename,
            url=f"/frames/{frame.job_id}/{frame.filename}",
            width=frame.width,
            height=frame.height,
            size_bytes=frame.size_bytes,
            file_size=frame.size_bytes,
            checksum=frame.checksum,
            created_at=moment(frame.created_at),
            brightness=None if m is None else m.brightness,
            contrast=None if m is None else m.contrast,
            sharpness=None if m is None else m.sharpness,
            black=None if m is None else m.black,
            phash=None if m is None else m.phash,
            substituted=frame.substituted,
            stretch=frame.stretch,
            score=frame.score,
        )


def frames_manifest(frames: list[Frame]) -> bytes:
    """``frames.json`` of a zip: the frames as ``/frames`` lists them, metrics included."""
    views = [FrameView.of(frame).model_dump(mode="json") for frame in frames]
    return json.dumps(views, indent=1).encode() + b"\n"


class JobList(View):
    jobs: list[JobView]
    count: int
    next: str | None = Field(
        description="More jobs follow: pass this as `before` for the next page. Null on "
        "the last page."
    )


class FrameList(View):
    job_id: str
    frames: list[FrameView]
    total_count: int
    offset: int
    limit: int | None = Field(description="The limit asked for; null: every frame from offset.")
    message: str | None = Field(description="`No frames extracted yet` while there are none.")


class RecentFrames(View):
    frames: list[FrameView] = Field(description="Newest first.")
    total_count: int
    since_minutes: int | float = Field(description="As asked: a whole number stays one.")
    job_id: str | None


class VideoFile(View):
    path: str = Field(description="Relative to VIDEOS_BASE_PATH: a job's video_source.")
    size_bytes: int
    modified_at: Timestamp


class VideoList(View):
    videos: list[VideoFile]
    count: int
    truncated: bool = Field(description="True when more videos exist than are listed.")


class SubmitAnswer(View):
    job_id: str
    status: JobStatus
    message: str


class DeleteAnswer(View):
    job_id: str
    status: Literal[JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED] = Field(
        description="What the job was: cancelled when it had not finished."
    )
    message: str


class JobsSnapshot(View):
    """The first event of ``GET /events``: the newest jobs."""

    jobs: list[JobView]


class Deleted(View):
    """The ``deleted`` event of ``GET /events``."""

    job_id: str


class DatabaseHealth(View):
    ok: bool
    backend: str


class StorageHealth(View):
    ok: bool = Field(description="Whether frames and videos can be stored (the folder is "
                     "writable, or the bucket answers).")  # fmt: skip
    backend: str = Field(description="local (a folder) or s3 (a bucket).")


class CacheHealth(View):
    backend: str = Field(description="The back-end in use now: redis or memory.")
    redis: Literal["connected", "unreachable"]
    hits: dict[str, int]
    misses: dict[str, int]


class FfmpegHealth(View):
    ok: bool
    version: str | None


class QueueHealth(View):
    depth: int
    max: int
    backend: str = Field(
        description="memory (the embedded queue, in this process) or procrastinate "
        "(PostgreSQL, shared by every process)."
    )


class WorkersHealth(View):
    """The processes that run jobs: this one when embedded, every live ``vfe worker``
    (and ``vfe serve``) on PostgreSQL."""

    count: int = Field(description="Live workers (heartbeat within STALLED_AFTER_SECONDS).")
    running: int = Field(description="Jobs they run now.")
    last_heartbeat: Timestamp | None = Field(description="The latest heartbeat of any.")


class JobsHealth(View):
    running: int
    max_concurrent: int


class DiskHealth(View):
    ok: bool = Field(description="At least min_free_mb free: jobs are taken (else 507).")
    free_mb: float
    min_free_mb: float


class Health(View):
    """Each component's state; the answer is 503 when ``status`` is unhealthy. The first
    four fields are the original service's, which its monitors read."""

    status: Literal["healthy", "unhealthy"]
    timestamp: Timestamp
    redis_available: bool
    active_jobs: int = Field(description="Jobs running now.")
    database: DatabaseHealth
    storage: StorageHealth
    cache: CacheHealth
    ffmpeg: FfmpegHealth
    queue: QueueHealth
    jobs: JobsHealth
    workers: WorkersHealth
    disk: DiskHealth


class Live(View):
    """The process and its event loop answer; nothing else is checked."""

    status: Literal["ok"]


class Ready(View):
    """Whether this instance can take jobs now (503 when it cannot)."""

    status: Literal["ready", "unavailable"]
    database: bool
    ffmpeg: bool
    accepting_jobs: bool
    disk: bool
    storage: bool = Field(description="Frames and videos can be stored.")
    database_backend: str = Field(description="sqlite or postgresql.")
    storage_backend: str = Field(description="local or s3.")
    queue_depth: int = Field(description="Jobs waiting to run.")
    workers: int = Field(description="Live workers (see /health).")
    last_heartbeat: Timestamp | None = Field(description="The latest heartbeat of a worker.")
