"""``GET /metrics``: the service's counters in Prometheus' text format (version 0.0.4).

Each app has its own ``Metrics`` with its own ``CollectorRegistry`` (never the process-wide
one), so several apps in one process, as in the tests, never share counts. Counters are
bumped where things happen: ``JobManager`` reports jobs submitted and finished and frames
written; ``MetricsMiddleware`` counts and times every HTTP request. What is a state, not an
event (queue depth, running jobs, the cache's hits and misses) is read when Prometheus
scrapes, by a collector, so no other code has to keep it up to date.

HTTP requests are labelled by the route's *template* (``/job-status/{job_id}``), never the
raw path, and by a known method or ``OTHER``, so the number of series stays bounded; a
path no route matches is ``<unmatched>``. The middleware sits outside the API-key check,
so ``401`` answers are counted too.

Two deliberate oddities: request latency is the time until the response *starts* (its
status and headers), because an event stream's full length is how long the client
watched, not how fast the server answered; and a request that ended with no answer at
all (the client left) is counted with status ``499``, as the access log does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .cache import CacheStats
from .endpoints import Answer, endpoint
from .models import JobStatus
from .queue import WorkerInfo

# Recent prometheus_client releases (0.26) point CONTENT_TYPE_LATEST at the newer 1.0.0
# format, older ones (0.22) at 0.0.4; generate_latest writes 0.0.4 by default, which every
# Prometheus reads, so it is named here once.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
FINISHED = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
WEBHOOK_OUTCOMES = ("delivered", "failed", "gone")
# A job takes from under a second (a few frames) to JOB_TIMEOUT_SECONDS (an hour by default).
JOB_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))


class JobsState(Protocol):
    """What the collector reads from the job manager at scrape time."""

    @property
    def queue_depth(self) -> int: ...

    @property
    def running(self) -> Sequence[str]: ...

    @property
    def live_workers(self) -> Sequence[WorkerInfo]: ...

    @property
    def backends(self) -> tuple[str, str]: ...


class CacheState(Protocol):
    """What the collector reads from the cache at scrape time."""

    @property
    def stats(self) -> CacheStats: ...


class _StateCollector(Collector):
    """Queue depth, running jobs and cache hits and misses, read on each scrape."""

    def __init__(self) -> None:
        self.jobs: JobsState | None = None
        self.cache: CacheState | None = None

    def collect(self) -> Iterator[Metric]:
        if self.jobs is not None:
            yield GaugeMetricFamily(
                "vfe_queue_depth", "Jobs waiting in the queue.", value=self.jobs.queue_depth
            )
            yield GaugeMetricFamily(
                "vfe_jobs_running",
                "Jobs being extracted now by this process.",
                value=len(self.jobs.running),
            )
            workers = self.jobs.live_workers
            yield GaugeMetricFamily(
                "vfe_workers_live", "Workers with a recent heartbeat.", value=len(workers)
            )
            if workers:
                yield GaugeMetricFamily(
                    "vfe_workers_last_heartbeat_timestamp_seconds",
                    "When a worker last sent a heartbeat (Unix time).",
                    value=max(w.heartbeat for w in workers),
                )
            info = GaugeMetricFamily(
                "vfe_backend_info", "The back-ends in use.", labels=["database", "queue"]
            )
            info.add_metric(list(self.jobs.backends), 1)
            yield info
        if self.cache is not None:
            stats = self.cache.stats
            for name, table, what in (
                ("vfe_cache_hits", stats.hits, "Cache reads that found a value"),
                ("vfe_cache_misses", stats.misses, "Cache reads that found nothing"),
            ):
                family = CounterMetricFamily(name, f"{what}, by back-end.", labels=["backend"])
                for backend, count in sorted(table.items()):
                    family.add_metric([backend], count)
                yield family


class Metrics:
    """One app's metrics: its registry, the counters code bumps, and the state collector.

    ``JobManager`` calls ``job_submitted``, ``job_finished`` and ``frames_added``;
    ``MetricsMiddleware`` calls ``http_request``; ``watch`` tells the collector where the
    queue and the cache are once the lifespan has opened them.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.submitted = Counter(
            "vfe_jobs_submitted", "Jobs accepted by POST /video-job.", registry=registry
        )
        self.finished = Counter(
            "vfe_jobs_finished",
            "Jobs that ended, by final status (completed, failed, cancelled).",
            ["status"],
            registry=registry,
        )
        self.frames = Counter("vfe_frames_extracted", "Frames written by jobs.", registry=registry)
        self.extraction = Histogram(
            "vfe_extraction_seconds",
            "How long each finished job ran, from its start to its final status.",
            ["status"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "vfe_http_requests",
            "HTTP requests, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "vfe_http_request_duration_seconds",
            "Time until the response started, by method and route template.",
            ["method", "route"],
            registry=registry,
        )
        self.webhooks = Counter(
            "vfe_webhooks",
            "Webhooks that reached a final state, by outcome: delivered, failed (every attempt "
            "failed) or gone (the receiver answered 410).",
            ["outcome"],
            registry=registry,
        )
        self.webhook_attempts = Counter(
            "vfe_webhook_attempts",
            "Webhook attempts made by this process, by result: ok (a 2xx answer) or error.",
            ["result"],
            registry=registry,
        )
        for status in FINISHED:  # every status is listed from the start, at 0
            self.finished.labels(status=status.value)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhooks.labels(outcome=outcome)
        for result in ("ok", "error"):
            self.webhook_attempts.labels(result=result)
        self._state = _StateCollector()
        registry.register(self._state)

    def watch(self, jobs: JobsState, cache: CacheState) -> None:
        """Read the queue and the cache from these on each scrape (the lifespan's)."""
        self._state.jobs = jobs
        self._state.cache = cache

    def job_submitted(self) -> None:
        self.submitted.inc()

    def job_finished(self, status: str, seconds: float | None) -> None:
        """A job reached a final status; ``seconds`` is how long it ran (None: never ran)."""
        self.finished.labels(status=str(status)).inc()
        if seconds is not None:
            self.extraction.labels(status=str(status)).observe(max(0.0, seconds))

    def webhook_attempt(self, ok: bool) -> None:
        self.webhook_attempts.labels(result="ok" if ok else "error").inc()

    def webhook_finished(self, outcome: str) -> None:
        """A webhook was delivered, or given up (``failed``, ``gone``)."""
        self.webhooks.labels(outcome=outcome).inc()

    def frames_added(self, count: int) -> None:
        self.frames.inc(count)

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "OTHER"
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.latency.labels(method=method, route=route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def endpoint(self, request: Request) -> Response:
        """GET /metrics."""
        return Response(self.render(), media_type=CONTENT_TYPE)


@endpoint(
    "GET",
    "/metrics",
    "getMetrics",
    "Counters for Prometheus",
    Answer(
        200,
        "Prometheus text format 0.0.4: jobs submitted and finished, frames extracted, "
        "extraction time, queue depth, running jobs, cache hits and misses by back-end, "
        "webhooks by outcome and their attempts, and HTTP requests by route template and "
        "status, with their latency.",
        media=("text/plain",),
    ),
)
async def metrics_text(request: Request) -> Response:
    """GET /metrics: the app's own registry (``create_app`` keeps it in ``app.state``)."""
    metrics: Metrics = request.app.state.metrics
    return await metrics.endpoint(request)


def route_template(scope: Scope) -> str:
    """The template of the route that took (or would take) this request: the router's
    choice when it ran, else the first route matching fully, then partly (a 405), as the
    router would choose; ``<unmatched>`` when none does."""
    route = scope.get("route")
    if route is None:
        routes: list[BaseRoute] = getattr(scope.get("app"), "routes", [])
        partial: BaseRoute | None = None
        for candidate in routes:
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                route = candidate
                break
            if match is Match.PARTIAL and partial is None:
                partial = candidate
        else:
            route = partial
    if isinstance(route, Mount):
        return f"{route.path}/{{path}}"
    if isinstance(route, Route):
        return route.path
    return UNMATCHED


class MetricsMiddleware:
    """Counts and times each HTTP request (pure ASGI: streamed responses pass through)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = False

        def record(status: int) -> None:
            seconds = time.perf_counter() - started
            self.metrics.http_request(scope["method"], route_template(scope), status, seconds)

        async def send_and_count(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                record(message["status"])
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, send_and_count)
        except Exception:
            failed = True
            raise
        finally:
            if not answered:  # an error no one answered, or the client left first
                record(500 if failed else 499)
