"""Job spec, job, frame, status enum, and the public views clients see.

``JobSpec`` is the validated request (pydantic, so the same model later feeds OpenAPI).
``Job`` and ``Frame`` are the stored records; ``job_view``/``frame_view`` whitelist what
leaves the server: never a server path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MIN_INTERVAL = 0.001  # a millisecond: finer than any real frame spacing


class JobStatus(StrEnum):
    """Job lifecycle: pending -> processing -> completed | failed | cancelled."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class SourceType(StrEnum):
    PATH = "path"
    UPLOAD = "upload"


class JobSpec(BaseModel):
    """What a client asks for: a video and a sampling rule."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    video_source: str = Field(
        min_length=1,
        max_length=4096,
        description="Path of a video inside VIDEOS_BASE_PATH (relative to it, or absolute).",
    )
    interval: float = Field(
        default=5.0,
        ge=MIN_INTERVAL,
        le=86400,
        allow_inf_nan=False,
        description="Seconds between sampled frames (0.001 to 86400).",
    )

    @field_validator("interval", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON true would otherwise pass as 1.0
            raise ValueError("interval must be a number of seconds, not true/false")
        return value


@dataclass
class Job:
    """A stored job. ``source_path`` is a server path and never leaves the server."""

    id: str
    status: JobStatus
    video_source: str
    source_type: SourceType
    source_path: str
    interval: float
    created_at: float
    updated_at: float
    total_frames: int = 0
    processed_frames: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    error_message: str | None = None
    duration: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    attempts: int = 0


@dataclass(frozen=True)
class Frame:
    """One extracted frame: the file is complete before this record exists."""

    job_id: str
    index: int
    timestamp: float
    target_time: float
    filename: str
    size_bytes: int
    checksum: str
    width: int | None = None
    height: int | None = None
    created_at: float = field(default=0.0)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def percent(done: int, total: int, status: JobStatus) -> float:
    if status is JobStatus.COMPLETED:
        return 100.0
    if total <= 0:
        return 0.0
    return round(min(100.0, 100.0 * done / total), 1)


def job_view(job: Job, now: float | None = None) -> dict[str, Any]:
    """The public JSON shape of a job (``GET /job-status/{id}``)."""
    elapsed: float | None = None
    if job.started_at is not None:
        end = job.finished_at if job.finished_at is not None else now
        if end is not None:
            elapsed = round(max(0.0, end - job.started_at), 3)
    return {
        "job_id": job.id,
        "status": job.status.value,
        "video_source": job.video_source,
        "source_type": job.source_type.value,
        "interval": job.interval,
        "total_frames": job.total_frames,
        "processed_frames": job.processed_frames,
        "percent": percent(job.processed_frames, job.total_frames, job.status),
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "elapsed_seconds": elapsed,
        "error_message": job.error_message,
        "duration": job.duration,
        "fps": job.fps,
        "width": job.width,
        "height": job.height,
        "codec": job.codec,
        "attempts": job.attempts,
    }


def frame_view(frame: Frame) -> dict[str, Any]:
    """The public JSON shape of a frame, with the URL that serves its image."""
    return {
        "job_id": frame.job_id,
        "index": frame.index,
        "timestamp": frame.timestamp,
        "target_time": frame.target_time,
        "filename": frame.filename,
        "url": f"/frames/{frame.job_id}/{frame.filename}",
        "width": frame.width,
        "height": frame.height,
        "size_bytes": frame.size_bytes,
        "checksum": frame.checksum,
        "created_at": iso(frame.created_at),
    }


def finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
