"""Health endpoints: ``/health`` for people and monitors, ``/health/live`` and
``/health/ready`` for orchestrators' probes. All three are public (see ``auth.py``)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from . import ffmpeg
from .endpoints import Answer, answer, endpoint, ok
from .services import services
from .views import (
    CacheHealth,
    DatabaseHealth,
    DiskHealth,
    FfmpegHealth,
    Health,
    JobsHealth,
    Live,
    QueueHealth,
    Ready,
    StorageHealth,
    WorkersHealth,
    moment,
)

UNAVAILABLE = ("It cannot (database or storage down, FFmpeg missing, less than "
               "MIN_FREE_DISK_MB free, shutting down).")  # fmt: skip


@endpoint(
    "GET",
    "/health",
    "getHealth",
    "The state of each component",
    ok(Health, "It can take and run jobs."),
    Answer(503, UNAVAILABLE, Health),
)
async def health(request: Request) -> Response:
    """GET /health: each component's state; 200 when the service can serve, else 503."""
    svc = services(request)
    database_ok = await svc.store.ping()
    seen = await svc.jobs.look() if database_ok else svc.jobs.seen  # no second wait
    backend = await svc.cache.check()
    ffmpeg_ok = ffmpeg.installed()
    free = await svc.frames.free_bytes()
    disk_ok = await svc.jobs.disk_ok()  # as /health/ready, submit and the runs judge it
    storage_ok = await svc.frames.storages.ping()
    can_serve = (database_ok and storage_ok and ffmpeg_ok and disk_ok
                 and svc.jobs.submissions.accepting)  # fmt: skip
    stats = svc.cache.stats
    view = Health(
        status="healthy" if can_serve else "unhealthy",
        timestamp=moment(time.time()),
        redis_available=backend == "redis",
        active_jobs=len(svc.jobs.running),
        database=DatabaseHealth(ok=database_ok, backend=svc.store.backend),
        storage=StorageHealth(ok=storage_ok, backend=svc.frames.storages.backend),
        cache=CacheHealth(
            backend=backend,
            redis="connected" if backend == "redis" else "unreachable",
            hits=stats.hits,
            misses=stats.misses,
        ),
        ffmpeg=FfmpegHealth(ok=ffmpeg_ok, version=svc.ffmpeg_version),
        queue=QueueHealth(
            depth=seen.depth, max=svc.settings.max_queue_size, backend=svc.jobs.queue.backend
        ),
        jobs=JobsHealth(
            running=len(svc.jobs.running), max_concurrent=svc.settings.max_concurrent_jobs
        ),
        workers=WorkersHealth(
            count=len(seen.workers),
            running=sum(w.running for w in seen.workers),
            last_heartbeat=moment(seen.last_heartbeat) if seen.last_heartbeat else None,
        ),
        disk=DiskHealth(
            ok=disk_ok,
            free_mb=round(free / 1024 / 1024, 1),
            min_free_mb=svc.settings.min_free_disk_mb,
        ),
    )
    return answer(view, 200 if can_serve else 503)


@endpoint("GET", "/health/live", "getLiveness", "Liveness: the process answers",
          ok(Live, "It answers."))  # fmt: skip
async def health_live(request: Request) -> Live:
    """GET /health/live: the process and its event loop answer. Nothing else is checked,
    so a slow database or a missing Redis never gets a running server restarted."""
    return Live(status="ok")


@endpoint(
    "GET",
    "/health/ready",
    "getReadiness",
    "Readiness: this instance takes jobs",
    ok(Ready, "It takes jobs."),
    Answer(503, UNAVAILABLE, Ready),
)
async def health_ready(request: Request) -> Response:
    """GET /health/ready: 200 when this instance can take jobs (database and storage
    answer, FFmpeg is installed, it is not shutting down), else 503, so it gets no
    traffic meanwhile."""
    svc = services(request)
    database_ok = await svc.store.ping()
    seen = await svc.jobs.look() if database_ok else svc.jobs.seen  # no second wait
    view = Ready(
        status="unavailable",
        database=database_ok,
        ffmpeg=ffmpeg.installed(),
        accepting_jobs=svc.jobs.submissions.accepting,
        disk=await svc.jobs.disk_ok(),
        storage=await svc.frames.storages.ping(),
        database_backend=svc.store.backend,
        storage_backend=svc.frames.storages.backend,
        queue_depth=seen.depth,
        workers=len(seen.workers),
        last_heartbeat=moment(seen.last_heartbeat) if seen.last_heartbeat else None,
    )
    ready = view.database and view.storage and view.ffmpeg and view.accepting_jobs and view.disk
    if ready:
        view = view.model_copy(update={"status": "ready"})
    return answer(view, 200 if ready else 503)


ENDPOINTS = (health, health_live, health_ready)
