"""Job and frame records for the store tests: plausible values, overridable by keyword."""

from __future__ import annotations

import uuid

from vfe.models import Frame, Job, JobStatus, SourceType


def make_job(
    created_at: float = 1000.0, status: JobStatus = JobStatus.PENDING, **kw: object
) -> Job:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "status": status,
        "video_source": "clip.mp4",
        "source_type": SourceType.PATH,
        "source_path": "/srv/videos/clip.mp4",
        "interval": 1.5,
        "created_at": created_at,
        "updated_at": created_at,
    }
    values.update(kw)
    return Job(**values)  # type: ignore[arg-type]


def make_frame(
    job_id: str,
    index: int,
    timestamp: float | None = None,
    created_at: float = 2000.0,
    **kw: object,
) -> Frame:
    ts = float(index) if timestamp is None else timestamp
    values: dict[str, object] = {
        "job_id": job_id,
        "index": index,
        "timestamp": ts,
        "target_time": ts,
        "filename": f"{index:06d}_{ts:.3f}.jpg",
        "size_bytes": 100 + index,
        "checksum": f"sum{index}",
        "width": 320,
        "height": 240,
        "created_at": created_at,
    }
    values.update(kw)
    return Frame(**values)  # type: ignore[arg-type]
