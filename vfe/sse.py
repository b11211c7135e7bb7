"""Server-Sent Events: a job's live progress, and every job's changes, fed by the event bus.

A stream subscribes before it reads the job, so nothing between the snapshot and the
first live event is lost. It sends ``snapshot`` first, then ``status``, ``progress`` and
``frame`` events as they happen, and ends after the final ``done``, ``failed`` or
``cancelled`` event. sse-starlette sends heartbeat comments on idle streams, notices
clients that leave, and tells streams when uvicorn shuts down: a stream then ends the way
a finished job's does (a complete response), instead of being cancelled mid-response.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from .api import JOB_ID, JOB_NOT_FOUND, job_id_param
from .endpoints import Answer, endpoint
from .errors import NotFound
from .events import TERMINAL_EVENTS
from .models import JobStatus
from .services import services
from .views import Deleted, FrameView, JobsSnapshot, JobView

SHUTDOWN_GRACE = 2.0  # seconds a stream gets to end itself before it is cancelled
_FINAL_EVENT = {
    JobStatus.COMPLETED: "done",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


def _response(
    events: AsyncIterator[ServerSentEvent], heartbeat: float, shutdown: anyio.Event
) -> EventSourceResponse:
    """The SSE response: heartbeats when idle, ``shutdown`` set when uvicorn stops."""
    return EventSourceResponse(
        events,
        ping=heartbeat,
        send_timeout=30,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _sse(event: str, data: dict[str, Any] | BaseModel) -> ServerSentEvent:
    text = data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data)
    return ServerSentEvent(data=text, event=event)


HEARTBEATS = "Server-Sent Events (idle streams get comment heartbeats): "
FINAL = tuple(TERMINAL_EVENTS)


@endpoint(
    "GET",
    "/job-status/{job_id}/events",
    "streamJobEvents",
    "A job's live progress",
    Answer(
        200,
        HEARTBEATS + "`snapshot` (the job) first, then `status` and `progress` (the job), "
        "`frame` (a frame) and finally `done`, `failed` or `cancelled` (the job), after which "
        "the stream ends; a finished job gives `snapshot` and its final event at once.",
        events={JobView: ("snapshot", "status", "progress", *FINAL), FrameView: ("frame",)},
    ),
    JOB_NOT_FOUND,
    params=(JOB_ID,),
)
async def job_events(request: Request) -> Response:
    """GET /job-status/{job_id}/events: the job's events until it finishes."""
    svc = services(request)
    job_id = job_id_param(request)
    subscription = svc.bus.subscribe(job_id)
    try:
        job = await svc.store.get_job(job_id)
    except BaseException:
        subscription.close()
        raise
    if job is None:
        subscription.close()
        raise NotFound("Job not found")

    shutdown = anyio.Event()

    async def stream() -> AsyncIterator[ServerSentEvent]:
        # On shutdown, close the subscription: the loop below drains it and returns.
        watcher = asyncio.ensure_future(shutdown.wait())
        watcher.add_done_callback(lambda _: subscription.close())
        try:
            view = JobView.of(job, time.time())
            yield _sse("snapshot", view)
            if job.status.finished:
                yield _sse(_FINAL_EVENT[job.status], view)
                return
            async for event in subscription:
                yield _sse(event.type, event.data)
                if event.type in TERMINAL_EVENTS:
                    return
        finally:
            watcher.cancel()
            subscription.close()

    return _response(stream(), svc.settings.sse_heartbeat_seconds, shutdown)


GLOBAL_EVENTS = frozenset({"created", "status", "progress", *FINAL, "deleted"})
SNAPSHOT_JOBS = 50


@endpoint(
    "GET",
    "/events",
    "streamEvents",
    "Every job's changes",
    Answer(
        200,
        HEARTBEATS + f'`snapshot` (`{{"jobs": [...]}}`, the newest {SNAPSHOT_JOBS}) first, then '
        "`created`, `status`, `progress`, `done`, `failed`, `cancelled` (the job) and `deleted` "
        '(`{"job_id"}`), until the client leaves or the server stops.',
        events={JobsSnapshot: ("snapshot",), Deleted: ("deleted",),
                JobView: ("created", "status", "progress", *FINAL)},
    ),
)  # fmt: skip
async def all_events(request: Request) -> Response:
    """GET /events: every job's changes (not its frames), for the dashboard's job list.

    Sends ``snapshot`` with the newest jobs first, then ``created``, ``status``,
    ``progress``, ``done``, ``failed``, ``cancelled`` (job views) and ``deleted``
    (``{"job_id"}``) as they happen, until the client leaves or the server stops.
    """
    svc = services(request)
    subscription = svc.bus.subscribe(None)
    try:
        jobs = await svc.store.list_jobs(limit=SNAPSHOT_JOBS)
    except BaseException:
        subscription.close()
        raise
    shutdown = anyio.Event()

    async def stream() -> AsyncIterator[ServerSentEvent]:
        watcher = asyncio.ensure_future(shutdown.wait())
        watcher.add_done_callback(lambda _: subscription.close())
        try:
            now = time.time()
            yield _sse("snapshot", JobsSnapshot(jobs=[JobView.of(j, now) for j in jobs]))
            async for event in subscription:
                if event.type in GLOBAL_EVENTS:
                    yield _sse(event.type, event.data)
        finally:
            watcher.cancel()
            subscription.close()

    return _response(stream(), svc.settings.sse_heartbeat_seconds, shutdown)


ENDPOINTS = (job_events, all_events)
